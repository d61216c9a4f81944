"""The browser check (.ci/browser_check.py) on small pages made to fail one way each.

It needs Chromium (.ci/run installs Debian's); without one these tests are skipped.
"""
import base64
import contextlib
import importlib.util
import io
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("browser_check", ROOT / ".ci" / "browser_check.py")
browser_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(browser_check)

CHROMIUM, WHY_NOT = browser_check.find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=f"browser check: {WHY_NOT}")

# MathJax 3 as the book ships it (sphinx-mathjax-offline), for the MathJax-error cases
MATHJAX = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
    / "site-packages" / "sphinx-mathjax-offline" / "static" / "mathjax"
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def page(body, head=""):
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'>{head}</head><body>"
            f"<main style='max-width: 360px; margin: 0 auto'>{body}</main></body></html>")


CLEAN = page("""
  <h1>A clean page</h1>
  <p>Prose, a dollar sign ($5) and an image that loads: <img src="dot.png" alt="dot"></p>
  <pre style="overflow-x: auto">a code line far wider than the column ......................................................</pre>
  <div style="overflow-x: auto"><table><tr><td style="white-space: nowrap">a table far wider than the column, which scrolls on its own</td></tr></table></div>
""")
PAGES = {
    "clean.html": CLEAN,
    "clipped_hidden.html": page("<div style='overflow: hidden'><div style='width: 900px'>clipped box</div></div>"),
    "clipped_visible.html": page("<div style='width: 900px; border: 1px solid'>a box wider than the column</div>"),
    "js_exception.html": page("<p>text</p><script>no_such_function();</script>"),
    "js_console.html": page("<p>text</p><script>console.error('something broke');</script>"),
    "external.html": page("<p><img src='https://example.org/x.png' alt='x'></p>"),
    "outside.html": page("<p><img src='../outside.png' alt='x'></p>"),
    "raw_tex.html": page(r"<p>The step is $\gamma g_t$, and \(x\) as well.</p>"),
    "broken_image.html": page("<p><img src='missing.png' alt='x'></p>"),
}
MATH_PAGES = {
    "math_error.html": page(r"<p>A formula <span class='math'>\(\frac{1}\)</span>.</p>",
                            head="<script defer src='_static/mathjax/tex-chtml.js'></script>"),
    "math_undefined.html": page(r"<p>A formula <span class='math'>\(\notamacro x\)</span>.</p>",
                            head="<script defer src='_static/mathjax/tex-chtml.js'></script>"),
    "math_backslash.html": page(r"<p>The option <span class='math'>\(\text{weight\_decay}\)</span>.</p>",
                                head="<script defer src='_static/mathjax/tex-chtml.js'></script>"),
    "math_ok.html": page(r"<p>A formula <span class='math'>\(\hat v_t = v_t/(1-\beta_2^t)\)</span>.</p>",
                         head="<script defer src='_static/mathjax/tex-chtml.js'></script>"),
}

# Bokeh figures as the book embeds them (optim_nb.stages.show_bokeh), BokehJS from _static/bokeh
BOKEH_JS = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
    / "site-packages" / "bokeh" / "server" / "static" / "js"
BOKEH_HEAD = "".join(f"<script src='_static/bokeh/{f}'></script>" for f in ("bokeh.min.js", "bokeh-widgets.min.js"))


def bokeh_figure(code):
    """A slider and a line; moving the slider runs `code` (JavaScript: `source`, `slider` in scope)."""
    from bokeh.layouts import column
    from bokeh.models import ColumnDataSource, CustomJS, Slider
    from bokeh.plotting import figure

    from optim_nb.stages import show_bokeh
    source = ColumnDataSource(dict(x=[0.0, 1.0, 2.0], y=[0.0, 1.0, 4.0]))
    slider = Slider(start=1.0, end=3.0, value=2.0, step=0.5, title="power", sizing_mode="stretch_width")
    slider.js_on_change("value", CustomJS(args=dict(source=source, slider=slider), code=code))
    plot = figure(height=200, sizing_mode="stretch_width")
    plot.line("x", "y", source=source)
    return show_bokeh(column(slider, plot, sizing_mode="stretch_width")).data


def bokeh_pages():
    moves = "source.data = {x: [0, 1, 2], y: [0, 1, 2].map(v => v ** slider.value)};"
    return {"bokeh_ok.html": page(bokeh_figure(moves), head=BOKEH_HEAD),
            "bokeh_still.html": page(bokeh_figure("const unused = slider.value;"), head=BOKEH_HEAD),
            "bokeh_unloaded.html": page(bokeh_figure(moves))}


