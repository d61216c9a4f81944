"""The registry's entries as pytest parameters, and its option spaces as hypothesis strategies.

`optim_nb.registry` states each option space as plain data (it does not import hypothesis): a
list is one of its values, a pair of numbers `(lo, hi)` a float between them, any other tuple a
tuple drawn element by element, anything else that value.
"""
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


@st.composite
def learning_rate(draw, entry, tensor=True):
    "A learning rate from the entry's range: a float, or (if `tensor`) maybe a 0-dim or 1-element tensor."
    lr = draw(st.floats(*entry.lr_range))
    if tensor and draw(st.booleans()):
        return torch.tensor(lr) if draw(st.booleans()) else torch.tensor([lr])
    return lr


def accepts(cls, **kwargs) -> bool:
    "Does the constructor of `cls` accept `kwargs`?"
    try:
        cls([torch.zeros(1, requires_grad=True)], **kwargs)
    except Exception:  # noqa: BLE001 - any refusal counts
        return False
    return True
