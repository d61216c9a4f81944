"""optim_nb.Adadelta against torch.optim.Adadelta: numbers, signature, errors."""
import copy
import inspect
import re

import pytest
import torch
from hypothesis import given, strategies as st

from optim_nb import Adadelta
from optim_nb.core import assert_matches_torch, train

DTYPES = st.sampled_from([torch.float32, torch.float64])


@st.composite
def adadelta_options(draw):
    return dict(
        rho=draw(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0]) | st.floats(0.0, 1.0)),
        eps=draw(st.sampled_from([1e-6, 1e-8, 1e-3]) | st.floats(1e-10, 1e-1)),
        weight_decay=draw(st.sampled_from([0.0, 1e-4, 0.1]) | st.floats(0.0, 0.5)),
        maximize=draw(st.booleans()),
    )


@given(first=adadelta_options(), second=adadelta_options(), dtype=DTYPES,
       lr=st.floats(1e-3, 2.0), lr_as_tensor=st.booleans())
def test_bit_identical_to_torch(first, second, dtype, lr, lr_as_tensor):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(Adadelta, torch.optim.Adadelta, [first, {**second, "lr": 0.5}],
                         dtype=dtype, lr=lr)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_foreach_matches_torchs_foreach(dtype):
    assert_matches_torch(Adadelta, torch.optim.Adadelta, [{"maximize": True}, {"rho": 0.5}],
                         dtype=dtype, foreach=True, weight_decay=0.1, lr=torch.tensor([0.7]))


def test_the_comparison_can_fail():
    def off_by_rho(params, **kw):
        return Adadelta(params, **{**kw, "rho": 0.95})
    with pytest.raises(AssertionError):
        assert_matches_torch(off_by_rho, torch.optim.Adadelta, [{}, {}], lr=1.0)


def test_the_comparison_sees_the_state():
    # same parameters, different state: lr = 0 never moves, but rho changes square_avg
    def other_rho(params, **kw):
        return Adadelta(params, **{**kw, "rho": 0.5})
    with pytest.raises(AssertionError, match="square_avg"):
        assert_matches_torch(other_rho, torch.optim.Adadelta, [{}, {}], lr=0.0)


def _params(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


def test_signature_and_defaults_are_torchs_then_our_fused():
    assert _params(Adadelta)[:-1] == _params(torch.optim.Adadelta)
    assert _params(Adadelta)[-1] == ("fused", inspect.Parameter.KEYWORD_ONLY, None)
    assert "fused" not in inspect.signature(torch.optim.Adadelta).parameters
    w = [torch.zeros(1, requires_grad=True)]
    assert Adadelta(w).defaults == torch.optim.Adadelta(w).defaults  # no `fused` key unless asked for
    assert Adadelta(w, fused=True).param_groups[0]["fused"] is True


BAD = [
    dict(lr=-1e-3), dict(lr=torch.tensor(-1.0)), dict(lr=torch.tensor([0.1, 0.2])),
    dict(lr=float("nan")), dict(rho=-0.1), dict(rho=1.0 + 1e-9), dict(rho=float("nan")),
    dict(eps=-1e-8), dict(eps=float("nan")), dict(weight_decay=-1e-5),
    dict(weight_decay=float("nan")), dict(betas=(0.9, 0.99)),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_bad_hyperparameters_raise_torchs_error(bad):
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(Exception) as theirs:
        torch.optim.Adadelta(w, **bad)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value))):
        Adadelta(w, **bad)


def _step_once(cls, **options):
    x = torch.zeros(2, requires_grad=True)
    x.grad = torch.ones(2)
    cls([x], **options).step()


@pytest.mark.parametrize("bad", [dict(capturable=True), dict(foreach=True, differentiable=True)],
                         ids=["capturable-on-cpu", "foreach-differentiable"])
def test_step_time_refusals_are_torchs(bad):
    with pytest.raises(Exception) as theirs:
        _step_once(torch.optim.Adadelta, **bad)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value))):
        _step_once(Adadelta, **bad)


