"""Every optimizer of the registry against its torch.optim class: each check written once.

Numbers (bit-identity on every path torch has, the fused kernel within its stated ulps), the
signature, defaults and errors, state, dtypes and complex parameters, differentiable steps.
What is specific to one optimizer stays in its own file (tests/test_<name>.py).

Which checks apply is read from torch's signature (`takes`: a class without `foreach`,
`differentiable` or `capturable` skips the checks of that flag, and is never passed it) and from
the entry (`shaped`, `for_tests`: an optimizer of matrices only is given matrices).
"""
import inspect
import math
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from optim_nb.testing import (OpLog, assert_matches_torch, assert_same, foreach_vs_loop, fused_vs_loop, outcome,
                              same_outcome, small_model, train)
from registry_options import (DTYPES, ENTRIES, accepts, each_entry, flags, for_tests, learning_rate, made, options,
                              shaped, takes)

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------ bit-identity with torch

@each_entry
@settings(max_examples=50)
@given(data=st.data(), dtype=DTYPES)
def test_bit_identical_to_torch_over_the_option_space(entry, data, dtype):
    "Two groups of drawn options, float32/float64, lr as a float or a tensor (and betas as tensors)."
    first, second = data.draw(options(entry)), data.draw(options(entry))
    if "betas" in first and data.draw(st.booleans(), "betas as tensors"):
        first["betas"] = tuple(torch.tensor(b) for b in first["betas"])
    second["lr"] = data.draw(learning_rate(entry, tensor=False))
    assert_matches_torch(for_tests(entry, entry.cls), for_tests(entry, entry.reference), [first, second], dtype=dtype,
                         lr=data.draw(learning_rate(entry)))


@each_entry
@settings(max_examples=25)
@given(data=st.data(), dtype=DTYPES)
def test_foreach_bit_identical_to_torchs_foreach(entry, data, dtype):
    if not takes(entry, "foreach"):
        pytest.skip("torch has no foreach path")
    tensor_lr = accepts(made(entry, entry.reference), lr=torch.tensor(0.01), foreach=True)
    first, second = data.draw(options(entry)), data.draw(options(entry))
    second["lr"] = data.draw(learning_rate(entry, tensor=False))
    assert_matches_torch(made(entry, entry.cls), made(entry, entry.reference), [first, second], dtype=dtype,
                         lr=data.draw(learning_rate(entry, tensor=tensor_lr)), foreach=True)


@each_entry
@settings(max_examples=6)
@given(data=st.data(), dtype=DTYPES)
def test_foreach_gives_the_loops_bits_and_state_layout(entry, data, dtype):
    "The loop's bits, or where torch's own foreach path differs from its loop (Adafactor), torch's distance."
    if not takes(entry, "foreach"):
        pytest.skip("torch has no foreach path")
    groups = [data.draw(options(entry)), data.draw(options(entry))]
    ours = foreach_vs_loop(made(entry, entry.cls), groups, dtype=dtype, lr=entry.options["lr"])
    assert ours == 0 or ours == foreach_vs_loop(made(entry, entry.reference), groups, dtype=dtype, lr=entry.options["lr"])


@each_entry
def test_the_comparison_can_fail(entry):
    def other_lr(params, **kw):
        return entry.cls(params, **{**kw, "lr": kw["lr"] * 1.1})
    with pytest.raises(AssertionError):
        assert_matches_torch(for_tests(entry, other_lr), for_tests(entry, entry.reference), [{}, {}], **entry.options)


@each_entry
def test_foreach_is_the_path_taken_and_the_cpu_default_is_the_loop(entry):
    if not takes(entry, "foreach"):
        pytest.skip("torch has no foreach path")
    params = [p for p in small_model().parameters() if p.dim() == 2 or entry.shapes == "any"]
    for foreach, expected in [(True, "foreach"), (False, "loop"), (None, "loop")]:
        opt = entry.cls(params, foreach=foreach)
        assert opt.path(opt.param_groups[0], params) == expected
    assert entry.cls.update_foreach.__module__ == "optim_nb.foreach"


def _mixed_run(cls, entry, steps=8, **options):
    "One group holding float32, float64 and complex64 tensors: foreach groups them by dtype."
    torch.manual_seed(0)
    ps = [torch.randn(shaped(entry, 3), requires_grad=True),
          torch.randn(shaped(entry, 2, 2), dtype=torch.float64, requires_grad=True),
          torch.randn(shaped(entry, 4), dtype=torch.complex64, requires_grad=True)]
    opt = made(entry, cls)(ps, foreach=True, **options)
    for _ in range(steps):
        opt.zero_grad()
        sum((p.abs() ** 2 + p.real).sum().double() for p in ps).backward()
        opt.step()
    return [p.detach() for p in ps], opt.state_dict()


