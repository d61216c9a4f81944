"""The installed package: what `import optim_nb` gives, and what it does not pull in."""
import subprocess
import sys

import optim_nb
from optim_nb.registry import REGISTRY


def test_public_names_are_the_registrys_optimizers():
    assert {"Optimizer", *REGISTRY} <= set(optim_nb.__all__)
    for name in optim_nb.__all__:
        assert getattr(optim_nb, name) is not None
    for name, entry in REGISTRY.items():
        assert getattr(optim_nb, name) is entry.cls


def test_import_loads_neither_matplotlib_nor_the_harness():
    "The package's names come from the registry; the test harness and the drawing helpers stay out."
    code = ("import sys, optim_nb; loaded = [m for m in ('matplotlib', 'hypothesis', 'optim_nb.testing', "
            "'optim_nb.stages') if m in sys.modules]; assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)