def test_a_bad_param_group_is_not_added():
    opt = Adadelta([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="Invalid rho value: 2"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "rho": 2})
    assert len(opt.param_groups) == 1


def test_sparse_gradients_are_refused_before_anything_moves():
    emb = torch.nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    for cls in (torch.optim.Adadelta, Adadelta):
        w = torch.ones(2, requires_grad=True)
        w.grad = torch.ones(2)
        with pytest.raises(RuntimeError, match="^Adadelta does not support sparse gradients$"):
            cls([{"params": [w]}, {"params": emb.parameters()}]).step()
    assert torch.equal(w.detach(), torch.ones(2))  # ours did not move the first group (torch does)


def test_state_names_and_types_are_torchs():
    _, ours = train(lambda m: Adadelta(m.parameters()), steps=3)
    _, theirs = train(lambda m: torch.optim.Adadelta(m.parameters()), steps=3)
    for s1, s2 in zip(ours.state_dict()["state"].values(), theirs.state_dict()["state"].values()):
        assert list(s1) == list(s2) == ["step", "square_avg", "acc_delta"]
        assert s1["step"].dtype == s2["step"].dtype and s1["step"].dim() == 0 and s1["step"] == 3


def test_float64_default_dtype_step_counter():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        _, ours = train(lambda m: Adadelta(m.parameters()), dtype=torch.float64, steps=2)
        _, theirs = train(lambda m: torch.optim.Adadelta(m.parameters()), dtype=torch.float64, steps=2)
    finally:
        torch.set_default_dtype(old)
    assert ours.state_dict()["state"][0]["step"].dtype == torch.float64
    assert ours.state_dict()["state"][0]["step"].dtype == theirs.state_dict()["state"][0]["step"].dtype


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_complex_parameters_match_torch(weight_decay):
    def run(cls):
        torch.manual_seed(0)
        z = torch.randn(5, dtype=torch.complex64, requires_grad=True)
        target = torch.randn(5, dtype=torch.complex64)
        opt = cls([z], lr=0.5, weight_decay=weight_decay, maximize=False)
        for _ in range(15):
            opt.zero_grad()
            (z - target).abs().pow(2).sum().backward()
            opt.step()
        return z.detach(), opt.state[z]
    (z1, s1), (z2, s2) = run(Adadelta), run(torch.optim.Adadelta)
    assert torch.equal(z1, z2)
    for key in ("step", "square_avg", "acc_delta"):
        assert s1[key].dtype == s2[key].dtype and torch.equal(s1[key], s2[key])


def test_checkpoint_round_trips_through_torch():
    model, ours = train(lambda m: Adadelta(m.parameters(), lr=0.5, rho=0.8), steps=5)
    theirs = torch.optim.Adadelta(model.parameters(), lr=0.5, rho=0.8)
    theirs.load_state_dict(copy.deepcopy(ours.state_dict()))
    back = Adadelta(model.parameters(), lr=0.5, rho=0.8)
    back.load_state_dict(copy.deepcopy(theirs.state_dict()))
    x = torch.randn(6, 4)
    for opt in (theirs, back):
        opt.zero_grad()
        model(x).pow(2).mean().backward()
    snapshot = [p.detach().clone() for p in model.parameters()]
    theirs.step()
    after_theirs = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, s in zip(model.parameters(), snapshot):
            p.copy_(s)
    back.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), after_theirs))


def test_differentiable_step_gives_torchs_gradient():
    def grad_through_steps(cls):
        w0 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
        w = w0.clone()  # a non-leaf parameter, as differentiable optimisation needs
        opt = cls([w], lr=0.5, weight_decay=0.1, maximize=True, differentiable=True)
        for _ in range(4):
            w.grad = 2 * w
            opt.step()
        return torch.autograd.grad((w * w).sum(), w0)[0]
    ours, theirs = grad_through_steps(Adadelta), grad_through_steps(torch.optim.Adadelta)
    assert (ours != 0).all() and torch.equal(ours, theirs)