@each_entry
@pytest.mark.parametrize("variant", ["defaults", "all state, maximize"])
def test_foreach_groups_by_dtype_and_handles_complex_as_torch(entry, variant):
    "The same numbers, or (Adafactor: no complex parameters) the same error."
    if not takes(entry, "foreach"):
        pytest.skip("torch has no foreach path")
    opts = {"lr": entry.options["lr"]} if variant == "defaults" else {**entry.options, **flags(entry, maximize=True)}
    if accepts(made(entry, entry.reference), lr=torch.tensor(0.01), foreach=True):
        opts["lr"] = torch.tensor(opts["lr"])
    same_outcome(outcome(lambda: _mixed_run(entry.cls, entry, **opts)),
                 outcome(lambda: _mixed_run(entry.reference, entry, **opts)))


# Where torch has no multi-tensor path but optim_nb has one (Muon: a batched Newton–Schulz, which
# rounds differently from the per-matrix products), it is held to the entry's stated tolerance
OWN_FOREACH = [e for e in ENTRIES if not takes(e, "foreach") and "foreach" in inspect.signature(e.cls).parameters]


@pytest.mark.parametrize("entry", OWN_FOREACH, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_our_foreach_where_torch_has_none_stays_within_its_tolerance(entry, dtype):
    assert entry.foreach_tolerance is not None, f"{entry}: state the bound of its foreach path"
    shapes = [(16, 24), (16, 24), (24, 16), (9, 9), (16, 24)]     # repeated shapes are batched together
    assert all(shaped(entry, *s) == s for s in shapes)
    for seed in range(4):
        r = fused_vs_loop(entry.cls, shapes, steps=4, dtype=dtype, seed=seed, flag="foreach", **entry.options)
        assert r["relative"] <= entry.foreach_tolerance, (seed, r["relative"])
    opt = entry.cls([torch.zeros(shapes[0], requires_grad=True)])
    assert opt.path(opt.param_groups[0], opt.param_groups[0]["params"]) == "loop"   # opt-in: torch's default


def test_an_entry_with_our_own_foreach_states_its_tolerance():
    assert [e.name for e in OWN_FOREACH] == ["Muon"]
    assert all(e.foreach_tolerance is None for e in ENTRIES if e not in OWN_FOREACH)


# ------------------------------------------------------------------ the fused kernel

SHAPES = [(256, 300), (70_000,), (7, 3)]  # a matrix and a vector split between threads, one small tensor
FUSED = [(e, i) for e in ENTRIES for i in range(len(e.fused_cases))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("entry,case", FUSED, ids=[f"{e}-{i}" for e, i in FUSED])
def test_fused_within_the_stated_ulps_of_the_loop_one_kernel_call_per_step(entry, case, dtype):
    r = fused_vs_loop(made(entry, entry.cls), SHAPES, steps=5, dtype=dtype, **entry.fused_cases[case])
    assert r["ulps"] <= entry.fused_ulps, r
    assert r["ops"] == [f"optim_nb.{entry.kernel}.default"]  # a changing lr: no new work, no allocation


# ------------------------------------------------------------------ signature, defaults, bad input

def _described(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


@each_entry
def test_signature_defaults_and_unknown_arguments_are_torchs(entry):
    ours, theirs = _described(entry.cls), _described(entry.reference)
    # optim_nb adds `fused` (RMSprop, Adadelta) where torch has none, as a trailing argument
    added = ours[len(theirs):]
    assert ours[:len(theirs)] == theirs and all(p[0] in ("foreach", "fused") and p[2] is None for p in added)
    w = [torch.zeros(shaped(entry, 1), requires_grad=True)]
    assert entry.cls(w).defaults == entry.reference(w).defaults  # no `fused` key unless asked for
    for name, _, _ in added:
        opt = entry.cls(w, **{name: True})
        # in the groups, as torch keeps its flags; or, where the reference's multi-tensor path is a class of
        # its own (Lion: Entry.foreach_source), out of them as there, and the path taken
        assert opt.param_groups[0].get(name) is True or (
            entry.foreach_source is not None and name not in opt.param_groups[0] and opt.path(opt.param_groups[0], w) == name)
    everyones = {name for e in ENTRIES for name in inspect.signature(e.reference).parameters} | {"lr_scheduler"}
    for name in sorted(everyones - set(inspect.signature(entry.reference).parameters) - {p[0] for p in added}):
        same_outcome(outcome(lambda: entry.cls(w, **{name: 0.5})), outcome(lambda: entry.reference(w, **{name: 0.5})), name)


def _value_named(value, message):
    "Does torch's message name the offending value? (tensors and flags: it names the problem)"
    if isinstance(value, float):
        return str(value) in message
    if isinstance(value, tuple) and all(isinstance(v, float) for v in value):
        bad = [v for v in value if not 0.0 <= v < 1.0 or math.isnan(v)]
        return not bad or any(str(v) in message for v in bad)
    return True


def _is_stricter(entry, kwargs):
    "Is `kwargs` one of the inputs we refuse on purpose although torch accepts it? (NaN equals NaN)"
    return any(outcome(lambda: assert_same(s, kwargs))[0] == "ok" for s in entry.stricter)


BAD = [(e, b) for e in ENTRIES for b in e.bad + e.stricter]


@pytest.mark.parametrize("entry,bad", BAD, ids=[f"{e}-{','.join(f'{k}={v}' for k, v in b.items())}" for e, b in BAD])
def test_bad_hyperparameter_raises_torchs_error(entry, bad):
    w = [torch.zeros(shaped(entry, 2), requires_grad=True)]
    if any(bad is s for s in entry.stricter):  # torch accepts this value and fails later or never; we refuse it
        entry.reference(w, **bad)
        with pytest.raises(ValueError) as ours:
            entry.cls(w, **bad)
        assert all(_value_named(v, str(ours.value)) for v in bad.values()), str(ours.value)
        return
    with pytest.raises(Exception) as theirs:
        entry.reference(w, **bad)
    # a bare `assert` of the reference (Lion's) has no message to match: ours must name the value (below)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value)) if str(theirs.value) else None) as ours:
        entry.cls(w, **bad)
    for key, value in bad.items():
        assert _value_named(value, str(ours.value)), f"{key}={value} not named in {ours.value}"


SWEEP = [0.0, -0.0, 1.0, -1e-12, INF, -INF, NAN, 1, 0]


def _same_or_named(ours, theirs, where):
    "`same_outcome`, except that a bare `assert` of the reference (Lion's: no message) is matched by the same type with a message."
    if theirs[0] == "error" and theirs[1:] == (AssertionError, "") and ours[0] == "error":
        assert ours[1] is AssertionError and ours[2], f"{where}: ours raised {ours[1:]}"
        return
    same_outcome(ours, theirs, where)


@each_entry
def test_accepts_and_rejects_exactly_what_torch_does(entry):
    "Every numeric argument and betas, over edge values: same acceptance, same error, same defaults."
    w = [torch.zeros(shaped(entry, 2), requires_grad=True)]
    numeric = [p.name for p in inspect.signature(entry.reference).parameters.values()
               if isinstance(p.default, (int, float)) and not isinstance(p.default, bool)]
    trials = [{name: v} for name in numeric for v in SWEEP]
    if "betas" in inspect.signature(entry.reference).parameters:
        trials += [{"betas": b} for b in [(0.0, 0.0), (0.5, 0.999999), (INF, 0.9), (0.9, -INF),
                                          (torch.tensor(0.9), torch.tensor(0.99))]]
    assert len(trials) >= 20
    for kwargs in trials:
        if _is_stricter(entry, kwargs):
            continue  # checked in test_bad_hyperparameter_raises_torchs_error
        _same_or_named(outcome(lambda: entry.cls(w, **kwargs).defaults),
                       outcome(lambda: entry.reference(w, **kwargs).defaults), str(kwargs))


@each_entry
def test_a_bad_param_group_is_not_added(entry):
    key, value = next(((k, v) for b in entry.bad for k, v in b.items()
                       if len(b) == 1 and k != "lr" and isinstance(v, float) and v < 0),
                      next(((k, v) for b in entry.bad for k, v in b.items()  # Lion: only betas out of range
                            if len(b) == 1 and k != "lr" and isinstance(v, tuple)), (None, None)))
    if key is None:
        pytest.skip("its reference checks no value but lr (AdamWScheduleFree: none at all)")
    w = lambda: [torch.zeros(shaped(entry, 1), requires_grad=True)]  # noqa: E731
    with pytest.raises(Exception) as theirs:
        entry.reference(w(), **{key: value})
    opt = entry.cls(w(), **entry.options)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value)) or None):  # torch's ValueError, Lion's AssertionError
        opt.add_param_group({"params": w(), key: value})
    assert len(opt.param_groups) == 1


