"""optim_nb/ must be exactly what the chapters export: the notebooks are the only source."""
import filecmp
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _differences(a: Path, b: Path):
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [f"only in {a.name}/: {n}" for n in cmp.left_only]
    out += [f"only in the export: {n}" for n in cmp.right_only]
    out += [f"differs: {n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        out += _differences(a / sub, b / sub)
    return out


def test_package_is_what_the_chapters_export(tmp_path):
    for name in ("chapters", "pyproject.toml", "optim_nb"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    exporter = Path(sys.executable).with_name("nbdev-export")
    subprocess.run([str(exporter)], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    diff = _differences(ROOT / "optim_nb", tmp_path / "optim_nb")
    assert not diff, "optim_nb/ differs from what the chapters export; run `make export`:\n" + "\n".join(diff)


def test_the_check_catches_a_hand_edit(tmp_path):
    """The comparison above must fail when a module is edited by hand."""
    shutil.copytree(ROOT / "optim_nb", tmp_path / "edited", ignore=shutil.ignore_patterns("__pycache__"))
    with open(tmp_path / "edited" / "sgd.py", "a") as f:
        f.write("\n# edited by hand\n")
    assert _differences(ROOT / "optim_nb", tmp_path / "edited") == ["differs: sgd.py"]
