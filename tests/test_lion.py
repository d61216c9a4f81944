"""What is specific to Lion (optim_nb.Lion against lion-pytorch 0.2.5); the generic checks are in test_generic.py."""
import copy
import pickle

import pytest
import torch

import lion_pytorch
import lion_pytorch.foreach
from optim_nb import Lion
from optim_nb.registry import REGISTRY
from optim_nb.testing import assert_matches_torch, assert_same


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("decoupled", [False, True])
def test_use_triton_runs_the_loop_rule_without_triton(dtype, decoupled):
    "The reference would import Triton (and exit() without it); ours runs lion_pytorch.Lion's loop."
    def ours(groups, **kw):
        return Lion(groups, use_triton=True, **kw)
    assert_matches_torch(ours, lion_pytorch.Lion, [{"weight_decay": 0.5}, {"lr": 0.01, "betas": (0.5, 0.9)}], dtype,
                         lr=1e-3, decoupled_weight_decay=decoupled)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_foreach_is_the_references_foreach_class_with_a_scheduler(dtype):
    "foreach=True against lion_pytorch.foreach.Lion, decoupled decay divided by the constructor's lr while it decays."
    def run(make):
        torch.manual_seed(0)
        ps = [torch.randn(5, 3, dtype=dtype, requires_grad=True), torch.randn(7, dtype=dtype, requires_grad=True)]
        opt = make(ps, lr=1e-2, weight_decay=0.3, decoupled_weight_decay=True)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.8)
        for _ in range(12):
            opt.zero_grad()
            sum((p ** 2).sum() + p.sin().sum() for p in ps).backward()
            opt.step()
            sched.step()
        return [p.detach() for p in ps], opt.state_dict()
    assert_same(run(lambda ps, **kw: Lion(ps, foreach=True, **kw)), run(lion_pytorch.foreach.Lion))
    assert_same(run(Lion), run(lion_pytorch.Lion))


def test_foreach_is_kept_out_of_the_groups_and_copies_keep_the_constructors_choices():
    w = torch.ones(3, requires_grad=True)
    opt = Lion([w], lr=0.1, weight_decay=0.5, decoupled_weight_decay=True, foreach=True)
    assert opt.param_groups[0].keys() == {"params", "lr", "betas", "weight_decay"}
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert (clone._init_lr, clone.decoupled_wd, clone.foreach) == (0.1, True, True)
        q = clone.param_groups[0]["params"][0]
        q.grad = torch.zeros(3)
        clone.step()                                   # zero gradient: the decay alone, 1 - γλ/γ₀ = 0.5
        assert torch.equal(q.detach(), torch.full((3,), 0.5))


def test_the_registry_builds_the_references_foreach_class():
    entry = REGISTRY["Lion"]
    w = [torch.zeros(2, requires_grad=True)]
    assert type(entry.reference_paths(w, foreach=True)) is lion_pytorch.foreach.Lion
    assert type(entry.reference_paths(w, foreach=False)) is lion_pytorch.Lion
    with pytest.raises(ValueError, match="use_triton"):
        entry.reference_paths(w, foreach=True, use_triton=True)


def test_sign_of_nan_is_zero_so_a_nan_gradient_freezes_its_coordinate_as_in_the_reference():
    def run(cls, **kw):
        w = torch.zeros(2, requires_grad=True)
        opt = cls([w], lr=0.1, **kw)
        for g in ([float("nan"), 1.0], [1.0, 1.0]):
            w.grad = torch.tensor(g)
            opt.step()
        return w.detach(), opt.state_dict()
    ours = run(Lion)
    assert_same(ours, run(lion_pytorch.Lion))
    assert_same(run(Lion, foreach=True), run(lion_pytorch.foreach.Lion))
    assert ours[0][0] == 0 and ours[0][1] == pytest.approx(-0.2)
