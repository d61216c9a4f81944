"""One registry of the book's optimizers for the drop-in tests, and the comparisons they share.

Each `Case` pairs an `optim_nb` class (imported lazily from its module, so a chapter that is not
written yet fails its own tests and nobody else's) with its `torch.optim` namesake, options that
exercise its state (momentum buffers, moving averages, step counters), the bad inputs to check
and what its gradients may be. Add a line here when the book gets an optimizer.
"""
import importlib
import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Case:
    name: str
    ours_path: str        # "module:Class" of the optim_nb class
    theirs: type          # the torch.optim class
    options: dict         # keyword arguments that exercise the state
    bad: list = field(default_factory=list)  # keyword arguments torch rejects
    momentum_key: str | None = None          # what OneCycleLR/CyclicLR cycle: "momentum", "betas"
    # keyword arguments torch 2.13 accepts but optim_nb refuses on purpose (ValueError naming the
    # value): torch.optim.SGD checks `lr < 0`, which lets NaN through; optim_nb's checks do not.
    stricter: list = field(default_factory=list)

    @property
    def ours(self) -> type:
        "The optim_nb class; raises ModuleNotFoundError/AttributeError until its chapter exists."
        module, name = self.ours_path.split(":")
        return getattr(importlib.import_module(module), name)

    def is_stricter(self, kwargs: dict) -> bool:
        "Is `kwargs` one of the inputs we refuse on purpose although torch accepts it?"
        def equal(a, b):
            if isinstance(a, float) and isinstance(b, float):
                return a == b or (math.isnan(a) and math.isnan(b))
            return a is b
        return any(s.keys() == kwargs.keys() and all(equal(s[k], kwargs[k]) for k in s)
                   for s in self.stricter)

    def cls(self, impl: str) -> type:
        return self.ours if impl == "ours" else self.theirs

    def __str__(self):
        return self.name


_T = torch.tensor
_FLAG_CLASH = [dict(fused=True, foreach=True), dict(fused=True, differentiable=True)]

CASES = [
    Case("SGD", "optim_nb.sgd:SGD", torch.optim.SGD,
         dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
         bad=[dict(lr=-1e-3), dict(lr=_T([0.1, 0.2])), dict(lr=_T(-0.1)), dict(momentum=-0.1),
              dict(weight_decay=-1e-5), dict(nesterov=True),
              dict(nesterov=True, momentum=0.9, dampening=0.5), *_FLAG_CLASH],
         stricter=[dict(lr=NAN), dict(momentum=NAN), dict(weight_decay=NAN)],
         momentum_key="momentum"),
    Case("Adagrad", "optim_nb.adagrad:Adagrad", torch.optim.Adagrad,
         dict(lr=0.05, lr_decay=1e-2, weight_decay=1e-3, initial_accumulator_value=0.1),
         bad=[dict(lr=-0.1), dict(lr=NAN), dict(lr=_T([0.1, 0.2])), dict(lr_decay=-0.1),
              dict(lr_decay=NAN), dict(weight_decay=-0.1), dict(initial_accumulator_value=-0.1),
              dict(initial_accumulator_value=NAN), dict(eps=-1e-10), dict(eps=NAN),
              *_FLAG_CLASH]),
    Case("RMSprop", "optim_nb.rmsprop:RMSprop", torch.optim.RMSprop,
         dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=1e-3),
         bad=[dict(lr=-0.1), dict(lr=NAN), dict(lr=_T([0.1, 0.2])), dict(alpha=-0.5),
              dict(alpha=NAN), dict(eps=-1e-8), dict(eps=NAN), dict(momentum=-0.9),
              dict(momentum=NAN), dict(weight_decay=-1e-2), dict(weight_decay=NAN)],
         momentum_key="momentum"),
    Case("Adadelta", "optim_nb.adadelta:Adadelta", torch.optim.Adadelta,
         dict(lr=1.0, rho=0.8, eps=1e-5, weight_decay=1e-3),
         bad=[dict(lr=-1.0), dict(lr=NAN), dict(lr=_T([0.1, 0.2])), dict(rho=-0.1),
              dict(rho=1.5), dict(rho=NAN), dict(eps=-1e-6), dict(eps=NAN),
              dict(weight_decay=-1.0), dict(weight_decay=NAN)]),
    Case("Adam", "optim_nb.adam:Adam", torch.optim.Adam,
         dict(lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3, amsgrad=True),
         bad=[dict(lr=-1e-3), dict(lr=NAN), dict(lr=_T([0.1, 0.2])), dict(eps=-1e-8),
              dict(eps=NAN), dict(betas=(1.0, 0.999)), dict(betas=(-0.1, 0.999)),
              dict(betas=(0.9, 1.0)), dict(betas=(NAN, 0.999)), dict(betas=(0.9, NAN)),
              dict(weight_decay=-1e-2), dict(weight_decay=NAN),
              dict(betas=(_T(0.9), 0.999)), dict(betas=(_T([0.9, 0.8]), _T(0.999))),
              dict(lr=_T(0.01), foreach=True), *_FLAG_CLASH],
         momentum_key="betas"),
    Case("AdamW", "optim_nb.adamw:AdamW", torch.optim.AdamW,
         dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
         bad=[dict(lr=-1e-3), dict(lr=NAN), dict(eps=-1e-8), dict(betas=(1.0, 0.999)),
              dict(betas=(0.9, -0.5)), dict(weight_decay=-1e-2), dict(weight_decay=NAN),
              dict(betas=(0.9, _T(0.999))), *_FLAG_CLASH],
         momentum_key="betas"),
]
IDS = [c.name for c in CASES]


