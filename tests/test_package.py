"""The installed package: what `import optim_nb` gives, and what it does not pull in."""
import subprocess
import sys

import optim_nb


def test_public_names():
    assert {"Optimizer", "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW"} <= set(optim_nb.__all__)
    for name in optim_nb.__all__:
        assert getattr(optim_nb, name) is not None


def test_import_does_not_load_matplotlib():
    code = "import sys, optim_nb; assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
