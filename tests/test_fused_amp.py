"""The fused kernels under torch.amp.GradScaler, and fused=True on a machine that cannot compile them.

torch's fused optimizers set `_step_supports_amp_scaling`; GradScaler then hands them its scale and
found-inf flag (`optimizer.grad_scale`, `optimizer.found_inf`) instead of unscaling the gradients
itself, and the kernel unscales inside its one pass (leaving the gradients unscaled) and takes no
step when found_inf is 1. Every optimizer with a kernel (the registry's `kernel`) is checked against
torch's fused optimizer where torch has one, else against our loop with the gradients unscaled as
GradScaler unscales them for an optimizer without AMP support.
"""
import pytest
import torch

import optim_nb
from optim_nb import fused
from optim_nb.registry import REGISTRY
from optim_nb.testing import ulps
from registry_options import made

KERNELS = [e for e in REGISTRY.values() if e.kernel]
CASES = [(e, options) for e in KERNELS for options in e.fused_cases]
IDS = [f"{e.name}-{i}" for e in KERNELS for i, _ in enumerate(e.fused_cases)]
SHAPES = [(64, 50), (70_000,), (7, 3)]  # the long one is split between threads


def reference(entry, params, **options):
    "torch's fused optimizer where it has one, else our loop (GradScaler then unscales for it)."
    if entry.reference_fused:
        return entry.reference(params, fused=True, **options)
    return made(entry, entry.cls)(params, **options)


def snapshot(params, opt):
    return [p.detach().clone() for p in params], [p.grad.clone() for p in params], \
        [{k: v.clone() for k, v in opt.state.get(p, {}).items()} for p in params]


def compare(entry, ours, theirs, before, grads_too=True):
    """Parameters, gradients and state of two (params, opt) pairs: within the entry's fused ulps of
    the values before the step, the step counters equal."""
    (ps, o), (qs, t) = ours, theirs
    p0s, _, s0s = before
    bound = entry.fused_ulps
    for p, q, p0, s0 in zip(ps, qs, p0s, s0s):
        assert ulps(p.detach(), q.detach(), scale=p0) <= bound
        if grads_too:  # unscaled by the same division (or a multiplication by 2^-k): exactly
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=0, equal_nan=True)
        a, b = o.state.get(p, {}), t.state.get(q, {})
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k].dtype, a[k].shape) == (b[k].dtype, b[k].shape), k
            if k == "step":
                assert torch.equal(a[k], b[k])
            else:
                assert ulps(a[k], b[k], scale=s0.get(k, b[k])) <= bound, k


def same_point(ps, o, qs, t):
    "Each step from the same point: ours takes the reference's parameters and state."
    for p, q in zip(ps, qs):
        p.data.copy_(q.data)
        for name, v in t.state.get(q, {}).items():
            o.state[p][name].copy_(v)


def side_by_side(entry, options, dtype, steps=4, inf_at=1):
    """Our fused optimizer and the reference, each under its own GradScaler, stepped from the same
    parameters and state with the same (scaled) gradients; an inf in one gradient at step `inf_at`."""
    gen = torch.Generator().manual_seed(0)
    inits = [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]
    ps = [x.clone().requires_grad_() for x in inits]
    qs = [x.clone().requires_grad_() for x in inits]
    o, t = made(entry, entry.cls)(ps, fused=True, **options), reference(entry, qs, **options)
    assert o._step_supports_amp_scaling
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0 ** 10) for _ in range(2)]
    for k in range(steps):
        same_point(ps, o, qs, t)
        scale = scalers[1].scale(torch.ones((), dtype=dtype))  # the scale of this step
        for p, q in zip(ps, qs):
            g = torch.randn(p.shape, generator=gen, dtype=dtype) * scale
            if k == inf_at and p.dim() == 1:
                g[3] = float("inf")
            p.grad, q.grad = g.clone(), g.clone()
        scalers[0].scale(torch.ones(()))
        before = snapshot(qs, t)
        for scaler, opt in zip(scalers, (o, t)):
            scaler.step(opt)
            scaler.update()
        assert scalers[0].get_scale() == scalers[1].get_scale()
        # after a skipped step torch's fused kernels leave the gradients scaled, GradScaler's
        # unscale_ for the loop does not: compare gradients where both unscaled them
        compare(entry, (ps, o), (qs, t), before, grads_too=entry.reference_fused or k != inf_at)
        if k == inf_at:
            for p, p0 in zip(ps, before[0]):
                assert torch.equal(p.detach(), p0)  # no step
    return o


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("entry,options", CASES, ids=IDS)
def test_under_grad_scaler_with_finite_and_inf_gradients(entry, options, dtype):
    o = side_by_side(entry, options, dtype)
    steps = [s["step"] for s in o.state.values() if "step" in s]
    assert all(s == 3 for s in steps)  # four steps, one skipped