# ---------------------------------------------------------------- comparisons

def real(t: Tensor) -> Tensor:
    return torch.view_as_real(t) if t.is_complex() else t


def tensor_difference(a: Tensor, b: Tensor) -> str | None:
    """None if `a` and `b` have the same dtype, shape and values; NaN equals NaN, at the same places.

    `torch.equal` alone says NaN ≠ NaN, and `nan_to_num` would hide a NaN that one side has and the
    other has as a large number: compare the NaN masks, then everything else with `torch.equal`.
    """
    if a.dtype != b.dtype or a.shape != b.shape or a.layout != b.layout:
        return f"{a.dtype}{tuple(a.shape)} {a.layout} vs {b.dtype}{tuple(b.shape)} {b.layout}"
    if a.is_sparse:
        a, b = a.coalesce(), b.coalesce()
        return tensor_difference(a.indices(), b.indices()) or tensor_difference(a.values(), b.values())
    a, b = real(a.detach()), real(b.detach())
    if a.is_floating_point():
        na, nb = a.isnan(), b.isnan()
        if not torch.equal(na, nb):
            return f"NaN at different places: {na.sum()} vs {nb.sum()} NaNs"
        a, b = a[~na], b[~nb]
    if not torch.equal(a, b):
        diff = (a.double() - b.double()).abs()
        return f"values differ, max |diff| {diff[~diff.isnan()].max() if diff.numel() else 0:.3e}"
    return None


def same(a, b, where="value"):
    "Recursive equality like `optim_nb.core.assert_same`, but NaN-aware for tensors."
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        assert isinstance(a, Tensor) and isinstance(b, Tensor), f"{where}: {type(a)} vs {type(b)}"
        problem = tensor_difference(a, b)
        assert problem is None, f"{where}: {problem}"
    elif isinstance(a, dict):
        # as optim_nb.core.assert_same: the same keys, in any order
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} vs {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        assert math.isnan(b), f"{where}: nan vs {b!r}"
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def outcome(fn):
    "('ok', fn()) or ('error', type, message): what a call did, to compare torch's with ours."
    try:
        return ("ok", fn())
    except Exception as e:  # noqa: BLE001 - the exception is the result being compared
        return ("error", type(e), str(e))


def same_outcome(ours, theirs, where="outcome"):
    "Both raised the same error type with the same message, or both returned equal results."
    assert ours[0] == theirs[0], f"{where}: ours {ours[0]} {ours[1:]}, torch {theirs[0]} {theirs[1:]}"
    if ours[0] == "error":
        assert ours[1:] == theirs[1:], f"{where}: ours raised {ours[1:]}, torch raised {theirs[1:]}"
    else:
        same(ours[1], theirs[1], where)


# ---------------------------------------------------------------- a small model

def mlp(seed=0, dtype=torch.float32):
    "A 5-7-3 tanh network: two Linear layers, so two parameter groups are at hand."
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).to(dtype)


def batches(n, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=g, dtype=dtype), torch.randn(16, 3, generator=g, dtype=dtype))
            for _ in range(n)]


def groups(model, case, second_lr_scale=0.5):
    "Two parameter groups with different learning rates (as a float or a tensor, like the option)."
    lr = case.options["lr"]
    return [{"params": model[0].parameters()},
            {"params": model[2].parameters(), "lr": lr * second_lr_scale}]


def loss_of(model, batch):
    x, y = batch
    return torch.nn.functional.mse_loss(model(x), y)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]
