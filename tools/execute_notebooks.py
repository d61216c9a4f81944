"""Execute every notebook of the book, two at a time, into the book's execution cache.

`make book` runs this before `jupyter-book build`: the build (`execute_notebooks: cache` in
_config.yml) then finds each notebook's outputs in the cache instead of executing the chapters one
after another. The cache is emptied first, so every chapter runs against the current code, as
`force` would run it; a chapter the cache lacks (or whose source changed since) is executed by the
build itself. A failing notebook stops here, with its traceback.

Two at a time, each kernel gets one thread (OMP_NUM_THREADS=1): two kernels with torch's default of
one thread per core spin against each other and run four times slower (14_adam: 18 s for it and
12_rmsprop side by side with one thread each, 83 s with two). A notebook that measures speed says
so in its metadata (`"optim_nb": {"execute": "alone"}`, chapter 53) and runs after the others,
alone, with the threads it would have had.

    .venv/bin/python tools/execute_notebooks.py [--jobs N]
"""
import argparse
import os
import pathlib
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import nbformat
import yaml
from jupyter_cache import get_cache
from jupyter_cache.base import CacheBundleIn
from jupyter_cache.executors.utils import single_nb_execution

ROOT = pathlib.Path(__file__).resolve().parents[1]


def toc_notebooks() -> list:
    "The notebooks that _toc.yml lists (its .md pages have no code to run)."
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc["parts"] for ch in part["chapters"]]
    return [ROOT / f"{f}.ipynb" for f in files if (ROOT / f"{f}.ipynb").exists()]


def alone(path) -> bool:
    "Does the notebook ask to run by itself (it measures speed)?"
    return nbformat.read(path, as_version=4).metadata.get("optim_nb", {}).get("execute") == "alone"


def execute(path: str, timeout: int, threads: int | None = None):
    """Run one notebook in its own folder, as the build does, its kernel with `threads` threads
    (None: torch's default); returns it with outputs, or the error."""
    if threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the kernel this process starts
    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(pathlib.Path(path).parent), timeout=timeout, allow_errors=False)
    return path, result.nb, result.time, result.exc_string if result.err is not None else None


def main():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["execute"]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="notebooks run at once (default 2, CI's cores)")
    args = ap.parse_args()
    cache_path = ROOT / config["cache"]
    shutil.rmtree(cache_path, ignore_errors=True)
    cache = get_cache(str(cache_path))
    # the longest chapters are the largest files: start them first, so that no core idles at the end
    notebooks = sorted(toc_notebooks(), key=lambda p: -p.stat().st_size)
    start, failed = time.time(), []

    def record(path, nb, seconds, error):
        name = pathlib.Path(path).relative_to(ROOT)
        if error:
            failed.append(name)
            print(f"{name}: FAILED after {seconds:.1f} s\n{error}", flush=True)
            return
        entry = cache.add_nb_to_project(path)
        cache.cache_notebook_bundle(CacheBundleIn(nb, entry.uri, data={"execution_seconds": seconds}),
                                    check_validity=False, overwrite=True)
        print(f"{name}: {seconds:.1f} s", flush=True)

    together = [p for p in notebooks if not alone(p)]
    with ProcessPoolExecutor(args.jobs) as pool:
        threads = 1 if args.jobs > 1 else None
        futures = [pool.submit(execute, str(p), config["timeout"], threads) for p in together]
        for future in as_completed(futures):
            record(*future.result())
    for p in notebooks:
        if alone(p):
            record(*execute(str(p), config["timeout"]))
    print(f"{len(notebooks)} notebooks in {time.time() - start:.0f} s with {args.jobs} at once"
          + (f"; failed: {', '.join(map(str, failed))}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
