"""The registry's entries as pytest parameters, and its option spaces as hypothesis strategies.

`optim_nb.registry` states each option space as plain data (it does not import hypothesis): a
list is one of its values, a pair of numbers `(lo, hi)` a float between them, any other tuple a
tuple drawn element by element, anything else that value.
"""
import inspect
import math

import pytest
import torch
from hypothesis import strategies as st

from optim_nb.registry import REGISTRY

ENTRIES = list(REGISTRY.values())
each_entry = pytest.mark.parametrize("entry", ENTRIES, ids=str)
DTYPES = st.sampled_from([torch.float32, torch.float64])


def _is_range(spec) -> bool:
    return (isinstance(spec, tuple) and len(spec) == 2
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in spec))


def strategy(spec):
    "The hypothesis strategy of one option's space."
    if isinstance(spec, list):
        return st.one_of([strategy(s) for s in spec])
    if _is_range(spec):
        return st.floats(*spec)
    if isinstance(spec, tuple):
        return st.tuples(*map(strategy, spec))
    return st.just(spec)


@st.composite
def options(draw, entry, without=()):
    "Options of `entry` drawn from its space (less the keys `without`), repaired by its `constrain`."
    drawn = {k: draw(strategy(v)) for k, v in entry.space.items() if k not in without}
    return entry.constrain(drawn) if entry.constrain else drawn


def steps_with_shaped_lr(entry) -> bool:
    """Does the reference step with lr as a 1-element tensor of one dimension? torch's classes do;
    schedule-free's reference passes lr as `alpha`, which takes a number or a 0-dim tensor only."""
    w = torch.zeros(shaped(entry, 2), requires_grad=True)
    w.grad = torch.ones_like(w)
    opt = made(entry, entry.reference)([w], lr=torch.tensor([0.01]))
    try:
        opt.step()
    except TypeError:
        return False
    return True


@st.composite
def learning_rate(draw, entry, tensor=True):
    """A learning rate from the entry's range: a float, or (if `tensor`) maybe a 0-dim or 1-element
    tensor (the latter where the reference steps with it)."""
    lr = draw(st.floats(*entry.lr_range))
    if tensor and draw(st.booleans()):
        return torch.tensor(lr) if draw(st.booleans()) or not steps_with_shaped_lr(entry) else torch.tensor([lr])
    return lr


def accepts(cls, shape=(1,), **kwargs) -> bool:
    "Does the constructor of `cls` accept `kwargs` (for a parameter of `shape`)?"
    try:
        cls([torch.zeros(shape, requires_grad=True)], **kwargs)
    except Exception:  # noqa: BLE001 - any refusal counts
        return False
    return True


def takes(entry, name: str) -> bool:
    """Does the torch.optim class of `entry` have the argument `name`? The flags are not everyone's:
    Adafactor has `foreach` and `maximize` only, Muon none of them. Lion's reference has `foreach` as a
    class of its own (`Entry.foreach_source`), which `made` builds for `foreach=True`."""
    return (name in inspect.signature(entry.reference).parameters
            or (name == "foreach" and entry.foreach_source is not None))


def flags(entry, **kwargs) -> dict:
    "The keyword arguments of `kwargs` that the entry's torch.optim class takes (the others left out)."
    return {k: v for k, v in kwargs.items() if takes(entry, k)}


def shaped(entry, *shape) -> tuple:
    "`shape`, or for an entry that takes matrices only (`shapes == '2-D'`) a matrix of as many elements."
    if entry.shapes == "2-D" and len(shape) != 2:
        return (math.prod(shape), 1)
    return shape


def fitting(entry, params) -> list:
    "The parameters of `params` the tests give the entry: all of them, or for a '2-D' entry its matrices."
    return [p for p in params if entry.shapes != "2-D" or p.dim() == 2]


def made(entry, cls):
    """A factory: `cls(...)` ready to step, as its users make it (in training mode for an entry with
    train()/eval() modes: `Entry.ready`). The reference takes `foreach` as torch's classes do: where its
    multi-tensor path is a class of its own (Lion), `Entry.reference_paths` picks the class."""
    if cls is entry.reference:
        cls = entry.reference_paths
    if not entry.train_eval:
        return cls
    return lambda *args, **kwargs: entry.ready(cls(*args, **kwargs))


def for_tests(entry, cls):
    """`cls` as the tests build it from a model's parameters: ready to step (`made`), and for a '2-D'
    entry a factory that hands it only the matrices of each group (a model's biases then stay where
    they are)."""
    cls = made(entry, cls)
    if entry.shapes != "2-D":
        return cls

    def matrices_only(params, *args, **kwargs):
        groups = []
        for g in params:
            if isinstance(g, dict):
                groups.append({**g, "params": fitting(entry, g["params"])})
            elif g.dim() == 2:
                groups.append(g)
        return cls(groups, *args, **kwargs)
    return matrices_only
