"""What is specific to Adadelta: its limits (ρ = 1 is SGD, ε = 0 never moves), state the comparison
must see, and sparse gradients refused before anything moves.

Everything Adadelta shares with the other optimizers is checked over the registry in
tests/test_generic.py, tests/test_dropin.py and tests/test_distributed.py.
"""
import pytest
import torch

from optim_nb import Adadelta
from optim_nb.testing import assert_matches_torch, assert_same, train


def test_the_comparison_sees_the_state():
    "Same parameters, different state: lr = 0 never moves, but ρ changes square_avg."
    def other_rho(params, **kw):
        return Adadelta(params, **{**kw, "rho": 0.5})
    with pytest.raises(AssertionError, match="square_avg"):
        assert_matches_torch(other_rho, torch.optim.Adadelta, [{}, {}], lr=0.0)


def test_sparse_gradients_are_refused_before_anything_moves():
    emb = torch.nn.Embedding(4, 2, sparse=True)
    emb(torch.tensor([1])).sum().backward()
    for cls in (torch.optim.Adadelta, Adadelta):
        w = torch.ones(2, requires_grad=True)
        w.grad = torch.ones(2)
        with pytest.raises(RuntimeError, match="^Adadelta does not support sparse gradients$"):
            cls([{"params": [w]}, {"params": emb.parameters()}]).step()
    assert torch.equal(w.detach(), torch.ones(2))  # ours did not move the first group (torch does)


def test_rho_one_is_sgd():
    m1, _ = train(lambda m: Adadelta(m.parameters(), lr=0.05, rho=1.0, maximize=True))
    m2, _ = train(lambda m: torch.optim.SGD(m.parameters(), lr=0.05, maximize=True))
    assert_same(list(m1.parameters()), list(m2.parameters()))


def test_zero_eps_never_moves():
    model, _ = train(lambda m: Adadelta(m.parameters(), eps=0.0), steps=5)
    fresh, _ = train(lambda m: torch.optim.SGD(m.parameters(), lr=0.0), steps=0)
    assert_same(list(model.parameters()), list(fresh.parameters()))
