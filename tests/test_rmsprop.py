"""optim_nb.RMSprop against torch.optim.RMSprop: numbers, signature, errors, state."""
import inspect
import re

import pytest
import torch
from hypothesis import given, strategies as st

from optim_nb.core import assert_matches_torch, assert_same
from optim_nb import RMSprop

DTYPES = st.sampled_from([torch.float32, torch.float64])


@st.composite
def rmsprop_options(draw):
    centered = draw(st.booleans())
    # Centered with α near 0 makes v - m² ≈ 0, and rounding can make it negative: NaN in torch
    # and here alike, which torch.equal cannot compare (see test_nan_where_torch_gives_nan).
    alpha = draw(st.sampled_from([0.5, 0.9, 0.99, 0.999]) | st.floats(0.5, 1.0)) if centered else \
        draw(st.sampled_from([0.0, 0.9, 0.99, 0.999]) | st.floats(0.0, 1.0))
    return dict(
        alpha=alpha,
        eps=draw(st.sampled_from([1e-8, 1e-3]) | st.floats(1e-10, 0.1)),
        weight_decay=draw(st.sampled_from([0.0, 1e-4, 0.1]) | st.floats(0.0, 0.5)),
        momentum=draw(st.sampled_from([0.0, 0.5, 0.9]) | st.floats(0.0, 0.99)),
        centered=centered,
        maximize=draw(st.booleans()),
    )


@given(first=rmsprop_options(), second=rmsprop_options(), dtype=DTYPES,
       lr=st.floats(1e-4, 0.1), lr_as_tensor=st.booleans(), foreach=st.sampled_from([None, False, True]))
def test_bit_identical_to_torch(first, second, dtype, lr, lr_as_tensor, foreach):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(RMSprop, torch.optim.RMSprop, [first, {**second, "lr": 0.005}],
                         dtype=dtype, lr=lr, foreach=foreach)


def test_the_comparison_can_fail():
    def off_by_alpha(params, **kw):
        return RMSprop(params, **{**kw, "alpha": 0.98})
    with pytest.raises(AssertionError):
        assert_matches_torch(off_by_alpha, torch.optim.RMSprop, [{}, {}], lr=0.01)


def test_eps_inside_the_root_is_not_torch():
    """TensorFlow's √(v + ε) instead of torch's √v + ε must be caught."""
    class EpsInside(RMSprop):
        @staticmethod
        def update(param, grad, state, *, lr, alpha, eps, weight_decay, momentum, centered, capturable=False):
            state["step"] += 1
            square_avg = state["square_avg"]
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            param.addcdiv_(grad, square_avg.add(eps).sqrt(), value=-lr)
    with pytest.raises(AssertionError):
        assert_matches_torch(EpsInside, torch.optim.RMSprop, [{}, {}], lr=0.01, eps=1e-3)


def _params(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


def test_signature_and_defaults_are_torchs_then_our_fused():
    assert _params(RMSprop)[:-1] == _params(torch.optim.RMSprop)
    assert _params(RMSprop)[-1] == ("fused", inspect.Parameter.POSITIONAL_OR_KEYWORD, None)
    assert "fused" not in inspect.signature(torch.optim.RMSprop).parameters
    w = [torch.zeros(1, requires_grad=True)]
    assert RMSprop(w).defaults == torch.optim.RMSprop(w).defaults  # no `fused` key unless asked for
    assert RMSprop(w, fused=True).param_groups[0]["fused"] is True


BAD = [
    dict(lr=-1e-3), dict(lr=float("nan")), dict(lr=torch.tensor(-1.0)), dict(lr=torch.tensor([0.1, 0.2])),
    dict(eps=-1e-8), dict(momentum=-0.1), dict(weight_decay=-1e-5), dict(alpha=-0.5),
    dict(alpha=float("nan")), dict(lr=-1, eps=-1, alpha=-1),  # the first failing check wins
    dict(nesterov=True),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_bad_hyperparameters_raise_torchs_error(bad):
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(Exception) as theirs:
        torch.optim.RMSprop(w, **bad)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value))):
        RMSprop(w, **bad)


@pytest.mark.parametrize("options", [dict(alpha=1.5), dict(alpha=0.0, centered=True), dict(eps=0.0)])
def test_nan_where_torch_gives_nan(options):
    """α > 1 is accepted as in torch (v can go negative); centered with α = 0 divides by
    √(g² - g·g) ≈ 0. Wherever torch produces NaN or inf, we produce the same values."""
    from optim_nb.core import train
    def run(cls):
        model, opt = train(lambda m: cls(m.parameters(), lr=0.01, **options), steps=5)
        return [p.detach() for p in model.parameters()]
    for p, q in zip(run(RMSprop), run(torch.optim.RMSprop)):
        assert torch.equal(p.isnan(), q.isnan()) and torch.equal(p.nan_to_num(), q.nan_to_num())