def run(build):
    """Check build at 400 and 1000 px: (exit status, output, {page: its report})."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = browser_check.main([str(build), "--widths", "400,1000", "--timeout", "10", "--jobs", "2"])
    out = out.getvalue()
    reports, name = {}, None
    for line in out.splitlines():
        if line.startswith(("FAIL ", "ok   ", "BROKEN ")):
            name = line.split()[1]
            reports[name] = [line]
        elif line.startswith("  ") and name:
            reports[name].append(line)
    return status, out, {k: "\n".join(v) for k, v in reports.items()}


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    root = tmp_path_factory.mktemp("book") / "html"
    root.mkdir()
    (root.parent / "outside.png").write_bytes(PNG)
    (root / "dot.png").write_bytes(PNG)
    pages = dict(PAGES)
    if MATHJAX.is_dir():
        shutil.copytree(MATHJAX, root / "_static" / "mathjax")
        pages.update(MATH_PAGES)
    if BOKEH_JS.is_dir():
        (root / "_static" / "bokeh").mkdir(parents=True)
        for f in ("bokeh.min.js", "bokeh-widgets.min.js"):
            shutil.copyfile(BOKEH_JS / f, root / "_static" / "bokeh" / f)
        pages.update(bokeh_pages())
    for name, html in pages.items():
        (root / name).write_text(html)
    return root


@pytest.fixture(scope="module")
def checked(book):
    return run(book)


def report(checked, name):
    status, out, reports = checked
    assert name in reports, out
    return reports[name]


def test_the_run_fails_and_checks_every_page(checked, book):
    status, out, reports = checked
    assert status == 1, out
    assert set(reports) == {p.name for p in book.glob("*.html")}, out
    assert not any(r.startswith("BROKEN") for r in reports.values()), out


@pytest.mark.parametrize("name", ["clean.html", "math_ok.html", "bokeh_ok.html"])
def test_a_clean_page_passes(checked, name):
    if name.startswith("math") and not MATHJAX.is_dir():
        pytest.skip(f"no MathJax bundle at {MATHJAX}")
    if name.startswith("bokeh") and not BOKEH_JS.is_dir():
        pytest.skip(f"no BokehJS at {BOKEH_JS}")
    assert report(checked, name).startswith("ok   "), report(checked, name)


def test_a_clean_book_passes(tmp_path):
    (tmp_path / "index.html").write_text(CLEAN)
    (tmp_path / "dot.png").write_bytes(PNG)
    status, out, _ = run(tmp_path)
    assert status == 0, out
    assert "clean" in out.splitlines()[-1], out


@pytest.mark.parametrize("name, expected", [
    ("clipped_hidden.html", "overflow"),
    ("clipped_visible.html", "overflow"),
    ("js_exception.html", "uncaught exception"),
    ("js_console.html", "console.error: 'something broke'"),
    ("external.html", "request  not a file of the book: 'https://example.org/x.png'"),
    ("outside.html", "request  a file outside"),
    ("raw_tex.html", "raw TeX"),
    ("broken_image.html", "image    did not load"),
    ("math_error.html", "MathJax error"),
    ("math_undefined.html", "undefined macro"),
    ("math_backslash.html", "backslash inside \\text"),
    ("bokeh_still.html", "slider   Bokeh figure 1: moving the slider changed no data: 'value 2.0 -> "),
    ("bokeh_unloaded.html", "slider   Bokeh figure 1 drew no slider (BokehJS not loaded)"),
])
def test_a_faulty_page_fails(checked, name, expected):
    if name.startswith("math") and not MATHJAX.is_dir():
        pytest.skip(f"no MathJax bundle at {MATHJAX}")
    if name.startswith("bokeh") and not BOKEH_JS.is_dir():
        pytest.skip(f"no BokehJS at {BOKEH_JS}")
    r = report(checked, name)
    assert r.startswith("FAIL ") and expected in r, r


def test_a_clipped_box_fails_at_every_width(checked):
    r = report(checked, "clipped_hidden.html")
    assert "@400px" in r and "@1000px" in r and "is clipped by" in r, r


def test_no_chromium_means_skipped(tmp_path, capsys, monkeypatch):
    (tmp_path / "index.html").write_text(CLEAN)
    monkeypatch.setenv("CHROMIUM", "/nonexistent/chromium")
    assert browser_check.main([str(tmp_path)]) == 0
    assert "SKIPPED" in capsys.readouterr().out
