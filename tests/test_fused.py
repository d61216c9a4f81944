"""The fused path (`fused=True`, core's compiled `update_foreach`) against the loop and torch.

No timing here: the benchmark (benchmarks/bench.py) measures speed. The first run compiles one
graph per rule and option set (about 1-3 s each on 2 cores); later runs read inductor's cache.
"""
import pytest
import torch

import optim_nb
from optim_nb.core import FUSED_MIN_NUMEL
from optim_nb.speed import FUSED_ULPS, compiled_graphs, fused_vs_loop

# a matrix and a vector large enough for the compiled call, one small tensor for the eager part
SHAPES = [(256, 300), (70_000,), (7, 3)]
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-2)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adagrad", dict(lr=0.1, lr_decay=1e-3)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=1e-3, weight_decay=1e-2)),
]


@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_fused_matches_loop_without_recompiling(name, options):
    r = fused_vs_loop(getattr(optim_nb, name), SHAPES, steps=5, **options)
    assert r["new_graphs"] == 0, "a changing lr must not recompile"
    assert r["ulps"] <= FUSED_ULPS[name], r


def test_fused_path_is_taken_and_state_is_the_loops():
    p = torch.randn(FUSED_MIN_NUMEL).requires_grad_()
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
    assert a["state"][0]["step"] == 3
    assert not any(k.startswith("_") for k in a["param_groups"][0])  # nothing extra in the groups


def test_state_tensors_are_updated_in_place():
    p = torch.randn(300, 300).requires_grad_()
    opt = optim_nb.SGD([p], lr=0.1, momentum=0.9, fused=True)
    p.grad = torch.ones_like(p)
    opt.step()
    buf = opt.state[p]["momentum_buffer"]
    graphs = None
    for k in range(4):
        opt.param_groups[0]["lr"] = 0.1 / (k + 1)
        p.grad = torch.ones_like(p)
        opt.step()
        if k == 0:
            graphs = compiled_graphs()
    assert opt.state[p]["momentum_buffer"] is buf and buf.shape == p.shape  # same tensor, same shape
    assert compiled_graphs() == graphs


def test_sgd_without_state_takes_the_compiled_path():
    p = torch.randn(300, 300).requires_grad_()
    q = p.detach().clone()
    opt = optim_nb.SGD([p], lr=0.5, fused=True)
    for k in range(3):
        p.grad = torch.ones_like(p)
        opt.step()
        if k == 0:
            graphs = compiled_graphs()  # the first step is eager, the second compiles (or loads)
    assert not opt.state and torch.allclose(p.detach(), q - 1.5)
    assert compiled_graphs() >= graphs


@pytest.mark.parametrize("name", ["SGD", ("Adagrad"), "Adam", "AdamW"])
def test_fused_errors_as_torch(name):
    ours, theirs = getattr(optim_nb, name), getattr(torch.optim, name)
    p = [torch.zeros(2, requires_grad=True)]
    for kwargs in (dict(fused=True, differentiable=True), dict(fused=True, foreach=True)):
        with pytest.raises(RuntimeError) as want:
            theirs(p, **kwargs)
        with pytest.raises(RuntimeError) as got:
            ours(p, **kwargs)
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("name", ["SGD", "Adagrad", "Adam", "AdamW"])
def test_fused_refuses_integer_params_as_torch(name):
    def attempt(cls):
        p = torch.zeros(3, dtype=torch.int64)
        opt = cls([p], fused=True)
        p.grad = torch.zeros(3, dtype=torch.int64)
        opt.step()
    with pytest.raises(Exception) as want:
        attempt(getattr(torch.optim, name))
    with pytest.raises(Exception) as got:
        attempt(getattr(optim_nb, name))
    assert type(got.value) is type(want.value) and str(got.value) == str(want.value)


def test_no_fused_flag_where_torch_has_none():
    for name in ("RMSprop", "Adadelta"):
        with pytest.raises(TypeError):
            getattr(torch.optim, name)([torch.zeros(1, requires_grad=True)], fused=True)
        with pytest.raises(TypeError):
            getattr(optim_nb, name)([torch.zeros(1, requires_grad=True)], fused=True)


def test_the_ulps_check_can_fail():
    r = fused_vs_loop(optim_nb.SGD, [(7, 3)], steps=2, lr=0.1)  # small: eager, identical
    assert r["ulps"] == 0
    from optim_nb.speed import ulps_of_scale
    a = torch.tensor([1.0, 2.0])
    assert ulps_of_scale(torch.nextafter(a, a + 1), a, a) == 1
