"""The fused path (`fused=True`: the C++ kernels of chapter 52_fused) against the loop and torch.

No timing here: the benchmark (benchmarks/bench.py) measures speed. The first run in a fresh
machine compiles one extension per optimizer (about 20 s each on 2 cores); later runs load it.
"""
import copy
import inspect

import pytest
import torch

import optim_nb
from optim_nb.registry import REGISTRY
from optim_nb.testing import layer_groups, train
from registry_options import made

# every fused case of the registry (the bound of each, fused vs loop in float32/float64, is checked
# in tests/test_generic.py), each class made ready to step (`made`: schedule-free ones in training mode)
CASES = [(made(e, e.cls), options) for e in REGISTRY.values() for options in e.fused_cases]
IDS = [f"{e.name}-{i}" for i, (e, _) in enumerate((e, o) for e in REGISTRY.values() for o in e.fused_cases)]
TORCH_FUSED = [e for e in REGISTRY.values() if e.reference_fused]
OURS_ONLY = [e for e in REGISTRY.values() if e.kernel and not e.reference_fused]


def _pair(cls, make, steps=4, dtype=torch.float64, **options):
    "The same parameters (made by `make`) stepped by the loop and by the kernel; returns both."
    torch.manual_seed(0)
    loop_ps = make(dtype)
    torch.manual_seed(0)
    fused_ps = make(dtype)  # the same values in the same layouts
    loop, fused = cls(loop_ps, **options), cls(fused_ps, fused=True, **options)
    for _ in range(steps):
        for p, q in zip(loop_ps, fused_ps):
            p.grad = torch.randn(p.shape, dtype=dtype)
            q.grad = p.grad.clone()
        loop.step()
        fused.step()
    return (loop, loop_ps), (fused, fused_ps)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cls,options", CASES, ids=IDS)
def test_low_precision_at_least_as_accurate_as_the_loop(cls, options, dtype):
    """float16/bfloat16: torch's loop rounds every intermediate (and alpha) to the dtype, a kernel
    keeps float32 and rounds once; both against the same steps run in float64."""
    torch.manual_seed(0)
    x = torch.randn(300, 200).to(dtype)
    grads = [torch.randn(300, 200).to(dtype) for _ in range(4)]
    def run(d, fused):
        p = x.to(d, copy=True).requires_grad_()
        opt = cls([p], fused=fused, **options)
        for g in grads:
            p.grad = g.to(d, copy=True)
            opt.step()
        assert all(t.dtype == (torch.float32 if k == "step" else d) for k, t in opt.state.get(p, {}).items()
                   if fused)
        return p.detach().double()
    exact = run(torch.float64, None)
    def error(result):  # an overflow or 0/0 in float16 counts as an infinite error
        return (result - exact).abs().nan_to_num(nan=float("inf")).max().item()
    loop_error, fused_error = error(run(dtype, None)), error(run(dtype, True))
    assert fused_error < float("inf") and fused_error <= 2 * loop_error + torch.finfo(dtype).eps, (fused_error, loop_error)


def _odd_layouts(dtype):
    "A transposed matrix, a channels-last conv kernel, a slice with a stride, a 0-dim and an empty tensor."
    t = torch.randn(300, 200, dtype=dtype).t()
    c = torch.randn(8, 3, 5, 5, dtype=dtype).to(memory_format=torch.channels_last)
    s = torch.randn(1000, dtype=dtype)[::3]  # a view: not dense
    z, e = torch.tensor(1.5, dtype=dtype), torch.randn(0, 4, dtype=dtype)
    return [x.requires_grad_() for x in (t, c, z, e)] + [s.detach().requires_grad_()]


@pytest.mark.parametrize("cls,options", CASES[1::2], ids=IDS[1::2])
def test_any_layout_same_state_layout_close_to_the_loop(cls, options):
    (loop, ps), (fused, qs) = _pair(cls, _odd_layouts, dtype=torch.float64, **options)
    for p, q in zip(ps, qs):
        assert q.stride() == p.stride()
        torch.testing.assert_close(q, p, rtol=1e-12, atol=1e-12)
        a, b = loop.state.get(p, {}), fused.state.get(q, {})
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k].shape, a[k].stride(), a[k].dtype) == (b[k].shape, b[k].stride(), b[k].dtype), k
            torch.testing.assert_close(b[k], a[k], rtol=1e-12, atol=1e-12)


