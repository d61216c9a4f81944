"""optim_nb.SGD against torch.optim.SGD: numbers, signature, errors."""
import inspect
import re

import pytest
import torch
from hypothesis import given, strategies as st

from optim_nb import SGD
from optim_nb.core import assert_matches_torch, train

DTYPES = st.sampled_from([torch.float32, torch.float64])


@st.composite
def sgd_options(draw):
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9, 0.99]) | st.floats(0.0, 0.999))
    nesterov = momentum > 0 and draw(st.booleans())
    return dict(
        momentum=momentum,
        dampening=0.0 if nesterov else draw(st.sampled_from([0.0, 0.1, 0.5]) | st.floats(0.0, 1.0)),
        nesterov=nesterov,
        weight_decay=draw(st.sampled_from([0.0, 1e-4, 0.1]) | st.floats(0.0, 0.5)),
        maximize=draw(st.booleans()),
    )


@given(first=sgd_options(), second=sgd_options(), dtype=DTYPES,
       lr=st.floats(1e-4, 0.1), lr_as_tensor=st.booleans())
def test_bit_identical_to_torch(first, second, dtype, lr, lr_as_tensor):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(SGD, torch.optim.SGD, [first, {**second, "lr": 0.01}], dtype=dtype, lr=lr)


def test_the_comparison_can_fail():
    def off_by_momentum(params, **kw):
        return SGD(params, **{**kw, "momentum": 0.5})
    with pytest.raises(AssertionError):
        assert_matches_torch(off_by_momentum, torch.optim.SGD, [{}, {}], lr=0.1, momentum=0.9)


def _params(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


def test_signature_and_defaults_are_torchs():
    assert _params(SGD) == _params(torch.optim.SGD)
    w = [torch.zeros(1, requires_grad=True)]
    assert SGD(w).defaults == torch.optim.SGD(w).defaults


BAD = [
    dict(lr=-1e-3), dict(lr=torch.tensor(-1.0)), dict(lr=torch.tensor([0.1, 0.2])),
    dict(momentum=-0.1), dict(weight_decay=-1e-5),
    dict(nesterov=True), dict(nesterov=True, momentum=0.9, dampening=0.5),
    dict(fused=True, foreach=True), dict(fused=True, differentiable=True),
]


@pytest.mark.parametrize("bad", BAD, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_bad_hyperparameters_raise_torchs_error(bad):
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(Exception) as theirs:
        torch.optim.SGD(w, **bad)
    with pytest.raises(theirs.type, match=re.escape(str(theirs.value))) as ours:
        SGD(w, **bad)
    # the message names the offending value
    for key, value in bad.items():
        if key in ("lr", "momentum", "weight_decay", "dampening") and not isinstance(value, torch.Tensor):
            assert str(value) in str(ours.value)


def test_nan_learning_rate_is_rejected():
    with pytest.raises(ValueError, match="Invalid learning rate: nan"):
        SGD([torch.zeros(1, requires_grad=True)], lr=float("nan"))


def test_a_bad_param_group_is_not_added():
    opt = SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="Invalid momentum value: -1"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "momentum": -1})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sparse_gradients_match_torch(momentum):
    def run(cls):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = cls(emb.parameters(), lr=0.1, momentum=momentum)
        for step in range(5):
            opt.zero_grad()
            emb(torch.tensor([step, step + 1, 3])).pow(2).sum().backward()
            opt.step()
        return emb.weight.detach()
    assert torch.equal(run(SGD), run(torch.optim.SGD))


def test_differentiable_step_gives_torchs_gradient():
    def grad_wrt_lr(cls):
        lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        w0 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
        w = w0.clone()  # a non-leaf parameter, as differentiable optimisation needs
        opt = cls([w], lr=lr, differentiable=True)
        for _ in range(3):
            w.grad = 2 * w  # the gradient of |w|², itself differentiable
            opt.step()
        return torch.autograd.grad(w.sum(), lr)[0]
    ours, theirs = grad_wrt_lr(SGD), grad_wrt_lr(torch.optim.SGD)
    assert ours != 0 and torch.equal(ours, theirs)


def test_no_state_without_momentum():
    model, opt = train(lambda m: SGD(m.parameters(), lr=0.1))
    assert opt.state_dict()["state"] == {}