def test_a_bad_param_group_is_not_added():
    opt = RMSprop([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="Invalid alpha value: -1"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "alpha": -1})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("options", [dict(foreach=True, differentiable=True), dict(capturable=True),
                                     dict(capturable=True, foreach=True)])
def test_errors_at_step_are_torchs(options):
    def error(cls):
        x = torch.zeros(2, requires_grad=True)
        x.grad = torch.ones(2)
        with pytest.raises(Exception) as info:
            cls([x], **options).step()
        return info.type, str(info.value)
    assert error(RMSprop) == error(torch.optim.RMSprop)


def test_sparse_gradients_are_refused_as_in_torch():
    def error(cls):
        emb = torch.nn.Embedding(10, 3, sparse=True)
        emb(torch.tensor([1, 2])).sum().backward()
        with pytest.raises(RuntimeError) as info:
            cls(emb.parameters(), lr=0.1).step()
        return str(info.value)
    assert error(RMSprop) == error(torch.optim.RMSprop) == "RMSprop does not support sparse gradients"


@pytest.mark.parametrize("momentum,centered", [(0, False), (0.9, False), (0, True), (0.9, True)])
def test_state_names_and_creation_match_torch(momentum, centered):
    def run(cls):
        torch.manual_seed(0)
        a, frozen = torch.randn(4, requires_grad=True), torch.zeros(2, requires_grad=True)
        opt = cls([a, frozen], momentum=momentum, centered=centered)
        assert opt.state_dict()["state"] == {}            # nothing before the first step
        a.pow(2).sum().backward()
        opt.step()
        return opt
    ours, theirs = run(RMSprop), run(torch.optim.RMSprop)
    assert [list(s) for s in ours.state.values()] == [list(s) for s in theirs.state.values()]
    assert_same(ours.state_dict(), theirs.state_dict())


def test_checkpoints_are_interchangeable():
    def trained(cls):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = cls(model.parameters(), lr=0.01, momentum=0.9, centered=True)
        for _ in range(3):
            opt.zero_grad()
            model(torch.ones(4, 3)).pow(2).sum().backward()
            opt.step()
        return model, opt
    model, ours = trained(RMSprop)
    theirs = torch.optim.RMSprop(model.parameters(), lr=0.01, momentum=0.9, centered=True)
    theirs.load_state_dict(ours.state_dict())
    back = RMSprop(model.parameters())
    back.load_state_dict(theirs.state_dict())
    assert_same(back.state_dict(), ours.state_dict())


@pytest.mark.parametrize("options", [{}, dict(momentum=0.9, centered=True, weight_decay=0.1, maximize=True),
                                     dict(foreach=True, alpha=0.9)])
def test_complex_parameters_match_torch(options):
    def run(cls):
        z = torch.complex(torch.linspace(-1, 1, 6), torch.linspace(2, -2, 6)).requires_grad_(True)
        opt = cls([z], lr=0.01, **options)
        for _ in range(10):
            opt.zero_grad()
            (z.abs() ** 2 + 3 * z.real).sum().backward()
            opt.step()
        return z.detach(), opt.state_dict()
    (z1, s1), (z2, s2) = run(RMSprop), run(torch.optim.RMSprop)
    assert torch.equal(z1, z2)
    assert_same(s1, s2)


@pytest.mark.parametrize("options", [{}, dict(momentum=0.9, weight_decay=0.1)])
def test_differentiable_step_gives_torchs_gradient(options):
    def grad_wrt_start(cls):
        w0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
        w = w0.clone()  # a non-leaf parameter, as differentiable optimisation needs
        opt = cls([w], lr=0.1, differentiable=True, **options)
        for _ in range(3):
            w.grad = 2 * w
            opt.step()
        return torch.autograd.grad(w.sum(), w0)[0]
    ours, theirs = grad_wrt_start(RMSprop), grad_wrt_start(torch.optim.RMSprop)
    assert ours.abs().sum() > 0 and torch.equal(ours, theirs)