def test_a_group_of_mixed_dtypes_and_a_gradient_of_another_layout():
    p32, p64 = torch.randn(50, 40).requires_grad_(), torch.randn(30, dtype=torch.float64).requires_grad_()
    q32, q64 = (x.detach().clone().requires_grad_() for x in (p32, p64))
    loop, fused = optim_nb.Adam([p32, p64], lr=0.1), optim_nb.Adam([q32, q64], lr=0.1, fused=True)
    for _ in range(3):
        g = torch.randn(40, 50).t()  # a transposed gradient: stepped on contiguous copies
        p32.grad, q32.grad = g.clone(), g
        p64.grad = torch.randn(30, dtype=torch.float64)
        q64.grad = p64.grad.clone()
        loop.step(), fused.step()
    torch.testing.assert_close(q32, p32)
    torch.testing.assert_close(q64, p64)
    assert fused.state[q64]["exp_avg"].dtype == torch.float64


def test_fused_path_is_taken_and_state_is_the_loops():
    p = torch.randn(1000).requires_grad_()
    q = p.detach().clone().requires_grad_()
    fused, loop = optim_nb.Adam([p], fused=True), optim_nb.Adam([q])
    assert fused.path(fused.param_groups[0], [p]) == "fused"
    assert loop.path(loop.param_groups[0], [q]) == "loop"  # CPU default: torch's loop
    for _ in range(3):
        p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
        fused.step(), loop.step()
    a, b = fused.state_dict(), loop.state_dict()
    assert a["state"][0].keys() == b["state"][0].keys()
    for k, v in a["state"][0].items():
        w = b["state"][0][k]
        assert (v.shape, v.dtype, v.device) == (w.shape, w.dtype, w.device)
    assert a["state"][0]["step"] == 3 and a["state"][0]["step"].dtype == torch.float32
    assert not any(k.startswith("_") for k in a["param_groups"][0])  # nothing extra in the groups


def test_state_tensors_are_updated_in_place_and_versions_bumped():
    p = torch.randn(300, 300).requires_grad_()
    opt = optim_nb.SGD([p], lr=0.1, momentum=0.9, fused=True)
    p.grad = torch.ones_like(p)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    for k in range(3):
        before = p._version, buf._version
        opt.param_groups[0]["lr"] = 0.1 / (k + 1)
        opt.step()
        assert p._version > before[0] and buf._version > before[1]  # autograd sees the writes
    assert opt.state[p]["momentum_buffer"] is buf and buf.shape == p.shape


def test_a_parameter_stepped_after_the_others_gets_its_first_buffer():
    a, b = torch.ones(4, requires_grad=True), torch.ones(4, requires_grad=True)
    a2, b2 = (x.detach().clone().requires_grad_() for x in (a, b))
    fused, loop = optim_nb.SGD([a, b], lr=0.1, momentum=0.9, fused=True), optim_nb.SGD([a2, b2], lr=0.1, momentum=0.9)
    a.grad, a2.grad = torch.ones(4), torch.ones(4)
    fused.step(), loop.step()            # b has no gradient yet
    b.grad, b2.grad = torch.full((4,), 2.0), torch.full((4,), 2.0)
    fused.step(), loop.step()            # a's second step, b's first: two kernel calls
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert torch.equal(fused.state[b]["momentum_buffer"], loop.state[b2]["momentum_buffer"])