# --- foreach=True: the multi-tensor rule, against torch's multi-tensor path and our loop

from hypothesis import settings

from optim_nb.core import foreach_vs_loop, ulps
from optim_nb.sgd import sgd_update_foreach
from optim_nb.core import assert_same, small_model


@settings(max_examples=25)
@given(first=sgd_options(), second=sgd_options(), dtype=DTYPES,
       lr=st.floats(1e-4, 0.1), lr_as_tensor=st.booleans())
def test_foreach_bit_identical_to_torchs_foreach(first, second, dtype, lr, lr_as_tensor):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(SGD, torch.optim.SGD, [first, {**second, "lr": 0.01}], dtype=dtype, lr=lr,
                         foreach=True)


@settings(max_examples=10)
@given(first=sgd_options(), second=sgd_options(), dtype=DTYPES)
def test_foreach_gives_the_loops_bits_and_state_layout(first, second, dtype):
    assert foreach_vs_loop(SGD, [first, second], dtype=dtype, lr=0.05) == 0


def test_foreach_is_the_path_taken_and_the_cpu_default_is_the_loop():
    params = list(small_model().parameters())
    for foreach, expected in [(True, "foreach"), (False, "loop"), (None, "loop")]:
        opt = SGD(params, foreach=foreach)
        assert opt.path(opt.param_groups[0], params) == expected
    assert SGD.update_foreach is sgd_update_foreach


def _mixed_run(cls, steps=8, **options):
    "One group holding float32, float64 and complex64 tensors: foreach groups them by dtype."
    torch.manual_seed(0)
    ps = [torch.randn(3, requires_grad=True), torch.randn(2, 2, dtype=torch.float64, requires_grad=True),
          torch.randn(4, dtype=torch.complex64, requires_grad=True)]
    opt = cls(ps, foreach=True, **options)
    for _ in range(steps):
        opt.zero_grad()
        sum((p.abs() ** 2 + p.real).sum().double() for p in ps).backward()
        opt.step()
    return [p.detach() for p in ps], opt.state_dict()


@pytest.mark.parametrize("options", [dict(lr=0.1), dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                                     dict(lr=torch.tensor(0.1), momentum=0.5, dampening=0.3, maximize=True)])
def test_foreach_groups_by_dtype_and_handles_complex_as_torch(options):
    (p1, s1), (p2, s2) = _mixed_run(SGD, **options), _mixed_run(torch.optim.SGD, **options)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert_same(s1, s2)


@pytest.mark.parametrize("options", [dict(), dict(momentum=0.9)])
def test_foreach_with_sparse_gradients_matches_torch(options):
    def run(cls):
        torch.manual_seed(0)
        emb, lin = torch.nn.Embedding(6, 3, sparse=True), torch.nn.Linear(3, 1)
        opt = cls([*emb.parameters(), *lin.parameters()], lr=0.1, foreach=True, **options)
        for i in range(5):
            opt.zero_grad()
            lin(emb(torch.tensor([i % 6, 2]))).sum().backward()
            opt.step()
        return emb.weight.detach(), lin.weight.detach()
    for a, b in zip(run(SGD), run(torch.optim.SGD)):
        assert torch.equal(a, b)


def test_nesterov_foreach_writes_into_grad_as_torch_does():
    def grads(cls):
        model, _ = train(lambda m: cls(m.parameters(), lr=0.1, momentum=0.9, nesterov=True, foreach=True), steps=3)
        return [p.grad.clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(grads(SGD), grads(torch.optim.SGD)))


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


def test_foreach_vs_loop_can_fail():
    def off_by_an_ulp(params, grads, states, *, lr, **kw):
        sgd_update_foreach(params, grads, states, lr=lr * (1 + 2 ** -20), **kw)

    class Slightly(SGD):
        update_foreach = staticmethod(off_by_an_ulp)

    assert foreach_vs_loop(Slightly, [{}, {}], lr=0.1) > 0

    def extra_state(params, grads, states, **kw):
        sgd_update_foreach(params, grads, states, **kw)
        for s in states:
            s["extra"] = torch.zeros(())

    class Layout(SGD):
        update_foreach = staticmethod(extra_state)

    with pytest.raises(AssertionError, match="state"):
        foreach_vs_loop(Layout, [{}, {}], lr=0.1)
