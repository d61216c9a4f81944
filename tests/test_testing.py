"""optim_nb.testing, the harness every test and chapter relies on: each check must be able to fail."""
import pytest
import torch

import optim_nb
from optim_nb.testing import (assert_same, foreach_vs_loop, fused_vs_loop, outcome, same_outcome, train,
                              ulps)

NAN = float("nan")
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")


def test_assert_same_compares_nan_aware_bit_for_bit():
    with pytest.raises(AssertionError, match="NaN at different places"):
        assert_same(torch.tensor([NAN, 1.0]), torch.tensor([1.0, NAN]))
    with pytest.raises(AssertionError, match="NaN at different places"):
        assert_same(torch.tensor([NAN]), torch.tensor([3e38]))  # nan_to_num would call these equal
    with pytest.raises(AssertionError, match="values differ"):
        assert_same(torch.tensor([NAN, 1.0]), torch.tensor([NAN, 1.0 + 2 ** -23]))
    assert_same(torch.tensor([NAN, 2.0]), torch.tensor([NAN, 2.0]))
    assert_same(torch.complex(torch.tensor([NAN]), torch.tensor([1.0])),
                torch.complex(torch.tensor([NAN]), torch.tensor([1.0])))


@pytest.mark.parametrize("a, b", [
    (torch.tensor([1.0]), torch.tensor([1.0], dtype=torch.float64)),            # dtype
    (torch.tensor(1.0), torch.tensor([1.0])),                                   # shape
    (torch.tensor([1.0, 0.0]).to_sparse(), torch.tensor([1.0, 0.0])),           # layout
    (torch.sparse_coo_tensor([[0, 1]], [1.0, 2.0], (3,), check_invariants=True),
     torch.sparse_coo_tensor([[0, 2]], [1.0, 2.0], (3,), check_invariants=True)),
    ({"a": 1}, {"a": 1, "b": 2}), ([1.0], (1.0,)), ([1.0], [1.0, 2.0]), (1, 1.0), (NAN, 1.0), (1.0, NAN),
    (torch.tensor(1.0), 1.0)], ids=lambda x: type(x).__name__)
def test_assert_same_sees_dtype_shape_layout_keys_types(a, b):
    with pytest.raises(AssertionError):
        assert_same(a, b)


def test_assert_same_takes_dict_keys_in_any_order_and_uncoalesced_sparse_tensors():
    assert_same({"a": 1, "b": (2.0, NAN)}, {"b": (2.0, NAN), "a": 1})
    twice = torch.sparse_coo_tensor([[0, 0]], [1.0, 2.0], (3,))  # the same index twice: 3 once coalesced
    assert_same(twice, torch.sparse_coo_tensor([[0]], [3.0], (3,)))


def test_same_outcome_compares_errors_and_results():
    w = [torch.zeros(2, requires_grad=True)]
    same_outcome(outcome(lambda: optim_nb.SGD(w, lr=-1.0)), outcome(lambda: torch.optim.SGD(w, lr=-1.0)))
    with pytest.raises(AssertionError, match="ours ok"):
        same_outcome(outcome(lambda: optim_nb.SGD(w, lr=1.0)), outcome(lambda: torch.optim.SGD(w, lr=-1.0)))
    with pytest.raises(AssertionError, match="raised"):
        same_outcome(outcome(lambda: optim_nb.SGD(w, lr=-1.0)), outcome(lambda: torch.optim.SGD(w, lr=-2.0)))
    with pytest.raises(AssertionError):
        same_outcome(outcome(lambda: 1.0), outcome(lambda: 2.0))


def test_ulps_counts_representable_numbers():
    one = torch.tensor(1.0)
    up = torch.nextafter(one, torch.tensor(2.0))
    assert ulps(one, one) == 0 and ulps(one, up) == 1 and ulps(up, one) == 1
    assert ulps(torch.tensor(0.0), torch.tensor(-0.0)) == 0
    tiny = torch.nextafter(torch.tensor(0.0), one)
    assert ulps(-tiny, tiny) == 2
    d = torch.tensor([1.0, 2.0], dtype=torch.float64)
    assert ulps(d, torch.nextafter(torch.nextafter(d, d + 1), d + 1)) == 2
    z = torch.tensor([1 + 1j])
    assert ulps(z, torch.complex(torch.tensor([1.0]), torch.nextafter(torch.tensor([1.0]), torch.tensor([2.0])))) == 1
    assert ulps(torch.tensor([1, 2]), torch.tensor([1, 3])) == 1  # integers: elements that differ


def test_ulps_of_scale_measure_in_the_unit_of_the_magnitude():
    a = torch.tensor([1.0, 2.0])
    assert ulps(torch.nextafter(a, a + 1), a, scale=a) == 1
    h = torch.tensor([1.0], dtype=torch.bfloat16)
    assert ulps(torch.tensor([1.0078125], dtype=torch.bfloat16), h, scale=h) == 1  # bfloat16's own ulp
    small, big = torch.tensor([2.0 ** -24]), torch.tensor([1.0])
    assert ulps(small * 2, small, scale=big) == 0.5 and ulps(small * 2, small) == 2 ** 23


def test_fused_vs_loop_is_zero_for_sgds_kernel():
    r = fused_vs_loop(optim_nb.SGD, [(7, 3)], steps=2, lr=0.1)
    assert r["ulps"] == 0 and r["ops"] == ["optim_nb.sgd_.default"]


class _Slightly(optim_nb.SGD):
    "Plain gradient descent whose multi-tensor rule has its lr a few ulps off."
    @staticmethod
    def update_foreach(params, grads, states, *, lr, **_):
        torch._foreach_add_(params, grads, alpha=-lr * (1 + 2 ** -20))


class _ExtraState(optim_nb.SGD):
    "Plain gradient descent whose multi-tensor rule keeps a state entry the loop does not."
    @staticmethod
    def update_foreach(params, grads, states, *, lr, **_):
        torch._foreach_add_(params, grads, alpha=-lr)
        for s in states:
            s["extra"] = torch.zeros(())


def test_foreach_vs_loop_can_fail():
    assert foreach_vs_loop(_Slightly, [{}, {}], lr=0.1) > 0
    with pytest.raises(AssertionError, match="state"):
        foreach_vs_loop(_ExtraState, [{}, {}], lr=0.1)


def test_train_is_deterministic_and_moves_the_model():
    (m1, _), (m2, _) = (train(lambda m: optim_nb.SGD(m.parameters(), lr=0.1), steps=3) for _ in range(2))
    assert_same(list(m1.parameters()), list(m2.parameters()))
    m0, _ = train(lambda m: optim_nb.SGD(m.parameters(), lr=0.1), steps=0)
    assert not torch.equal(next(m0.parameters()), next(m1.parameters()))
