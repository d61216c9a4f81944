"""optim_nb.X as a drop-in for torch.optim.X: everything around step() that training code relies on.

Every test runs the same code with torch's class and with ours and requires the same outcome,
bit for bit (NaN-aware where NaN appears): checkpoints both ways, lr schedulers, GradScaler,
hooks, zero_grad, closures, copies, parameter groups, every kind of parameter, sparse gradients.
The optimizers and their options come from the registry (`optim_nb.registry`); signature and bad
input are in tests/test_generic.py.
"""
import copy
import io
import pickle
import warnings

import pytest
import torch
from torch.optim import lr_scheduler as L
from torch.optim import swa_utils
from torch.optim.optimizer import register_optimizer_step_post_hook

from optim_nb.testing import assert_same as same, batches, outcome, same_outcome, small_model
from registry_options import ENTRIES, fitting, for_tests, made, shaped

NAN, INF = float("nan"), float("inf")
case_param = pytest.mark.parametrize("case", ENTRIES, ids=str)


def cls_of(case, impl):
    "The class of `impl`, as the tests build it from a model (matrices only for a '2-D' entry: for_tests)."
    return for_tests(case, case.cls if impl == "ours" else case.reference)


def groups(model, case):
    "Two parameter groups, the second with half the learning rate."
    return [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": case.options["lr"] * 0.5}]


def loss_of(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def make(case, impl, model, **override):
    return cls_of(case, impl)(groups(model, case), **{**case.options, **override})


def train(model, opt, data):
    for batch in data:
        opt.zero_grad()
        loss_of(model, batch).backward()
        opt.step()


def both(run):
    "run('ours') and run('theirs'); require equal results; return them."
    ours, theirs = run("ours"), run("theirs")
    same(ours, theirs, "ours vs torch")
    return ours, theirs


# ------------------------------------------------------------------ 2. checkpoints

@case_param
@pytest.mark.parametrize("first,second", [("theirs", "ours"), ("ours", "theirs"), ("ours", "ours")],
                         ids=["torch-to-ours", "ours-to-torch", "ours-to-ours"])
def test_checkpoint_resumes_across_implementations(case, first, second):
    """Train with `first`, save model and optimizer with torch.save, load into `second` built on a
    fresh model, go on: the same parameters and state as torch.optim trained without a break."""
    data = batches(8)
    reference = small_model()
    ref_opt = make(case, "theirs", reference)
    train(reference, ref_opt, data)

    model = small_model()
    opt = make(case, first, model)
    train(model, opt, data[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)  # plain data: no optim_nb class inside

    resumed = small_model(seed=123)
    resumed.load_state_dict(checkpoint["model"])
    opt2 = make(case, second, resumed)
    opt2.load_state_dict(checkpoint["optimizer"])
    same(opt2.state_dict(), opt.state_dict(), "state after loading")
    train(resumed, opt2, data[4:])
    same(params_of(resumed), params_of(reference), "parameters")
    same(opt2.state_dict(), ref_opt.state_dict(), "optimizer state")


def _layout(model, how, case):
    """Parameter groups that do not fit the two groups of `groups()` (of the parameters the entry
    takes: for a '2-D' entry the matrices, and an extra matrix where one is added)."""
    first, second = fitting(case, model[0].parameters()), fitting(case, model[2].parameters())
    extra = torch.nn.Parameter(torch.zeros(shaped(case, 3)))
    return {"one group fewer": [{"params": first + second}],
            "one group more": [{"params": first}, {"params": second[:1]}, {"params": second[1:] or [extra]}],
            "one param fewer": [{"params": first}, {"params": second[:-1]}],
            "one param more": [{"params": first}, {"params": second + [extra]}]}[how]


def _snapshot(opt):
    "Everything load_state_dict could change: state by parameter identity, and the groups."
    state = {id(p): copy.deepcopy(s) for p, s in opt.state.items()}
    param_groups = [{k: ([id(p) for p in v] if k == "params" else copy.deepcopy(v)) for k, v in g.items()}
                    for g in opt.param_groups]
    return state, param_groups


@case_param
@pytest.mark.parametrize("how", ["one group fewer", "one group more", "one param fewer", "one param more"])
def test_a_checkpoint_that_does_not_fit_is_refused_and_changes_nothing(case, how):
    def run(impl):
        source_model = small_model(seed=5)
        source = made(case, case.reference)(_layout(source_model, how, case), **case.options)
        train(source_model, source, batches(2, seed=7))
        model = small_model()
        opt = make(case, impl, model)
        train(model, opt, batches(2))
        before = _snapshot(opt)
        error = outcome(lambda: opt.load_state_dict(source.state_dict()))
        same(_snapshot(opt), before, "optimizer after the refused load")
        train(model, opt, batches(2, seed=3))  # and it still trains as before
        return error, params_of(model), opt.state_dict()
    ours, theirs = both(run)
    assert ours[0][0] == "error" and ours[0][1] is ValueError, ours[0]
    assert "parameter group" in ours[0][2]


@case_param
def test_a_checkpoint_from_an_older_torch_loads(case):
    """Checkpoints written by older torch versions lack the group keys added since (torch's
    __setstate__ fills them in) and may hold `step` as a Python number (before torch 1.12)."""
    source_model = small_model()
    source = make(case, "theirs", source_model)
    train(source_model, source, batches(3))
    old = source.state_dict()
    probe = make(case, "theirs", small_model())
    restored = set()
    for key in old["param_groups"][0]:  # the keys torch restores when a checkpoint lacks them
        if key == "params":
            continue
        trial = copy.deepcopy(old)
        for g in trial["param_groups"]:
            del g[key]
        if outcome(lambda: probe.load_state_dict(trial))[0] == "ok" and key in probe.param_groups[0]:
            restored.add(key)
    for g in old["param_groups"]:
        for key in restored:
            del g[key]
    for s in old["state"].values():
        if "step" in s:
            s["step"] = float(s["step"])
    if not restored and not any("step" in s for s in old["state"].values()):
        pytest.skip(f"torch's {case.name} restores no group key and keeps no step: no older form to load")
    assert restored, "torch restores no key: nothing to test"

    def run(impl):
        model = small_model()
        model.load_state_dict(source_model.state_dict())
        opt = make(case, impl, model)
        loaded = outcome(lambda: opt.load_state_dict(copy.deepcopy(old)))
        trained = outcome(lambda: train(model, opt, batches(3, seed=9)))
        return loaded, trained, params_of(model), outcome(opt.state_dict)
    ours, theirs = run("ours"), run("theirs")
    same_outcome(ours[0], theirs[0], f"loading a checkpoint without {sorted(restored)}")
    same_outcome(ours[1], theirs[1], "training after loading it")
    same(ours[2:], theirs[2:], "ours vs torch")


# ------------------------------------------------------------------ 3. tools: schedulers

SCHEDULERS = {
    "LambdaLR": lambda o: L.LambdaLR(o, lambda s: 1 / (1 + s)),
    "MultiplicativeLR": lambda o: L.MultiplicativeLR(o, lambda s: 0.9),
    "StepLR": lambda o: L.StepLR(o, step_size=3, gamma=0.5),
    "MultiStepLR": lambda o: L.MultiStepLR(o, milestones=[2, 5, 9], gamma=0.3),
    "ConstantLR": lambda o: L.ConstantLR(o, factor=0.25, total_iters=4),
    "LinearLR": lambda o: L.LinearLR(o, start_factor=0.1, total_iters=6),
    "ExponentialLR": lambda o: L.ExponentialLR(o, gamma=0.8),
    "SequentialLR": lambda o: L.SequentialLR(
        o, [L.LinearLR(o, start_factor=0.1, total_iters=4), L.CosineAnnealingLR(o, T_max=8)], milestones=[4]),
    "CosineAnnealingLR": lambda o: L.CosineAnnealingLR(o, T_max=5, eta_min=1e-4),
    "ChainedScheduler": lambda o: L.ChainedScheduler([L.ExponentialLR(o, 0.9), L.StepLR(o, 4, 0.5)], optimizer=o),
    "ReduceLROnPlateau": lambda o: L.ReduceLROnPlateau(o, factor=0.5, patience=1, threshold=0.5),
    "CyclicLR": lambda o: L.CyclicLR(o, base_lr=1e-3, max_lr=0.05, step_size_up=3),
    "CosineAnnealingWarmRestarts": lambda o: L.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=1e-4),
    "OneCycleLR": lambda o: L.OneCycleLR(o, max_lr=0.05, total_steps=12),
    "PolynomialLR": lambda o: L.PolynomialLR(o, total_iters=8, power=2.0),
    "SWALR": lambda o: swa_utils.SWALR(o, swa_lr=0.01, anneal_epochs=3),
}


def test_every_torch_scheduler_is_covered():
    assert set(L.__all__) - {"LRScheduler"} <= set(SCHEDULERS)


def _hyper(group):
    return {k: group[k].clone() if isinstance(group[k], torch.Tensor) else group[k]
            for k in ("lr", "momentum", "betas") if k in group}


# every scheduler with a float lr; four of them with lr as a tensor (updated in place by fill_)
SCHEDULER_RUNS = [(n, "float") for n in SCHEDULERS] + [
    (n, "tensor") for n in ("LambdaLR", "OneCycleLR", "ReduceLROnPlateau", "CyclicLR")]


@case_param
@pytest.mark.parametrize("name,lr_kind", SCHEDULER_RUNS, ids=[f"{n}-{k}" for n, k in SCHEDULER_RUNS])
def test_lr_scheduler_matches_torch(case, name, lr_kind):

    def run(impl):
        model = small_model()
        lr = case.options["lr"]
        opt = make(case, impl, model, lr=torch.tensor(lr) if lr_kind == "tensor" else lr)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            made = outcome(lambda: SCHEDULERS[name](opt))
            if made[0] == "error":  # e.g. momentum cycling of an optimizer without momentum
                return made, [str(w.message) for w in caught]
            sched, trace = made[1], []
            for batch in batches(12):
                opt.zero_grad()
                loss = loss_of(model, batch)
                loss.backward()
                opt.step()
                sched.step(loss.item()) if name == "ReduceLROnPlateau" else sched.step()
                trace.append([_hyper(g) for g in opt.param_groups])
        messages = [str(w.message) for w in caught]
        return ("ok",), messages, trace, params_of(model), opt.state_dict(), sched.state_dict()
    ours, _ = both(run)
    if ours[0][0] == "ok" and name in ("OneCycleLR", "CyclicLR") and case.momentum_key:
        cycled = {str(step[0][case.momentum_key]) for step in ours[2]}
        assert len(cycled) > 2, f"{case.momentum_key} was not cycled: {cycled}"


# ------------------------------------------------------------------ 3. tools: AMP, hooks, …

@case_param
def test_grad_scaler_skips_a_step_with_inf_or_nan_like_torch(case):
    def run(impl):
        model = small_model()
        opt = make(case, impl, model)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2)
        trace = []
        for i, batch in enumerate(batches(7)):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_of(model, batch).float()
            loss = loss * {2: INF, 4: NAN}.get(i, 1.0)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            before = params_of(model), copy.deepcopy(opt.state_dict())
            scaler.step(opt)
            scaler.update()
            skipped = i in (2, 4)
            if skipped:  # the step was not taken: nothing moved, no state changed
                same((params_of(model), opt.state_dict()), before, f"{impl}, skipped step {i}")
            else:
                assert not torch.equal(params_of(model)[0], before[0][0])
            trace.append((params_of(model), opt.state_dict(), scaler.get_scale()))
        return trace
    ours, _ = both(run)
    scales = [t[2] for t in ours]
    assert scales[2] == scales[1] / 2 and scales[4] == scales[3] / 2, scales


@case_param
def test_step_and_state_dict_hooks_run_like_torchs(case):
    def run(impl):
        model = small_model()
        opt = make(case, impl, model)
        log, inject = [], []

        def closure():
            log.append("closure from pre-hook")
            opt.zero_grad()
            loss = loss_of(model, batches(1, seed=4)[0])
            loss.backward()
            return loss

        def step_pre(o, args, kwargs):
            log.append(("step_pre", o is opt, params_of(model), len(args), dict(kwargs)))
            if inject:  # replace the arguments: step() runs the hook's closure
                return args, {"closure": closure}

        def state_dict_post(o, sd):
            log.append(("state_dict_post", sorted(sd)))
            sd["note"] = "added by a hook"
            return sd

        def load_pre(o, sd):
            log.append(("load_pre", sd.get("note")))
            sd = dict(sd)
            sd.pop("note")
            return sd

        handles = [
            opt.register_step_pre_hook(step_pre),
            opt.register_step_post_hook(lambda o, a, k: log.append(("step_post", params_of(model)))),
            opt.register_state_dict_pre_hook(lambda o: log.append(("state_dict_pre", len(o.state)))),
            opt.register_state_dict_post_hook(state_dict_post),
            opt.register_load_state_dict_pre_hook(load_pre),
            opt.register_load_state_dict_post_hook(lambda o: log.append(("load_post", len(o.state)))),
            register_optimizer_step_post_hook(
                lambda o, a, k: log.append(("global_post", type(o).__name__))),
        ]
        try:
            train(model, opt, batches(3))
            sd = opt.state_dict()
            assert sd["note"] == "added by a hook"
            opt.load_state_dict(sd)
            inject.append(True)
            log.append(("step returned", opt.step()))
            handles[0].remove()
            train(model, opt, batches(1))
        finally:
            handles[-1].remove()
        return log, params_of(model), opt.state_dict()
    ours, _ = both(run)
    assert "closure from pre-hook" in ours[0]


@case_param
@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_like_torch(case, set_to_none):
    def run(impl):
        model = small_model()
        opt = make(case, impl, model)
        seen = []
        for i, batch in enumerate(batches(6)):
            old = [p.grad for p in model.parameters()]
            opt.zero_grad(set_to_none=set_to_none)
            seen.append([(p.grad is None, p.grad is o) for p, o in zip(model.parameters(), old)])
            if i != 3:  # step 3 has no backward: no gradient (skipped) or zero gradients (a step)
                loss_of(model, batch).backward()
            opt.step()
            seen.append((params_of(model), opt.state_dict()))
        return seen
    both(run)


@case_param
def test_closure_like_torch(case):
    def run(impl):
        model = small_model()
        opt = make(case, impl, model)
        calls, losses = [], []
        for batch in batches(4):
            def closure():
                calls.append(torch.is_grad_enabled())
                opt.zero_grad()
                loss = loss_of(model, batch)
                loss.backward()
                return loss
            with torch.no_grad():  # step enables grad for the closure, as torch does
                losses.append(opt.step(closure).detach())
        return calls, losses, params_of(model), opt.state_dict()
    ours, _ = both(run)
    assert ours[0] == [True] * 4


@case_param
@pytest.mark.parametrize("how", ["deepcopy", "pickle", "torch.save", "pickled state_dict"])
def test_a_copied_optimizer_goes_on_like_the_original(case, how):
    data = batches(6)

    def copied(obj):
        if how == "pickled state_dict":  # a new optimizer on a copy of the model, then its state
            model, opt = obj
            model2 = copy.deepcopy(model)
            opt2 = for_tests(case, type(opt))(groups(model2, case), **case.options)
            opt2.load_state_dict(pickle.loads(pickle.dumps(opt.state_dict())))
            return model2, opt2
        if how == "deepcopy":
            return copy.deepcopy(obj)
        if how == "pickle":
            return pickle.loads(pickle.dumps(obj))
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=False)

    def run(impl):
        model = small_model()
        opt = make(case, impl, model)
        train(model, opt, data[:3])
        model2, opt2 = copied((model, opt))
        assert type(opt2) is type(opt)
        assert all(p is q for p, q in zip(fitting(case, model2.parameters()),
                                          (p for g in opt2.param_groups for p in g["params"])))
        train(model, opt, data[3:])
        train(model2, opt2, data[3:])
        same(params_of(model2), params_of(model), f"{impl}: copy vs original")
        same(opt2.state_dict(), opt.state_dict(), f"{impl}: copy vs original")
        return params_of(model2), opt2.state_dict()
    theirs = outcome(lambda: run("theirs"))
    if theirs[0] == "error":
        # lion-pytorch's Lion keeps decoupled_wd and _init_lr in attributes that torch's __getstate__ drops, so
        # its copies cannot step; optim_nb's Lion pickles them and goes on like the original (checked in run)
        assert case.name == "Lion" and how != "pickled state_dict" and theirs[1] is AttributeError, theirs
        run("ours")
    else:
        same(run("ours"), theirs[1], "ours vs torch")


