"""optim_nb.Adagrad against torch.optim.Adagrad: numbers, state layout, signature, errors, sparse."""
import inspect
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from optim_nb import Adagrad
from optim_nb.core import assert_matches_torch, assert_same, train

DTYPES = st.sampled_from([torch.float32, torch.float64])
# torch warns once when a sparse tensor is built without invariant checks; its own Adagrad does too
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")


@st.composite
def adagrad_options(draw, sparse=False):
    return dict(
        lr_decay=draw(st.sampled_from([0.0, 0.01, 0.5]) | st.floats(0.0, 1.0)),
        weight_decay=0.0 if sparse else draw(st.sampled_from([0.0, 1e-4, 0.1]) | st.floats(0.0, 0.5)),
        eps=draw(st.sampled_from([1e-10, 1e-8, 1e-3]) | st.floats(0.0, 0.1)),
        maximize=draw(st.booleans()),
    )


@settings(max_examples=40)  # each example is two 20-step runs; 40 keeps the file under ~30 s
@given(first=adagrad_options(), second=adagrad_options(), dtype=DTYPES,
       lr=st.floats(1e-4, 0.5), lr_as_tensor=st.booleans(), tau=st.floats(0.0, 2.0),
       foreach=st.sampled_from([None, False, True]))
def test_bit_identical_to_torch(first, second, dtype, lr, lr_as_tensor, tau, foreach):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(Adagrad, torch.optim.Adagrad, [{**first, "foreach": foreach}, {**second, "lr": 0.01}],
                         dtype=dtype, lr=lr, initial_accumulator_value=tau)


def test_the_comparison_can_fail():
    def off_by_eps(params, **kw):
        return Adagrad(params, **{**kw, "eps": 1e-9})
    with pytest.raises(AssertionError):
        assert_matches_torch(off_by_eps, torch.optim.Adagrad, [{}, {}], lr=0.1, eps=1e-10)


def _params(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


def test_signature_and_defaults_are_torchs():
    assert _params(Adagrad) == _params(torch.optim.Adagrad)
    w = [torch.zeros(1, requires_grad=True)]
    assert Adagrad(w).defaults == torch.optim.Adagrad(w).defaults


BAD = [
    dict(lr=-1e-3), dict(lr=float("nan")), dict(lr=torch.tensor(-1.0)), dict(lr=torch.tensor([0.1, 0.2])),
    dict(lr_decay=-0.1), dict(weight_decay=-1e-5), dict(initial_accumulator_value=-0.1),
    dict(eps=-1e-10), dict(eps=float("nan")),
    dict(fused=True, foreach=True), dict(fused=True, differentiable=True),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_bad_hyperparameters_raise_torchs_error(bad):
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(Exception) as theirs:
        torch.optim.Adagrad(w, **bad)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value))):
        Adagrad(w, **bad)


