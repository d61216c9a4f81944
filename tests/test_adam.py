"""optim_nb.Adam and optim_nb.AdamW against torch.optim.Adam and torch.optim.AdamW."""
import inspect
import pickle
import re

import pytest
import torch
from hypothesis import given, settings, strategies as st

from optim_nb.adam import Adam, adam_update
from optim_nb import AdamW
from optim_nb.core import assert_matches_torch, assert_same, train

DTYPES = st.sampled_from([torch.float32, torch.float64])
BETA1 = st.sampled_from([0.0, 0.5, 0.9]) | st.floats(0.0, 0.999)
BETA2 = st.sampled_from([0.9, 0.99, 0.999]) | st.floats(0.0, 0.9999)
PAIRS = [(Adam, torch.optim.Adam), (AdamW, torch.optim.AdamW)]


@st.composite
def adam_options(draw, decoupled=True):
    options = dict(
        betas=(draw(BETA1), draw(BETA2)),
        eps=draw(st.sampled_from([1e-8, 1e-6, 1e-3]) | st.floats(0.0, 1e-2)),
        weight_decay=draw(st.sampled_from([0.0, 1e-2, 0.1]) | st.floats(0.0, 0.5)),
        amsgrad=draw(st.booleans()),
        maximize=draw(st.booleans()),
    )
    if decoupled:
        options["decoupled_weight_decay"] = draw(st.booleans())
    return options


@settings(max_examples=40)
@given(first=adam_options(), second=adam_options(), dtype=DTYPES, lr=st.floats(1e-4, 0.1),
       lr_as_tensor=st.booleans(), betas_as_tensors=st.booleans(), beta1=BETA1, beta2=BETA2)
def test_adam_bit_identical_to_torch(first, second, dtype, lr, lr_as_tensor, betas_as_tensors, beta1, beta2):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    betas = (torch.tensor(beta1), torch.tensor(beta2)) if betas_as_tensors else (beta1, beta2)
    assert_matches_torch(Adam, torch.optim.Adam, [first, {**second, "lr": 0.01}], dtype=dtype, lr=lr, betas=betas)


@settings(max_examples=25)
@given(first=adam_options(decoupled=False), second=adam_options(decoupled=False), dtype=DTYPES,
       lr=st.floats(1e-4, 0.1), lr_as_tensor=st.booleans())
def test_adamw_bit_identical_to_torch(first, second, dtype, lr, lr_as_tensor):
    lr = torch.tensor(lr) if lr_as_tensor else lr
    assert_matches_torch(AdamW, torch.optim.AdamW, [first, {**second, "lr": 0.01}], dtype=dtype, lr=lr)


def test_adamw_is_adam_decoupled_with_one_update():
    assert AdamW.update is Adam.update is adam_update
    assert_matches_torch(AdamW, lambda params, **kw: torch.optim.Adam(params, decoupled_weight_decay=True, **kw),
                         [{"amsgrad": True}, {}], lr=0.01, weight_decay=0.2)


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_the_comparison_can_fail(ours, theirs):
    def other_eps(params, **kw):
        return ours(params, **{**kw, "eps": 1e-7})
    with pytest.raises(AssertionError):
        assert_matches_torch(other_eps, theirs, [{}, {}], lr=0.01)
    # L2 and decoupled decay are not interchangeable
    with pytest.raises(AssertionError):
        assert_matches_torch(Adam, torch.optim.AdamW, [{}, {}], lr=0.01, weight_decay=0.1)