@pytest.mark.parametrize("entry", TORCH_FUSED, ids=str)
def test_fused_refuses_sparse_gradients_as_torch(entry):
    "torch's error; ours before anything moves (torch steps the dense group first)."
    def attempt(cls):
        torch.manual_seed(0)
        lin, emb = torch.nn.Linear(3, 1), torch.nn.Embedding(4, 3, sparse=True)
        opt = cls([{"params": lin.parameters()}, {"params": emb.parameters()}], lr=0.1, fused=True)
        lin(emb(torch.tensor([1, 2]))).sum().backward()
        before = [p.detach().clone() for p in (*lin.parameters(), emb.weight)]
        with pytest.raises(RuntimeError) as error:
            opt.step()
        moved = not all(torch.equal(p, q) for p, q in zip(before, (*lin.parameters(), emb.weight)))
        return str(error.value), moved
    (ours, moved), (theirs, _) = attempt(entry.cls), attempt(entry.reference)
    assert ours == theirs and not moved


def test_tensor_lr_and_grad_scaler_on_the_fused_path():
    def run(cls, **options):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        opt = cls(model.parameters(), **options)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
        for k in range(4):
            opt.zero_grad()
            loss = model(torch.randn(8, 4)).pow(2).mean() * (float("inf") if k == 1 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return model, opt
    (m1, o1), (m2, o2) = run(optim_nb.Adam, lr=torch.tensor(1e-2), fused=True), run(optim_nb.Adam, lr=torch.tensor(1e-2))
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q)
    assert o1.state[next(m1.parameters())]["step"] == 3  # the step with inf was skipped


@pytest.mark.parametrize("entry", OURS_ONLY, ids=str)
def test_our_added_fused_flag_checks_what_torchs_fused_optimizers_check(entry):
    """torch's errors for the flags torch refuses beside fused=True, where the class takes them (Lion has no
    `differentiable`); where `foreach` defaults to True, as in schedule-free's reference, fused=True runs the
    kernel beside it instead (chapter 52_fused)."""
    cls = entry.cls
    takes = inspect.signature(cls).parameters
    assert "fused" not in inspect.signature(entry.reference).parameters
    assert takes["fused"].default is None
    p = [torch.zeros(2, requires_grad=True)]
    clashes = [f for f in ("differentiable", "foreach") if f in takes and takes[f].default is not True]
    assert clashes or takes["foreach"].default is True  # a refusal, or the kernel beside foreach=True (below)
    for flag in clashes:
        with pytest.raises(RuntimeError) as want:
            torch.optim.Adam(p, fused=True, **{flag: True})
        with pytest.raises(RuntimeError, match=str(want.value).replace("`", ".")):
            cls(p, fused=True, **{flag: True})
    if "foreach" in takes and takes["foreach"].default is True:
        opt = cls(p, fused=True, foreach=True)
        assert opt.param_groups[0]["foreach"] is True and opt.path(opt.param_groups[0], p) == "fused"
    for dtype in (torch.int64, torch.complex64):  # fused kernels take real floating point only
        z = torch.zeros(3, dtype=dtype)
        z.grad = torch.ones(3, dtype=dtype)
        with pytest.raises(RuntimeError, match="`fused=True` requires all the params to be floating point"):
            made(entry, cls)([z], fused=True).step()


@pytest.mark.parametrize("entry", TORCH_FUSED, ids=str)
def test_like_torchs_fused_optimizer_with_a_scheduler_and_checkpoints_across(entry):
    "Ours and torch's fused=True: same state_dict layout, close values, checkpoints load both ways."
    def make(cls):
        return lambda model: cls(layer_groups(model, [{}, {"lr": 0.02}]), fused=True, **entry.options)
    (m1, o1), (m2, o2) = train(make(entry.cls)), train(make(entry.reference))
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(o1.state_dict(), o2.state_dict())  # keys, dtypes, shapes, values
    # torch's checkpoint into ours and ours into torch: both go on stepping
    saved1, saved2 = copy.deepcopy(o1.state_dict()), copy.deepcopy(o2.state_dict())  # as torch.save would
    o1.load_state_dict(saved2)
    o2.load_state_dict(saved1)
    for m, o in ((m1, o1), (m2, o2)):
        sched = torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5)
        for _ in range(3):
            o.zero_grad()
            m(torch.ones(3, 4)).sum().backward()
            o.step()
            sched.step()
    for p, q in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(o1.state_dict(), o2.state_dict())  # keys, dtypes, shapes, values
