"""Two defects of the HTML that Jupyter Book 1's default extensions write into every page, each of
which a reader's browser reports as an error (the browser check in .ci/run fails on both):

* sphinx-thebe adds its inline settings script twice, so the second `const THEBE_JS_URL` throws
  "Identifier 'THEBE_JS_URL' has already been declared": every repeated script is dropped;
* the theme's templates read a `default_mode` that nothing sets, so the page says
  `data-default-mode=""`, which the theme's script rejects ("Got invalid theme mode") before
  falling back to "auto": the book says "auto" itself.
"""


def _fix_page(app, pagename, templatename, context, doctree):
    scripts, seen = [], set()
    for js in context.get("script_files", []):
        # the same script: the same file (the two copies say None and "" for "none") and attributes
        name = getattr(js, "filename", js) or ""
        key = (str(name), tuple(sorted((k, str(v)) for k, v in getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            scripts.append(js)
    context["script_files"] = scripts
    context.setdefault("default_mode", "auto")


def setup(app):
    app.connect("html-page-context", _fix_page, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