def _first_step(cls, dtype=torch.float32, later=None, shape=(3,), **options):
    "What the first step does (and the parameter afterwards): its result or its error."
    p = torch.zeros(shape, dtype=dtype, requires_grad=dtype.is_floating_point or dtype.is_complex)
    made = outcome(lambda: cls([p], **options))
    if made[0] == "error":
        return made
    opt = made[1]
    opt.param_groups[0].update(later or {})  # as a scheduler might
    p.grad = torch.ones_like(p)
    return outcome(opt.step), p.detach().clone(), opt.state_dict()


_T = torch.tensor
STEP_FLAGS = {
    "capturable": dict(capturable=True), "capturable, foreach": dict(capturable=True, foreach=True),
    "capturable, foreach, tensor lr": dict(capturable=True, foreach=True, lr=_T(0.01)),
    "capturable, foreach, tensor betas": dict(capturable=True, foreach=True, betas=(_T(0.9), _T(0.999))),
    "foreach, differentiable": dict(foreach=True, differentiable=True),
    "foreach, tensor lr set later": dict(foreach=True, later=dict(lr=_T(0.1))),
    "foreach, tensor betas set later": dict(foreach=True, later=dict(betas=(_T(0.9), _T(0.999)))),
    "fused, complex": dict(fused=True, dtype=torch.complex64),
    "fused, int64": dict(fused=True, dtype=torch.int64),
    # λ as a tensor: torch passes it as `alpha` (a TypeError if it requires grad), except SGD's addcmul_
    "tensor weight_decay": dict(weight_decay=_T(0.1)),
    "tensor weight_decay that requires grad": dict(weight_decay=_T(0.1, requires_grad=True)),
}