def _params(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_signature_and_defaults_are_torchs(ours, theirs):
    assert _params(ours) == _params(theirs)
    w = [torch.zeros(1, requires_grad=True)]
    assert ours(w).defaults == theirs(w).defaults


T1, T2 = torch.tensor(0.9), torch.tensor(0.999)
BAD = [
    dict(lr=-1e-3), dict(lr=float("nan")), dict(lr=torch.tensor(-1.0)), dict(lr=torch.tensor([0.1, 0.2])),
    dict(lr=torch.tensor(0.1), foreach=True), dict(eps=-1e-8), dict(betas=(1.0, 0.999)),
    dict(betas=(0.9, 1.0)), dict(betas=(-0.5, 0.999)), dict(betas=(0.9, float("nan"))),
    dict(weight_decay=-1e-5), dict(betas=(0.9, T2)), dict(betas=(T1, 0.999)), dict(betas=(0, 0)),
    dict(betas=(T1, T2), foreach=True), dict(betas=(torch.tensor([0.9]), torch.tensor([0.9, 0.99]))),
    dict(betas=(torch.tensor([[1.5]]), T2)), dict(fused=True, foreach=True), dict(fused=True, differentiable=True),
]


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("bad", BAD, ids=lambda b: ",".join(f"{k}={v}" for k, v in b.items()))
def test_bad_hyperparameters_raise_torchs_error(ours, theirs, bad):
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(Exception) as theirs_error:   # Adam's checks also reject lr=nan
        theirs(w, **bad)
    with pytest.raises(theirs_error.type, match=re.escape(str(theirs_error.value))):
        ours(w, **bad)


def test_tensor_betas_with_capturable_and_foreach_are_accepted():
    w = [torch.zeros(2, requires_grad=True)]
    Adam(w, betas=(T1, T2), foreach=True, capturable=True)
    torch.optim.Adam(w, betas=(T1, T2), foreach=True, capturable=True)


def _first_step_error(cls, param, **options):
    opt = cls([param], **options)
    param.grad = torch.ones_like(param)
    with pytest.raises(Exception) as info:
        opt.step()
    return info.type, str(info.value)


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("dtype, options", [(torch.float32, dict(capturable=True)),
                                            (torch.complex64, dict(fused=True))])
def test_errors_at_the_first_step_are_torchs(ours, theirs, dtype, options):
    make = lambda: torch.zeros(3, dtype=dtype, requires_grad=True)
    assert _first_step_error(ours, make(), **options) == _first_step_error(theirs, make(), **options)


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_tensor_lr_given_to_a_foreach_group_later_fails_at_step(ours, theirs):
    def error(cls):
        opt = cls([torch.zeros(2, requires_grad=True)], foreach=True)
        opt.param_groups[0]["lr"] = torch.tensor(0.1)         # as a scheduler might
        opt.param_groups[0]["params"][0].grad = torch.ones(2)
        with pytest.raises(Exception) as info:
            opt.step()
        return info.type, str(info.value)
    assert error(ours) == error(theirs)


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_sparse_gradients_raise_torchs_error(ours, theirs):
    def error(cls):
        emb = torch.nn.Embedding(5, 3, sparse=True)
        opt = cls(emb.parameters())
        emb(torch.tensor([1, 2])).sum().backward()
        before = emb.weight.detach().clone()
        with pytest.raises(Exception) as info:
            opt.step()
        assert torch.equal(emb.weight.detach(), before)
        return info.type, str(info.value)
    assert error(ours) == error(theirs)


def _run(cls, dtype=torch.float64, steps=12, leaf=True, **options):
    torch.manual_seed(0)
    w = torch.randn(7, dtype=dtype, requires_grad=True)
    if not leaf:
        w = w.clone()
    opt = cls([w], lr=0.05, **options)
    for _ in range(steps):
        w.grad = (2 * w.detach()).sin()
        opt.step()
    return w.detach(), opt.state_dict()


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", [dict(), dict(amsgrad=True, weight_decay=0.1), dict(weight_decay=0.1, maximize=True)])
def test_differentiable_branch_is_bit_identical(ours, theirs, dtype, options):
    assert_same(_run(ours, dtype, leaf=False, differentiable=True, **options),
                _run(theirs, dtype, leaf=False, differentiable=True, **options))


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("options", [dict(), dict(amsgrad=True, weight_decay=0.1), dict(betas=(T1, T2))])
def test_complex_parameters_match_torch(ours, theirs, options):
    assert_same(_run(ours, torch.complex64, **options), _run(theirs, torch.complex64, **options))
    assert_same(_run(ours, torch.complex128, **options), _run(theirs, torch.complex128, **options))


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_differentiable_step_gives_torchs_gradient(ours, theirs):
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


@pytest.mark.parametrize("ours, theirs", PAIRS)
def test_fused_and_foreach_are_accepted_and_close(ours, theirs):
    for flag in ("fused", "foreach"):
        a = _run(ours, torch.float32, **{flag: True})
        b = _run(theirs, torch.float32, **{flag: True})
        torch.testing.assert_close(a[0], b[0])           # torch's fused CPU kernel rounds differently
        assert a[1]["state"][0]["step"].dtype == b[1]["state"][0]["step"].dtype == torch.float32


def test_state_names_and_checkpoint_round_trip():
    model, opt = train(lambda m: Adam(m.parameters(), lr=0.01, amsgrad=True), steps=5)
    assert set(opt.state_dict()["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    theirs = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    theirs.load_state_dict(opt.state_dict())   # a checkpoint of ours loads into torch's and back
    ours = Adam(model.parameters(), lr=0.01, amsgrad=True)
    ours.load_state_dict(theirs.state_dict())
    assert_same(ours.state_dict(), opt.state_dict())


def test_adamw_pickle_keeps_decoupled_decay():
    opt = AdamW([torch.zeros(2, requires_grad=True)])
    opt.param_groups[0]["decoupled_weight_decay"] = False
    assert pickle.loads(pickle.dumps(opt)).param_groups[0]["decoupled_weight_decay"] is True


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


# --- foreach=True: the multi-tensor rule, against torch's multi-tensor path and our loop

from optim_nb.adam import adam_update_foreach
from optim_nb.core import small_model
from optim_nb.core import foreach_vs_loop


@settings(max_examples=25)
@given(first=adam_options(), second=adam_options(), dtype=DTYPES, lr=st.floats(1e-4, 0.1),
       beta1=BETA1, beta2=BETA2)
def test_adam_foreach_bit_identical_to_torchs_foreach(first, second, dtype, lr, beta1, beta2):
    assert_matches_torch(Adam, torch.optim.Adam, [first, {**second, "lr": 0.01}], dtype=dtype, lr=lr,
                         betas=(beta1, beta2), foreach=True)


@settings(max_examples=15)
@given(first=adam_options(decoupled=False), second=adam_options(decoupled=False), dtype=DTYPES,
       lr=st.floats(1e-4, 0.1))
def test_adamw_foreach_bit_identical_to_torchs_foreach(first, second, dtype, lr):
    assert_matches_torch(AdamW, torch.optim.AdamW, [first, {**second, "lr": 0.01}], dtype=dtype, lr=lr,
                         foreach=True)


@pytest.mark.parametrize("ours", [Adam, AdamW])
@settings(max_examples=8)
@given(first=adam_options(decoupled=False), second=adam_options(decoupled=False), dtype=DTYPES)
def test_foreach_gives_the_loops_bits_and_state_layout(ours, first, second, dtype):
    assert foreach_vs_loop(ours, [first, second], dtype=dtype, lr=0.01) == 0


@pytest.mark.parametrize("ours", [Adam, AdamW])
def test_foreach_is_the_path_taken_and_the_cpu_default_is_the_loop(ours):
    params = list(small_model().parameters())
    for foreach, expected in [(True, "foreach"), (False, "loop"), (None, "loop")]:
        opt = ours(params, foreach=foreach)
        assert opt.path(opt.param_groups[0], params) == expected
    assert ours.update_foreach is adam_update_foreach


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("options", [dict(), dict(amsgrad=True, weight_decay=0.1, maximize=True)])
def test_foreach_groups_by_dtype_and_handles_complex_as_torch(ours, theirs, options):
    def run(cls):
        torch.manual_seed(0)
        ps = [torch.randn(3, requires_grad=True), torch.randn(2, 2, dtype=torch.float64, requires_grad=True),
              torch.randn(4, dtype=torch.complex64, requires_grad=True)]
        opt = cls(ps, lr=0.05, foreach=True, **options)
        for _ in range(8):
            opt.zero_grad()
            sum((p.abs() ** 2 + p.real).sum().double() for p in ps).backward()
            opt.step()
        return [p.detach() for p in ps], opt.state_dict()
    (p1, s1), (p2, s2) = run(ours), run(theirs)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert_same(s1, s2)


@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("options", [dict(foreach=True, capturable=True), dict(foreach=True, differentiable=True),
                                     dict(foreach=True, capturable=True, lr=torch.tensor(0.01)),
                                     dict(foreach=True, capturable=True, betas=(T1, T2))])
def test_foreach_refusals_at_the_first_step_are_torchs(ours, theirs, options):
    make = lambda: torch.zeros(3, requires_grad=True)
    ours_error = _first_step_error(ours, make(), **options)
    assert ours_error == _first_step_error(theirs, make(), **options)


@pytest.mark.parametrize("key, value", [("lr", torch.tensor(0.01)), ("betas", (T1, T2))])
def test_foreach_rule_refuses_tensor_hyperparameters_without_capturable(key, value):
    hyper = dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 decoupled_weight_decay=False, capturable=False, differentiable=False)
    hyper[key] = value
    p = torch.zeros(2)
    state = {"step": torch.tensor(0.0), "exp_avg": torch.zeros(2), "exp_avg_sq": torch.zeros(2)}
    with pytest.raises((RuntimeError, ValueError), match="not supported for capturable=False and foreach=True"):
        adam_update_foreach([p], [torch.ones(2)], [state], **hyper)
    assert state["step"] == 0 and p.eq(0).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ours, theirs", PAIRS)
@pytest.mark.parametrize("capturable, tensors", [(False, False), (True, False), (True, True)])
def test_foreach_on_cuda_matches_torchs_foreach(ours, theirs, capturable, tensors):
    options = dict(capturable=capturable)
    if tensors:  # lr and betas as tensors on the device, as capturable allows
        cuda = lambda x: torch.tensor(x, device="cuda")
        options.update(lr=cuda(0.01), betas=(cuda(0.9), cuda(0.999)), amsgrad=True)

    def run(cls):
        torch.manual_seed(0)
        ws = [torch.randn(16, device="cuda", requires_grad=True), torch.randn(3, 5, device="cuda", requires_grad=True)]
        opt = cls(ws, foreach=True, weight_decay=0.1, **options)
        for _ in range(10):
            opt.zero_grad()
            sum(w.pow(2).sum() for w in ws).backward()
            opt.step()
        return [w.detach() for w in ws], opt.state_dict()
    (w1, s1), (w2, s2) = run(ours), run(theirs)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))
    assert_same(s1, s2)
