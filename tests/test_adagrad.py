"""What is specific to Adagrad: state created eagerly, sparse gradients, `share_memory`.

Everything Adagrad shares with the other optimizers is checked over the registry in
tests/test_generic.py, tests/test_dropin.py and tests/test_distributed.py.
"""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from optim_nb import Adagrad
from optim_nb.registry import REGISTRY
from optim_nb.testing import assert_same
from registry_options import DTYPES, learning_rate, options

ENTRY = REGISTRY["Adagrad"]
# torch warns once when a sparse tensor is built without invariant checks; its own Adagrad does too
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")


def _layouts(cls, fused=None):
    torch.manual_seed(0)
    used, frozen, late, never = (torch.randn(2, 3, requires_grad=True) for _ in range(4))
    opt = cls([{"params": [used]}, {"params": [frozen], "initial_accumulator_value": 5.0}],
              lr=0.1, initial_accumulator_value=0.25, fused=fused)
    at_init = opt.state_dict()
    opt.add_param_group({"params": [late, never], "initial_accumulator_value": 9.0})
    for _ in range(3):
        used.grad, late.grad = torch.ones(2, 3), torch.full((2, 3), -2.0)
        opt.step()
    return at_init, opt.state_dict()


@pytest.mark.parametrize("fused", [None, True])
def test_eager_state_layout_is_torchs(fused):
    """State for every constructor parameter at once; for add_param_group's at its first gradient;
    `initial_accumulator_value` from the constructor only; `step` typed as torch types it."""
    (ours_init, ours), (theirs_init, theirs) = _layouts(Adagrad, fused), _layouts(torch.optim.Adagrad, fused)
    assert_same(ours_init, theirs_init)
    assert sorted(ours_init["state"]) == [0, 1]
    assert sorted(ours["state"]) == [0, 1, 2]           # `never` (index 3) has no state
    assert ours["state"][1]["step"] == 0 and ours["state"][1]["sum"].eq(0.25).all()
    if fused:  # torch's fused kernel rounds differently: compare the layout, not the bits
        for k in ours["state"]:
            for name in ("step", "sum"):
                a, b = ours["state"][k][name], theirs["state"][k][name]
                assert a.dtype == b.dtype and a.shape == b.shape and a.device == b.device
        assert ours["state"][0]["step"].dtype == torch.float32
    else:
        assert_same(ours, theirs)


def _sparse_run(cls, dtype=torch.float32, steps=10, **options):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(12, 4, sparse=True).to(dtype)
    dense = torch.nn.Linear(4, 1).to(dtype)
    opt = cls([{"params": emb.parameters()}, {"params": dense.parameters(), "lr": 0.03}], **options)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        rows = torch.randint(0, 6, (5,), generator=gen)  # rows 6-11 are never used; duplicates happen
        opt.zero_grad()
        dense(emb(rows)).tanh().sum().backward()
        opt.step()
    return emb.weight.detach(), dense.weight.detach(), opt.state_dict()


@settings(max_examples=20)
@given(data=st.data(), dtype=DTYPES, foreach=st.sampled_from([False, True]))
def test_sparse_gradients_match_torch(data, dtype, foreach):
    "Options from the registry's space (no weight decay: torch refuses it with sparse gradients)."
    drawn = data.draw(options(ENTRY, without=("weight_decay",)))
    lr = data.draw(learning_rate(ENTRY))
    assert_same(_sparse_run(Adagrad, dtype, lr=lr, foreach=foreach, **drawn),
                _sparse_run(torch.optim.Adagrad, dtype, lr=lr, foreach=foreach, **drawn))


def test_sparse_gradients_touch_only_their_rows():
    torch.manual_seed(0)
    start = torch.nn.Embedding(12, 4).weight.detach().clone()
    weights, _, state = _sparse_run(Adagrad, lr=0.1)
    assert torch.equal(weights[6:], start[6:]) and (weights[:6] != start[:6]).all()
    assert state["state"][0]["sum"][6:].eq(0).all()


def test_sparse_gradients_with_weight_decay_raise_before_anything_moves():
    torch.manual_seed(0)
    lin, emb = torch.nn.Linear(3, 1), torch.nn.Embedding(4, 3, sparse=True)
    opt = Adagrad([{"params": lin.parameters()}, {"params": emb.parameters()}], weight_decay=0.1)
    lin(emb(torch.tensor([1, 2]))).sum().backward()
    params = [p.detach().clone() for p in (*lin.parameters(), emb.weight)]
    state = opt.state_dict()
    with pytest.raises(RuntimeError, match="^weight_decay option is not compatible with sparse gradients$"):
        opt.step()
    assert_same([p.detach() for p in (*lin.parameters(), emb.weight)], params)
    assert_same(opt.state_dict(), state)


def test_share_memory():
    w = torch.zeros(3, requires_grad=True)
    opt = Adagrad([w])
    opt.share_memory()
    assert opt.state[w]["sum"].is_shared()
