"""What only SGD has: sparse gradients (torch's SGD takes them), on the loop and the multi-tensor path.

Everything SGD shares with the other optimizers (bit-identity, foreach, fused, signature, errors,
state, complex, differentiable) is checked over the registry in tests/test_generic.py.
"""
import pytest
import torch

from optim_nb import SGD
from optim_nb.testing import assert_same


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("options", [dict(), dict(momentum=0.9)], ids=["plain", "momentum"])
def test_sparse_gradients_match_torch(options, foreach):
    "An embedding with sparse gradients beside a dense layer, in one group."
    def run(cls):
        torch.manual_seed(0)
        emb, lin = torch.nn.Embedding(10, 3, sparse=True), torch.nn.Linear(3, 1)
        opt = cls([*emb.parameters(), *lin.parameters()], lr=0.1, foreach=foreach, **options)
        for step in range(5):
            opt.zero_grad()
            lin(emb(torch.tensor([step, step + 1, 3]))).pow(2).sum().backward()
            opt.step()
        return emb.weight.detach(), lin.weight.detach(), opt.state_dict()
    assert_same(run(SGD), run(torch.optim.SGD))
