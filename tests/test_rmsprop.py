"""What is specific to RMSprop: ε outside the root, and NaN where torch's arithmetic gives NaN.

Everything RMSprop shares with the other optimizers is checked over the registry in
tests/test_generic.py, tests/test_dropin.py and tests/test_distributed.py.
"""
import pytest
import torch

from optim_nb import RMSprop
from optim_nb.testing import assert_matches_torch, train


def test_eps_inside_the_root_is_not_torch():
    """TensorFlow's √(v + ε) instead of torch's √v + ε must be caught."""
    class EpsInside(RMSprop):
        @staticmethod
        def update(param, grad, state, *, lr, alpha, eps, **_):
            state["step"] += 1
            square_avg = state["square_avg"]
            square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
            param.addcdiv_(grad, square_avg.add(eps).sqrt(), value=-lr)
    assert_matches_torch(RMSprop, torch.optim.RMSprop, [{}, {}], lr=0.01, eps=1e-3)
    with pytest.raises(AssertionError):
        assert_matches_torch(EpsInside, torch.optim.RMSprop, [{}, {}], lr=0.01, eps=1e-3)


@pytest.mark.parametrize("options, nonfinite", [(dict(alpha=1.5), True), (dict(alpha=0.0, centered=True), True),
                                                (dict(eps=0.0), False)])
def test_nan_where_torch_gives_nan(options, nonfinite):
    """α > 1 is accepted as in torch (v can go negative); centered with α = 0 divides by
    √(g² - g·g) ≈ 0. Wherever torch produces NaN or inf, we produce the same values."""
    assert_matches_torch(RMSprop, torch.optim.RMSprop, [{}, {}], steps=5, lr=0.01, **options)
    model, _ = train(lambda m: torch.optim.RMSprop(m.parameters(), lr=0.01, **options), steps=5)
    assert any((~p.isfinite()).any() for p in model.parameters()) == nonfinite  # the case is what it says