def test_a_bad_param_group_is_not_added():
    opt = Adagrad([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="Invalid lr_decay value: -1"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr_decay": -1})
    assert len(opt.param_groups) == 1


def _layouts(cls, fused=None):
    torch.manual_seed(0)
    used, frozen, late, never = (torch.randn(2, 3, requires_grad=True) for _ in range(4))
    opt = cls([{"params": [used]}, {"params": [frozen], "initial_accumulator_value": 5.0}],
              lr=0.1, initial_accumulator_value=0.25, fused=fused)
    at_init = opt.state_dict()
    opt.add_param_group({"params": [late, never], "initial_accumulator_value": 9.0})
    for _ in range(3):
        used.grad, late.grad = torch.ones(2, 3), torch.full((2, 3), -2.0)
        opt.step()
    return at_init, opt.state_dict()


@pytest.mark.parametrize("fused", [None, True])
def test_eager_state_layout_is_torchs(fused):
    """State for every constructor parameter at once; for add_param_group's at its first gradient;
    `initial_accumulator_value` from the constructor only; `step` typed as torch types it."""
    (ours_init, ours), (theirs_init, theirs) = _layouts(Adagrad, fused), _layouts(torch.optim.Adagrad, fused)
    assert_same(ours_init, theirs_init)
    assert sorted(ours_init["state"]) == [0, 1]
    assert sorted(ours["state"]) == [0, 1, 2]           # `never` (index 3) has no state
    assert ours["state"][1]["step"] == 0 and ours["state"][1]["sum"].eq(0.25).all()
    if fused:  # torch's fused kernel rounds differently: compare the layout, not the bits
        for k in ours["state"]:
            for name in ("step", "sum"):
                a, b = ours["state"][k][name], theirs["state"][k][name]
                assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
        assert ours["state"][0]["step"].dtype == torch.float32
    else:
        assert_same(ours, theirs)


def test_step_dtype_follows_the_default_dtype():
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        w = [torch.zeros(2, requires_grad=True)]
        assert Adagrad(w).state[w[0]]["step"].dtype == torch.float64
        assert Adagrad(w, fused=True).state[w[0]]["step"].dtype == torch.float32
    finally:
        torch.set_default_dtype(old)


def test_checkpoints_are_interchangeable():
    """Our state_dict loads into torch's optimizer (and back), and training continues identically."""
    def resume(first, second, dtype=torch.float64):
        model, opt = train(lambda m: first(m.parameters(), lr=0.1, lr_decay=0.05), dtype, steps=7)
        saved = opt.state_dict()
        opt2 = second(model.parameters(), lr=0.1, lr_decay=0.05)
        opt2.load_state_dict(saved)
        gen = torch.Generator().manual_seed(5)
        x, y = torch.randn(16, 4, generator=gen, dtype=dtype), torch.randn(16, 2, generator=gen, dtype=dtype)
        for _ in range(5):
            opt2.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt2.step()
        return [p.detach() for p in model.parameters()], opt2.state_dict()
    (p1, s1), (p2, s2), (p3, s3) = (resume(Adagrad, torch.optim.Adagrad), resume(torch.optim.Adagrad, Adagrad),
                                    resume(torch.optim.Adagrad, torch.optim.Adagrad))
    for a, b, c in zip(p1, p2, p3):
        assert torch.equal(a, c) and torch.equal(b, c)
    assert_same(s1, s3); assert_same(s2, s3)


def _sparse_run(cls, dtype=torch.float32, steps=10, **options):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(12, 4, sparse=True).to(dtype)
    dense = torch.nn.Linear(4, 1).to(dtype)
    opt = cls([{"params": emb.parameters()}, {"params": dense.parameters(), "lr": 0.03}], **options)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        rows = torch.randint(0, 6, (5,), generator=gen)  # rows 6-11 are never used; duplicates happen
        opt.zero_grad()
        dense(emb(rows)).tanh().sum().backward()
        opt.step()
    return emb.weight.detach(), dense.weight.detach(), opt.state_dict()


@settings(max_examples=25)
@given(options=adagrad_options(sparse=True), dtype=DTYPES, lr=st.floats(1e-3, 0.5),
       lr_as_tensor=st.booleans(), tau=st.floats(0.0, 1.0))
def test_sparse_gradients_match_torch(options, dtype, lr, lr_as_tensor, tau):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    ours = _sparse_run(Adagrad, dtype, lr=lr, initial_accumulator_value=tau, **options)
    theirs = _sparse_run(torch.optim.Adagrad, dtype, lr=lr, initial_accumulator_value=tau, **options)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert_same(ours[2], theirs[2])


def test_sparse_gradients_touch_only_their_rows():
    torch.manual_seed(0)
    start = torch.nn.Embedding(12, 4).weight.detach().clone()
    weights, _, state = _sparse_run(Adagrad, lr=0.1)
    assert torch.equal(weights[6:], start[6:]) and (weights[:6] != start[:6]).all()
    assert state["state"][0]["sum"][6:].eq(0).all()


def test_sparse_gradients_with_weight_decay_raise_before_anything_moves():
    torch.manual_seed(0)
    lin, emb = torch.nn.Linear(3, 1), torch.nn.Embedding(4, 3, sparse=True)
    opt = Adagrad([{"params": lin.parameters()}, {"params": emb.parameters()}], weight_decay=0.1)
    lin(emb(torch.tensor([1, 2]))).sum().backward()
    params = [p.detach().clone() for p in (*lin.parameters(), emb.weight)]
    state = opt.state_dict()
    with pytest.raises(RuntimeError, match="^weight_decay option is not compatible with sparse gradients$"):
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, (*lin.parameters(), emb.weight)))
    assert_same(opt.state_dict(), state)


def _fused_error(cls, kind):
    if kind == "complex":
        p = torch.zeros(2, dtype=torch.complex128, requires_grad=True)
        p.grad = torch.ones_like(p)
    else:
        p = torch.zeros(3, 2, requires_grad=True)
        p.grad = torch.sparse_coo_tensor(torch.tensor([[0, 2]]), torch.ones(2, 2), (3, 2))
    opt = cls([p], fused=True)
    with pytest.raises(RuntimeError) as error:
        opt.step()
    return str(error.value)


@pytest.mark.parametrize("kind", ["complex", "sparse"])
def test_fused_refuses_what_torch_refuses(kind):
    assert _fused_error(Adagrad, kind) == _fused_error(torch.optim.Adagrad, kind)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_is_close_to_torchs_default_and_to_its_kernel(dtype):
    def run(cls, fused):
        return train(lambda m: cls(m.parameters(), lr=0.05, lr_decay=0.1, fused=fused), dtype)[0]
    ours, default, kernel = run(Adagrad, True), run(torch.optim.Adagrad, None), run(torch.optim.Adagrad, True)
    for p, q, r in zip(ours.parameters(), default.parameters(), kernel.parameters()):
        torch.testing.assert_close(p, q)
        torch.testing.assert_close(p, r)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_parameters_match_torch(dtype):
    def run(cls):
        torch.manual_seed(0)
        z = torch.randn(5, dtype=dtype, requires_grad=True)
        w = torch.randn(3, requires_grad=True)
        opt = cls([{"params": [z]}, {"params": [w], "maximize": True}], lr=0.1, weight_decay=0.05,
                  initial_accumulator_value=0.3, lr_decay=0.1)
        for _ in range(8):
            opt.zero_grad()
            ((z - 1j) * (z - 1j).conj()).real.sum().add(w.sin().sum()).backward()
            opt.step()
        return z.detach(), w.detach(), opt.state_dict()
    ours, theirs = run(Adagrad), run(torch.optim.Adagrad)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert_same(ours[2], theirs[2])