def by_hand(entry, options, found_inf: float, scale=4.0):
    "One fused step with `grad_scale` and `found_inf` set by hand, beside the reference."
    gen = torch.Generator().manual_seed(1)
    inits = [torch.randn(s, generator=gen) for s in SHAPES]
    grads = [torch.randn(s, generator=gen) * scale for s in SHAPES]
    ps, qs = ([x.clone().requires_grad_() for x in inits] for _ in range(2))
    o, t = made(entry, entry.cls)(ps, fused=True, **options), reference(entry, qs, **options)
    for _ in range(2):  # steps without AMP first, so that there is state to keep or change
        for p, q, g in zip(ps, qs, grads):
            p.grad, q.grad = g / scale, g / scale
        o.step(), t.step()
    same_point(ps, o, qs, t)
    for p, q, g in zip(ps, qs, grads):
        p.grad, q.grad = g.clone(), g.clone()
    before = snapshot(ps, o)
    o.grad_scale, o.found_inf = torch.tensor(scale), torch.tensor(found_inf)
    o.step()
    if entry.reference_fused:
        t.grad_scale, t.found_inf = torch.tensor(scale), torch.tensor(found_inf)
        t.step()
    elif found_inf != 1:  # our loop, unscaled by hand
        for q in qs:
            q.grad.div_(scale)
        t.step()
    return (ps, o), (qs, t), before


@pytest.mark.parametrize("found_inf", [0.0, 1.0])
@pytest.mark.parametrize("entry,options", CASES, ids=IDS)
def test_found_inf_and_grad_scale_set_by_hand(entry, options, found_inf):
    ours, theirs, before = by_hand(entry, options, found_inf)
    compare(entry, ours, theirs, before)
    ps, o = ours
    if found_inf == 1:  # nothing moved: parameters, scaled gradients, state (step counters too)
        for p, (p0, g0, s0) in zip(ps, zip(*before)):
            assert torch.equal(p.detach(), p0) and torch.equal(p.grad, g0)
            for k, v in o.state.get(p, {}).items():
                assert torch.equal(v, s0[k]), k
    elif entry.reference_fused:  # the gradients were unscaled in place, as torch's kernels leave them (for our own
        # kernels compare() matched them, bit for bit, to the loop's after a step on gradients unscaled by hand: g/scale,
        # or where the rule writes its direction d into the gradient, as schedule-free's, that d)
        for p, g0 in zip(ps, before[1]):
            assert torch.equal(p.grad, g0 / 4.0)


@pytest.mark.parametrize("entry", [e for e in KERNELS if e.reference_fused], ids=str)
def test_found_inf_other_than_one_as_torch(entry):
    "torch's kernels skip only when found_inf == 1, and subtract found_inf from the step counters."
    ours, theirs, before = by_hand(entry, entry.fused_cases[0], 2.0)
    compare(entry, ours, theirs, before)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_amp_flag_only_with_fused(name):
    p = [torch.zeros(2, requires_grad=True)]
    for fused_flag in (None, False, True):
        ours, theirs = getattr(optim_nb, name)(p, fused=fused_flag), getattr(torch.optim, name)(p, fused=fused_flag)
        assert getattr(ours, "_step_supports_amp_scaling", False) == getattr(theirs, "_step_supports_amp_scaling", False)


def test_fused_flag_where_no_kernel_runs_still_honours_grad_scaler():
    "Off the CPU (or for a class without a kernel) fused=True runs the multi-tensor rule: the base class unscales."
    class NoKernel(optim_nb.Adam):
        update_fused = None
    def run(cls, **flags):
        torch.manual_seed(0)
        ps = [torch.randn(5, 4, requires_grad=True), torch.randn(4, requires_grad=True)]
        opt, scaler = cls(ps, lr=0.1, **flags), torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
        for k in range(4):
            loss = sum((p ** 2).sum() for p in ps) * (float("inf") if k == 1 else 1.0)
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return ps, opt
    (ps, o), (qs, t) = run(NoKernel, fused=True), run(optim_nb.Adam)
    assert o.path(o.param_groups[0], ps) == "foreach" and o._step_supports_amp_scaling
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))
    torch.testing.assert_close(o.state_dict()["state"], t.state_dict()["state"], rtol=0, atol=0)


# ---- fused=True without a C++ compiler or ninja

@pytest.fixture
def unbuilt(monkeypatch):
    "As on a machine where no kernel was loaded yet in this process."
    monkeypatch.setattr(fused, "_fused_built", set())
    monkeypatch.delenv("CXX", raising=False)
    return monkeypatch


def path_without(tmp_path, *tools):
    "A PATH with only the compiler and ninja of this machine, less `tools`."
    import shutil
    for tool in ("c++", "ninja"):
        if tool not in tools:
            (tmp_path / tool).symlink_to(shutil.which(tool))
    return str(tmp_path)


@pytest.mark.parametrize("missing", [("c++",), ("ninja",), ("c++", "ninja")])
@pytest.mark.parametrize("entry", KERNELS, ids=str)
def test_no_toolchain_fails_before_anything_changes(entry, missing, unbuilt, tmp_path):
    unbuilt.setenv("PATH", path_without(tmp_path, *missing))
    ps = [torch.randn(s).requires_grad_() for s in SHAPES]
    opt = made(entry, entry.cls)(ps, fused=True, **entry.options)
    for p in ps:
        p.grad = torch.randn(p.shape)
    before = snapshot(ps, opt)
    with pytest.raises(fused.FusedUnavailable) as error:
        opt.step()
    message = str(error.value)
    assert len(message) < 400 and "foreach=True" in message
    assert ("C++ compiler" in message) == ("c++" in missing)
    assert ("ninja" in message) == ("ninja" in missing)
    for p, p0, g0, s0 in zip(ps, *before):  # nothing changed, no state was made
        assert torch.equal(p.detach(), p0) and torch.equal(p.grad, g0)
        assert opt.state.get(p, {}).keys() == s0.keys()
        assert all(torch.equal(opt.state[p][k], v) for k, v in s0.items())
    opt.param_groups[0]["fused"] = False  # what the message offers works
    opt.step()
