"""What is specific to Adam and AdamW: AdamW is Adam with decoupled decay, tensor betas, the
AMSGrad counterexample.

Everything they share with the other optimizers is checked over the registry in
tests/test_generic.py, tests/test_dropin.py and tests/test_distributed.py.
"""
import pickle

import pytest
import torch

from optim_nb import AdamW
from optim_nb.adam import Adam, adam_update
from optim_nb.testing import assert_matches_torch, assert_same

PAIRS = [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)]
T1, T2 = torch.tensor(0.9), torch.tensor(0.999)


def test_adamw_is_adam_decoupled_with_one_update():
    assert AdamW.update is Adam.update is adam_update
    assert_matches_torch(AdamW, lambda params, **kw: torch.optim.Adam(params, decoupled_weight_decay=True, **kw),
                         [{"amsgrad": True}, {}], lr=0.01, weight_decay=0.2)


def test_l2_and_decoupled_decay_are_not_interchangeable():
    with pytest.raises(AssertionError):
        assert_matches_torch(Adam, torch.optim.AdamW, [{}, {}], lr=0.01, weight_decay=0.1)


def test_adamw_pickle_keeps_decoupled_decay():
    opt = AdamW([torch.zeros(2, requires_grad=True)])
    opt.param_groups[0]["decoupled_weight_decay"] = False
    assert pickle.loads(pickle.dumps(opt)).param_groups[0]["decoupled_weight_decay"] is True


def test_tensor_betas_with_capturable_and_foreach_are_accepted():
    w = [torch.zeros(2, requires_grad=True)]
    Adam(w, betas=(T1, T2), foreach=True, capturable=True)
    torch.optim.Adam(w, betas=(T1, T2), foreach=True, capturable=True)


def _run(cls, dtype, **options):
    torch.manual_seed(0)
    w = torch.randn(7, dtype=dtype, requires_grad=True)
    opt = cls([w], lr=0.05, **options)
    for _ in range(12):
        w.grad = (2 * w.detach()).sin()
        opt.step()
    return w.detach(), opt.state_dict()


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128], ids=str)
def test_complex_parameters_with_tensor_betas_match_torch(ours, theirs, dtype):
    assert_same(_run(ours, dtype, betas=(T1, T2)), _run(theirs, dtype, betas=(T1, T2)))


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_differentiable_step_gives_torchs_gradient_wrt_lr_and_betas(ours, theirs):
    def grads(cls):
        lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        b1 = torch.tensor(0.9, dtype=torch.float64, requires_grad=True)
        b2 = torch.tensor(0.99, dtype=torch.float64, requires_grad=True)
        w = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True).clone()
        opt = cls([w], lr=lr, betas=(b1, b2), differentiable=True, weight_decay=0.1)
        for _ in range(3):
            w.grad = 2 * w
            opt.step()
        return torch.stack(torch.autograd.grad(w.sum(), (lr, b1, b2)))
    ours_g, theirs_g = grads(ours), grads(theirs)
    assert (ours_g != 0).all() and torch.equal(ours_g, theirs_g)


def test_amsgrad_counterexample():
    """Reddi et al. 2018: Adam goes to x = +1, AMSGrad to the optimum x = -1."""
    def final_x(amsgrad, C=3.0):
        x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = Adam([x], lr=0.05, betas=(0.0, 1 / (1 + C ** 2)), amsgrad=amsgrad)
        for t in range(1, 451):
            x.grad = torch.tensor([C if t % 3 == 1 else -1.0], dtype=torch.float64)
            opt.step()
            with torch.no_grad():
                x.clamp_(-1.0, 1.0)
        return x.item()
    assert final_x(False) > 0.9 and final_x(True) < -0.9