def test_rho_one_is_sgd():
    m1, _ = train(lambda m: Adadelta(m.parameters(), lr=0.05, rho=1.0, maximize=True))
    m2, _ = train(lambda m: torch.optim.SGD(m.parameters(), lr=0.05, maximize=True))
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_zero_eps_never_moves():
    model, opt = train(lambda m: Adadelta(m.parameters(), eps=0.0), steps=5)
    fresh, _ = train(lambda m: torch.optim.SGD(m.parameters(), lr=0.0), steps=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_capturable_on_cuda_matches_torch_single_tensor():
    def run(cls):
        torch.manual_seed(0)
        w = torch.randn(16, device="cuda", requires_grad=True)
        opt = cls([w], lr=0.5, capturable=True, foreach=False)
        for _ in range(10):
            opt.zero_grad()
            w.pow(2).sum().backward()
            opt.step()
        return w.detach(), opt.state[w]["step"]
    (w1, s1), (w2, s2) = run(Adadelta), run(torch.optim.Adadelta)
    assert torch.equal(w1, w2) and s1.device == s2.device and torch.equal(s1, s2)


# --- foreach=True: the multi-tensor rule, against torch's multi-tensor path and our loop

from hypothesis import settings

from optim_nb.adadelta import adadelta_update_foreach
from optim_nb.core import assert_same, small_model
from optim_nb.core import foreach_vs_loop


@settings(max_examples=25)
@given(first=adadelta_options(), second=adadelta_options(), dtype=DTYPES,
       lr=st.floats(1e-3, 2.0), lr_as_tensor=st.booleans())
def test_foreach_bit_identical_to_torchs_foreach(first, second, dtype, lr, lr_as_tensor):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(Adadelta, torch.optim.Adadelta, [first, {**second, "lr": 0.5}],
                         dtype=dtype, lr=lr, foreach=True)


@settings(max_examples=10)
@given(first=adadelta_options(), second=adadelta_options(), dtype=DTYPES)
def test_foreach_gives_the_loops_bits_and_state_layout(first, second, dtype):
    assert foreach_vs_loop(Adadelta, [first, second], dtype=dtype, lr=0.5) == 0


def test_foreach_is_the_path_taken_and_the_cpu_default_is_the_loop():
    params = list(small_model().parameters())
    for foreach, expected in [(True, "foreach"), (False, "loop"), (None, "loop")]:
        opt = Adadelta(params, foreach=foreach)
        assert opt.path(opt.param_groups[0], params) == expected
    assert Adadelta.update_foreach is adadelta_update_foreach


@pytest.mark.parametrize("options", [dict(lr=0.5), dict(lr=torch.tensor(0.5), rho=0.5, weight_decay=0.1,
                                                         maximize=True)])
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
    (p1, s1), (p2, s2) = run(Adadelta), run(torch.optim.Adadelta)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert_same(s1, s2)


@pytest.mark.parametrize("lr_as_tensor", [False, True])
def test_foreach_capturable_on_the_cpu_raises_torchs_error(lr_as_tensor):
    lr = torch.tensor(0.5) if lr_as_tensor else 0.5
    with pytest.raises(Exception) as theirs:
        _step_once(torch.optim.Adadelta, lr=lr, foreach=True, capturable=True)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value))):
        _step_once(Adadelta, lr=lr, foreach=True, capturable=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("capturable", [False, True])
def test_foreach_on_cuda_matches_torchs_foreach(capturable):
    def run(cls):
        torch.manual_seed(0)
        ws = [torch.randn(16, device="cuda", requires_grad=True), torch.randn(3, 5, device="cuda", requires_grad=True)]
        opt = cls(ws, lr=torch.tensor(0.5, device="cuda"), capturable=capturable, foreach=True, weight_decay=0.1)
        for _ in range(10):
            opt.zero_grad()
            sum(w.pow(2).sum() for w in ws).backward()
            opt.step()
        return [w.detach() for w in ws], opt.state_dict()
    (w1, s1), (w2, s2) = run(Adadelta), run(torch.optim.Adadelta)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))
    assert_same(s1, s2)