@each_entry
@pytest.mark.parametrize("flags", list(STEP_FLAGS))
def test_errors_at_the_first_step_are_torchs(entry, flags):
    "Refusals that torch makes at the first step: the same error, and nothing moved."
    kwargs = dict(STEP_FLAGS[flags])
    if "fused" in flags and not entry.reference_fused:
        pytest.skip("torch has no fused path (tests/test_fused.py checks ours)")
    arguments = set(kwargs) - {"dtype", "later"} | set(kwargs.get("later", {}))
    if not all(takes(entry, name) for name in arguments):
        pytest.skip(f"torch's {entry.name} has no {', '.join(sorted(n for n in arguments if not takes(entry, n)))}")
    kwargs["shape"] = shaped(entry, 3)
    ours, theirs = _first_step(made(entry, entry.cls), **kwargs), _first_step(made(entry, entry.reference), **kwargs)
    same_outcome(ours[0], theirs[0], flags)
    if ours[0][0] == "error" and len(ours) > 1:
        assert_same(ours[1], torch.zeros_like(ours[1]), "the parameter after a refused step")
    else:
        assert_same(ours, theirs, flags)


# ------------------------------------------------------------------ state

@each_entry
@pytest.mark.parametrize("variant", ["defaults", "all state"])
def test_state_names_and_creation_match_torch(entry, variant):
    """Nothing (or torch's eager state) before the first step; then torch's names, in torch's order
    (for a 4×3 parameter, as the registry states them)."""
    opts = {} if variant == "defaults" else entry.options

    def run(cls):
        torch.manual_seed(0)
        a, frozen = torch.randn(4, 3, requires_grad=True), torch.zeros(2, 2, requires_grad=True)
        opt = made(entry, cls)([a, frozen], **opts)
        before = opt.state_dict()
        a.pow(2).sum().backward()
        opt.step()
        return before, [list(s) for s in opt.state.values()], opt.state_dict()
    ours = run(entry.cls)
    assert_same(ours, run(entry.reference))
    if variant == "all state":
        assert ours[1][0] == list(entry.state)


@each_entry
def test_step_dtype_follows_the_default_dtype(entry):
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        _, ours = train(lambda m: for_tests(entry, entry.cls)(m.parameters(), **entry.options),
                        dtype=torch.float64, steps=2)
        _, theirs = train(lambda m: for_tests(entry, entry.reference)(m.parameters(), **entry.options),
                          dtype=torch.float64, steps=2)
        assert_same(ours.state_dict(), theirs.state_dict())
        if entry.kernel:  # the fused path counts in float32, as torch's fused optimizers do
            w = torch.zeros(2, requires_grad=True)
            w.grad = torch.ones(2)
            opt = made(entry, entry.cls)([w], fused=True)
            opt.step()
            assert opt.state[w].get("step", torch.zeros((), dtype=torch.float32)).dtype == torch.float32
    finally:
        torch.set_default_dtype(old)


