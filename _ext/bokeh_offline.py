"""Bokeh figures with no network: BokehJS is copied from the installed bokeh package into the
book's `_static/bokeh/` once, and only pages that embed a Bokeh figure load it.

A chapter embeds a figure with `optim_nb.stages.show_bokeh(layout)`, whose HTML carries the
marker `data-bokeh-offline`; this extension looks for that marker in each page's body.
"""
import shutil
from pathlib import Path

MARKER = "data-bokeh-offline"
FILES = ("bokeh.min.js", "bokeh-widgets.min.js")


def _source() -> Path:
    import bokeh
    return Path(bokeh.__file__).parent / "server" / "static" / "js"


def _add_scripts(app, pagename, templatename, context, doctree):
    if MARKER in context.get("body", ""):
        for name in FILES:
            app.add_js_file(f"bokeh/{name}", priority=400)


def _copy(app, exception):
    if exception is None and app.builder.format == "html":
        target = Path(app.outdir) / "_static" / "bokeh"
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copyfile(_source() / name, target / name)


def setup(app):
    app.connect("html-page-context", _add_scripts)
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