@case_param
def test_add_param_group_mid_training_like_torch(case):
    def run(impl):
        model = small_model()
        opt = cls_of(case, impl)(model[0].parameters(), **case.options)
        train(model, opt, batches(3))
        opt.add_param_group({"params": fitting(case, model[2].parameters()), "lr": case.options["lr"] * 0.5})
        duplicate = outcome(lambda: opt.add_param_group({"params": [model[0].weight]}))
        assert duplicate[0] == "error" and len(opt.param_groups) == 2
        trained = outcome(lambda: train(model, opt, batches(3, seed=5)))
        return duplicate, trained, params_of(model), opt.state_dict()
    both(run)


# ------------------------------------------------------------------ 4. parameters of every kind

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128]


def _kinds(dtype, gen):
    def rand(*shape):
        return torch.randn(shape, generator=gen, dtype=dtype)
    return {
        "0-dim": rand(),
        "empty": rand(0, 3),
        "matrix": rand(4, 3),
        "transposed": rand(3, 5).t(),         # a non-contiguous view
        "strided": rand(4, 6)[:, ::2],        # another one, with a gap in memory
        "no grad": rand(3),                   # never gets a gradient: skipped, no state
    }


@case_param
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_kind_of_parameter_like_torch(case, dtype):
    "The same numbers, or torch's error; where torch refuses one kind, the same for the other kinds."
    def run(impl, leave_out=()):
        gen = torch.Generator().manual_seed(0)
        params = {k: v.requires_grad_() for k, v in _kinds(dtype, gen).items() if k not in leave_out}
        assert not params["transposed"].is_contiguous() and not params["strided"].is_contiguous()
        opt = cls_of(case, impl)(list(params.values()), **case.options)
        trace = []
        for step in range(4):
            for name, p in params.items():
                if name != "no grad":  # a gradient with the parameter's own strides
                    p.grad = torch.empty_like(p).copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
            if step == 2:  # NaN and inf flow through the update as in torch
                params["matrix"].grad[0, 0] = NAN
                params["matrix"].grad[1, 2] = INF
            opt.step()
            trace.append(([p.detach().clone() for p in params.values()], opt.state_dict()))
        strides = [p.stride() for p in params.values()]
        state_strides = [[t.stride() for t in opt.state[p].values() if isinstance(t, torch.Tensor) and t.dim()]
                         for p in params.values()]
        return trace, strides, state_strides
    ours = outcome(lambda: run("ours"))
    same_outcome(ours, outcome(lambda: run("theirs")), "every kind")
    if ours[0] == "error" and not dtype.is_complex:  # Adafactor: RMS(θ) of an empty parameter divides by zero
        ours = outcome(lambda: run("ours", ["empty"]))
        same_outcome(ours, outcome(lambda: run("theirs", ["empty"])), "every kind but the empty one")
    if ours[0] == "ok":
        last, state = ours[1][0][-1][0], ours[1][0][-1][1]["state"]
        # in the matrix; or (Lion: torch's sign(NaN) is 0, the parameter does not move there) in the state
        assert last[2 if len(last) == 6 else 1].isnan().any() or any(
            t.isnan().any() for s in state.values() for t in s.values() if torch.is_tensor(t)), "the NaN test saw no NaN"