def test_differentiable_step_gives_torchs_gradient():
    def grad_through_steps(cls):
        w0 = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
        w = w0.clone()  # a non-leaf parameter, as differentiable optimisation needs
        opt = cls([w], lr=0.1, lr_decay=0.1, initial_accumulator_value=0.1, weight_decay=0.01,
                  differentiable=True)
        for _ in range(3):
            w.grad = 3 * w - 1  # a gradient that is itself differentiable
            opt.step()
        return torch.autograd.grad(w.pow(2).sum(), w0)[0]
    ours, theirs = grad_through_steps(Adagrad), grad_through_steps(torch.optim.Adagrad)
    assert torch.equal(ours, theirs)


def test_share_memory():
    w = torch.zeros(3, requires_grad=True)
    opt = Adagrad([w])
    opt.share_memory()
    assert opt.state[w]["sum"].is_shared()


# --- foreach=True: the multi-tensor rule, against torch's multi-tensor path and our loop

from optim_nb.adagrad import adagrad_update_foreach
from optim_nb.core import small_model
from optim_nb.core import foreach_vs_loop


@settings(max_examples=20)
@given(first=adagrad_options(), second=adagrad_options(), dtype=DTYPES,
       lr=st.floats(1e-4, 0.5), lr_as_tensor=st.booleans(), tau=st.floats(0.0, 2.0))
def test_foreach_bit_identical_to_torchs_foreach(first, second, dtype, lr, lr_as_tensor, tau):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(Adagrad, torch.optim.Adagrad, [first, {**second, "lr": 0.01}],
                         dtype=dtype, lr=lr, initial_accumulator_value=tau, foreach=True)


@settings(max_examples=10)
@given(first=adagrad_options(), second=adagrad_options(), dtype=DTYPES, tau=st.floats(0.0, 2.0))
def test_foreach_gives_the_loops_bits_and_state_layout(first, second, dtype, tau):
    assert foreach_vs_loop(Adagrad, [first, second], dtype=dtype, lr=0.05, initial_accumulator_value=tau) == 0


def test_foreach_is_the_path_taken_and_the_cpu_default_is_the_loop():
    params = list(small_model().parameters())
    for foreach, expected in [(True, "foreach"), (False, "loop"), (None, "loop")]:
        opt = Adagrad(params, foreach=foreach)
        assert opt.path(opt.param_groups[0], params) == expected
    assert Adagrad.update_foreach is adagrad_update_foreach


@pytest.mark.parametrize("lr_as_tensor", [False, True])
def test_foreach_sparse_gradients_match_torchs_foreach(lr_as_tensor):
    lr = torch.tensor(0.1) if lr_as_tensor else 0.1
    ours = _sparse_run(Adagrad, lr=lr, lr_decay=0.1, foreach=True)
    theirs = _sparse_run(torch.optim.Adagrad, lr=lr, lr_decay=0.1, foreach=True)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert_same(ours[2], theirs[2])


def test_foreach_groups_by_dtype_and_handles_complex_as_torch():
    def run(cls):
        torch.manual_seed(0)
        ps = [torch.randn(3, requires_grad=True), torch.randn(2, 2, dtype=torch.float64, requires_grad=True),
              torch.randn(4, dtype=torch.complex64, requires_grad=True)]
        opt = cls(ps, lr=0.1, weight_decay=0.05, lr_decay=0.1, initial_accumulator_value=0.3,
                  maximize=True, foreach=True)
        for _ in range(8):
            opt.zero_grad()
            sum((p.abs() ** 2 + p.real).sum().double() for p in ps).backward()
            opt.step()
        return [p.detach() for p in ps], opt.state_dict()
    (p1, s1), (p2, s2) = run(Adagrad), run(torch.optim.Adagrad)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert_same(s1, s2)


def test_foreach_with_differentiable_raises_torchs_error():
    def error(cls):
        w = torch.zeros(2, requires_grad=True)
        w.grad = torch.ones(2)
        opt = cls([w], foreach=True, differentiable=True)
        with pytest.raises(Exception) as info:
            opt.step()
        assert w.eq(0).all()
        return info.type, str(info.value)
    assert error(Adagrad) == error(torch.optim.Adagrad) == (AssertionError, "_foreach ops don't support autograd")
