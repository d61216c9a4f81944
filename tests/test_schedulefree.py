"""Schedule-free SGD and AdamW against schedulefree 1.4.1: what the generic tests do not exercise.

The generic tests (tests/test_generic.py, tests/test_dropin.py) put the optimizers in training mode
once and never leave it; here the modes themselves: train()/eval() switched during training on both
paths, checkpoints saved in evaluation mode (as the reference asks) loaded both ways, and the
refusals of a step outside training mode.
"""
import io

import pytest
import torch

import optim_nb
from optim_nb.registry import REGISTRY
from optim_nb.testing import assert_same, batches, outcome, same_outcome, small_model

NAMES = ["SGDScheduleFree", "AdamWScheduleFree"]
OPTIONS = {"SGDScheduleFree": dict(lr=0.2, momentum=0.8, weight_decay=1e-2, warmup_steps=4, r=0.5, weight_lr_power=1.0),
           "AdamWScheduleFree": dict(lr=0.02, betas=(0.8, 0.99), weight_decay=1e-2, warmup_steps=4, r=0.5,
                                     weight_lr_power=1.0, eps=1e-6)}


def _train(opt, model, data, evaluate_every=3):
    "Train, switching to eval() and back every few steps; the parameters in eval mode each time."
    seen = []
    for t, (x, y) in enumerate(data, start=1):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if t % evaluate_every == 0:
            opt.eval()
            opt.eval()                      # a second call changes nothing
            seen.append([p.detach().clone() for p in model.parameters()])
            opt.train()
    return seen


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("foreach", [True, False, None])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_modes_switched_during_training_match_the_reference(name, foreach, dtype):
    entry = REGISTRY[name]

    def run(cls):
        model = small_model(dtype)
        groups = [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": OPTIONS[name]["lr"] / 3}]
        opt = cls(groups, foreach=foreach, **OPTIONS[name])
        opt.train()
        seen = _train(opt, model, batches(12, dtype=dtype))
        opt.eval()
        return seen, [p.detach() for p in model.parameters()], opt.state_dict()
    assert_same(run(entry.cls), run(entry.reference))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("direction", ["ours-to-theirs", "theirs-to-ours"])
def test_a_checkpoint_saved_in_eval_mode_resumes_both_ways(name, direction):
    entry = REGISTRY[name]
    first, second = (entry.cls, entry.reference) if direction == "ours-to-theirs" else (entry.reference, entry.cls)
    data = batches(10)

    def resumed(a, b):
        model = small_model()
        opt = a(model.parameters(), **OPTIONS[name])
        opt.train()
        _train(opt, model, data[:5])
        opt.eval()
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=True)
        model2 = small_model(seed=3)
        model2.load_state_dict(saved["model"])
        opt2 = b(model2.parameters(), **OPTIONS[name])
        opt2.load_state_dict(saved["optimizer"])
        assert opt2.param_groups[0]["train_mode"] is False
        opt2.train()
        _train(opt2, model2, data[5:])
        opt2.eval()
        return [p.detach() for p in model2.parameters()], opt2.state_dict()
    assert_same(resumed(first, second), resumed(entry.reference, entry.reference))


@pytest.mark.parametrize("name", NAMES)
def test_a_step_outside_training_mode_is_refused_as_the_reference_refuses_it(name):
    entry = REGISTRY[name]

    def attempts(cls):
        w = torch.ones(3, requires_grad=True)
        opt = cls([w], **OPTIONS[name])
        w.grad = torch.ones(3)
        before_train = outcome(opt.step)             # never put in training mode
        opt.train()
        opt.step()
        opt.eval()
        w.grad = torch.ones(3)
        after_eval = outcome(opt.step)               # evaluation mode again
        return before_train, after_eval, w.detach().clone(), opt.state_dict()
    ours, theirs = attempts(entry.cls), attempts(entry.reference)
    for a, b in zip(ours[:2], theirs[:2]):
        same_outcome(a, b)
        assert a[0] == "error" and a[1] is Exception
    assert_same(ours[2:], theirs[2:])


def test_the_mode_check_reads_the_first_group_only_as_the_reference():
    "The reference checks param_groups[0]['train_mode']; a second group in eval mode still steps."
    def run(cls):
        a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
        opt = cls([{"params": [a]}, {"params": [b]}], lr=0.1)
        opt.param_groups[0]["train_mode"] = True
        a.grad, b.grad = torch.ones(2), torch.ones(2)
        opt.step()
        return a.detach(), b.detach(), opt.state_dict()
    for name in NAMES:
        assert_same(run(REGISTRY[name].cls), run(REGISTRY[name].reference))


def test_optim_nb_does_not_import_the_reference():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, optim_nb; optim_nb.SGDScheduleFree; "
                          "print('schedulefree' in sys.modules)"], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
    assert optim_nb.AdamWScheduleFree.__module__ == "optim_nb.schedulefree"