# ------------------------------------------------------------------ sparse gradients

@case_param
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sparse_gradients_like_torch(case, weight_decay):
    "Where torch takes sparse gradients, the same numbers; where it refuses, its error, and no change."
    def run(impl):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = cls_of(case, impl)(emb.parameters(), **{**case.options, "weight_decay": weight_decay})
        before = []

        def go():
            for step in range(4):
                opt.zero_grad()
                emb(torch.tensor([step, step + 1, 3])).pow(2).sum().backward()
                before.append((params_of(emb), copy.deepcopy(opt.state_dict())))
                opt.step()
        result = outcome(go)
        if result[0] == "error":
            # torch may leave its state half-updated after the error (Adagrad counts the step,
            # SGD adds an empty entry); ours must be exactly as before the refused step
            if impl == "ours":
                same((params_of(emb), opt.state_dict()), before[-1], "after a refused step")
            return result, params_of(emb)
        return result, params_of(emb), opt.state_dict()
    both(run)


def test_a_resumed_run_that_drops_the_optimizer_state_is_caught():
    data, case = batches(6), ENTRIES[0]
    reference = small_model()
    train(reference, make(case, "theirs", reference), data)
    model = small_model()
    train(model, make(case, "ours", model), data[:3])
    train(model, make(case, "ours", model), data[3:])  # a fresh optimizer: momentum lost
    with pytest.raises(AssertionError):
        same(params_of(model), params_of(reference))