def test_grad_is_not_modified():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    w.grad = torch.tensor([0.5, -0.5])
    RMSprop([w], weight_decay=0.1, maximize=True, centered=True, momentum=0.9).step()
    assert torch.equal(w.grad, torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize("momentum,centered", [(0, False), (0.9, True)])
def test_a_checkpoint_from_an_older_torch_loads_as_in_torch(momentum, centered):
    """Old checkpoints lack the keys torch's __setstate__ fills in and hold `step` as a float."""
    added_since = ("momentum", "centered", "foreach", "maximize", "differentiable", "capturable")

    def run(cls):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2, dtype=torch.float64)
        x = torch.randn(8, 3, dtype=torch.float64)
        source = torch.optim.RMSprop(model.parameters(), lr=0.01)
        for _ in range(3):
            source.zero_grad(); model(x).pow(2).sum().backward(); source.step()
        old = source.state_dict()
        for group in old["param_groups"]:
            for key in added_since:
                del group[key]
        for s in old["state"].values():
            s["step"] = float(s["step"])
        opt = cls(model.parameters(), lr=0.01, momentum=momentum, centered=centered)
        opt.load_state_dict(old)
        for _ in range(3):
            opt.zero_grad(); model(x).pow(2).sum().backward(); opt.step()
        return model.weight.detach(), opt.state_dict()
    (w1, s1), (w2, s2) = run(RMSprop), run(torch.optim.RMSprop)
    assert torch.equal(w1, w2)
    assert_same(s1, s2)


# --- foreach=True: the multi-tensor rule, against torch's multi-tensor path and our loop

from hypothesis import settings

from optim_nb.core import small_model
from optim_nb.rmsprop import rmsprop_update_foreach
from optim_nb.core import foreach_vs_loop


@settings(max_examples=25)
@given(first=rmsprop_options(), second=rmsprop_options(), dtype=DTYPES,
       lr=st.floats(1e-4, 0.1), lr_as_tensor=st.booleans())
def test_foreach_bit_identical_to_torchs_foreach(first, second, dtype, lr, lr_as_tensor):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(RMSprop, torch.optim.RMSprop, [first, {**second, "lr": 0.005}],
                         dtype=dtype, lr=lr, foreach=True)


@settings(max_examples=10)
@given(first=rmsprop_options(), second=rmsprop_options(), dtype=DTYPES)
def test_foreach_gives_the_loops_bits_and_state_layout(first, second, dtype):
    assert foreach_vs_loop(RMSprop, [first, second], dtype=dtype, lr=0.01) == 0


def test_foreach_is_the_path_taken_and_the_cpu_default_is_the_loop():
    params = list(small_model().parameters())
    for foreach, expected in [(True, "foreach"), (False, "loop"), (None, "loop")]:
        opt = RMSprop(params, foreach=foreach)
        assert opt.path(opt.param_groups[0], params) == expected
    assert RMSprop.update_foreach is rmsprop_update_foreach


@pytest.mark.parametrize("options", [dict(lr=0.01), dict(lr=torch.tensor(0.01), momentum=0.9, centered=True,
                                                          weight_decay=0.1, maximize=True)])
def test_foreach_groups_by_dtype_and_handles_complex_as_torch(options):
    def run(cls):
        torch.manual_seed(0)
        ps = [torch.randn(3, requires_grad=True), torch.randn(2, 2, dtype=torch.float64, requires_grad=True),
              torch.randn(4, dtype=torch.complex64, requires_grad=True)]
        opt = cls(ps, foreach=True, **options)
        for _ in range(8):
            opt.zero_grad()
            sum((p.abs() ** 2 + p.real).sum().double() for p in ps).backward()
            opt.step()
        return [p.detach() for p in ps], opt.state_dict()
    (p1, s1), (p2, s2) = run(RMSprop), run(torch.optim.RMSprop)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert_same(s1, s2)


def test_foreach_does_not_modify_grad():
    def grads(cls):
        model = small_model()
        opt = cls(model.parameters(), lr=0.01, momentum=0.9, centered=True, foreach=True)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        opt.step()
        return [p.grad for p in model.parameters()]
    assert all(g.eq(1).all() for g in grads(RMSprop))


@pytest.mark.parametrize("lr_as_tensor", [False, True])
def test_foreach_capturable_on_the_cpu_raises_torchs_error(lr_as_tensor):
    def error(cls):
        w = torch.zeros(2, requires_grad=True)
        w.grad = torch.ones(2)
        lr = torch.tensor(0.01) if lr_as_tensor else 0.01
        with pytest.raises(Exception) as info:
            cls([w], lr=lr, foreach=True, capturable=True).step()
        return info.type, str(info.value)
    assert error(RMSprop) == error(torch.optim.RMSprop)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_foreach_on_cuda_matches_torchs_foreach(capturable, momentum):
    def run(cls):
        torch.manual_seed(0)
        ws = [torch.randn(16, device="cuda", requires_grad=True), torch.randn(3, 5, device="cuda", requires_grad=True)]
        opt = cls(ws, lr=torch.tensor(0.01, device="cuda"), capturable=capturable, foreach=True,
                  momentum=momentum, centered=True)
        for _ in range(10):
            opt.zero_grad()
            sum(w.pow(2).sum() for w in ws).backward()
            opt.step()
        return [w.detach() for w in ws], opt.state_dict()
    (w1, s1), (w2, s2) = run(RMSprop), run(torch.optim.RMSprop)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))
    assert_same(s1, s2)