@each_entry
@pytest.mark.parametrize("foreach", [False, True])
def test_the_gradient_is_left_as_torch_leaves_it(entry, foreach):
    "RMSprop's rule leaves `grad` alone; SGD's Nesterov multi-tensor rule writes into it, as torch's does."
    if foreach and not takes(entry, "foreach"):
        pytest.skip("torch has no foreach path")
    def grads(cls):
        model, _ = train(lambda m: for_tests(entry, cls)(m.parameters(), **entry.options,
                                                        **flags(entry, maximize=True, foreach=foreach)), steps=3)
        return [p.grad for p in model.parameters()]
    assert_same(grads(entry.cls), grads(entry.reference))


# ------------------------------------------------------------------ complex parameters, differentiable steps

@each_entry
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_complex_parameters_match_torch(entry, dtype, foreach):
    "A complex group beside a real one that maximizes, with all of the entry's state; or torch's refusal."
    if foreach and not takes(entry, "foreach"):
        pytest.skip("torch has no foreach path")
    def run(cls):
        torch.manual_seed(0)
        z = torch.randn(shaped(entry, 5), dtype=dtype, requires_grad=True)
        w = torch.randn(shaped(entry, 3), requires_grad=True)
        opt = made(entry, cls)([{"params": [z]}, {"params": [w], **flags(entry, maximize=True)}],
                               **flags(entry, foreach=foreach), **entry.options)
        for _ in range(8):
            opt.zero_grad()
            ((z - 1j) * (z - 1j).conj()).real.sum().add(w.sin().sum()).backward()
            opt.step()
        return z.detach(), w.detach(), opt.state_dict()
    same_outcome(outcome(lambda: run(entry.cls)), outcome(lambda: run(entry.reference)))


@each_entry
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("variant", ["defaults", "all state, maximize"])
def test_differentiable_steps_give_torchs_values_and_gradients(entry, variant, dtype):
    """Three differentiable steps of a non-leaf parameter: the same values, state and gradients
    w.r.t. the start (and w.r.t. lr, where torch's rule takes a tensor lr that requires grad)."""
    if not takes(entry, "differentiable"):
        pytest.skip("torch has no differentiable steps")
    opts = {} if variant == "defaults" else {**entry.options, **flags(entry, maximize=True)}

    def run(cls, lr_tensor):
        lr = torch.tensor(entry.options["lr"], dtype=dtype, requires_grad=True)
        w0 = torch.tensor([1.0, -2.0, 0.5], dtype=dtype, requires_grad=True)
        w = w0.clone()  # a non-leaf parameter, as differentiable optimisation needs
        opt = cls([w], **{**opts, "lr": lr if lr_tensor else entry.options["lr"]}, differentiable=True)
        for _ in range(3):
            w.grad = 3 * w - 1  # a gradient that is itself differentiable
            opt.step()
        # torch's own backward fails through some in-place state updates (centered RMSprop,
        # AMSGrad): then ours must fail alike
        grads = outcome(lambda: torch.autograd.grad(w.pow(2).sum(), (w0, lr) if lr_tensor else (w0,)))
        return w.detach(), opt.state_dict(), grads
    lr_tensor = outcome(lambda: run(entry.reference, True))[0] == "ok"
    ours, theirs = run(entry.cls, lr_tensor), run(entry.reference, lr_tensor)
    assert_same(ours[:2], theirs[:2])
    same_outcome(ours[2], theirs[2], "gradients")
    assert ours[2][0] == "error" or all((g != 0).any() for g in ours[2][1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@each_entry
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("capturable", [False, True])
def test_on_cuda_matches_torch(entry, foreach, capturable):
    "On a GPU, loop and multi-tensor paths, with capturable (lr as a tensor on the device) where torch has it."
    if (foreach and not takes(entry, "foreach")) or (capturable and not takes(entry, "capturable")):
        pytest.skip("torch has no such path")
    options = dict(entry.options, **flags(entry, foreach=foreach))
    if capturable:
        options.update(capturable=True, lr=torch.tensor(entry.options["lr"], device="cuda"))

    def run(cls):
        torch.manual_seed(0)
        ws = [torch.randn(shaped(entry, 16), device="cuda", requires_grad=True),
              torch.randn(3, 5, device="cuda", requires_grad=True)]
        built = outcome(lambda: made(entry, cls)(ws, **options))
        if built[0] == "error":
            return built
        for _ in range(10):
            built[1].zero_grad()
            sum(w.pow(2).sum() for w in ws).backward()
            built[1].step()
        return [w.detach() for w in ws], built[1].state_dict()
    assert_same(run(entry.cls), run(entry.reference))
