#!/usr/bin/env python3
"""Open every page of the built book in headless Chromium; fail on what a reader would trip over.

    python3 .ci/browser_check.py [BUILD_DIR] [--widths 400,1000,1400] [--timeout 30]

BUILD_DIR (default _build/html) is walked for *.html (not _static/, _sources/, _images/).
Every page is loaded from file:// at the first width, then checked at each width in turn (the
viewport resized: media queries and layout follow, as when a reader resizes the window), and the
run fails on
  js        an uncaught exception, or an error on the console (console.error, a failed load);
  request   a request for anything outside BUILD_DIR: any URL that is not file:// (data: and
            blob: are inline and allowed), or a file:// URL outside BUILD_DIR;
  math      MathJax not loaded or not finished, a MathJax error (parse error, undefined macro),
            a backslash inside \\text{...} (MathJax prints `\\_` there literally), raw TeX left
            in prose ($..$, $$, \\(, \\[, \\begin{, \\command);
  overflow  an element sticking out of the content column (or of its parent) that does not
            scroll on its own (overflow-x auto/scroll, e.g. code cells, scrolling tables), text
            wider than its own box that is clipped or spills, an image wider than the column,
            or the page scrolling sideways;
  image     an image that did not load;
  slider    a Bokeh figure (`.bokeh-figure`, see chapters/90_stages.ipynb) that did not draw, or
            whose first slider, dragged with the mouse, changed no data of the figure.
A page that only redirects (<meta http-equiv="refresh">, the book's index.html) is not opened;
its target must exist inside BUILD_DIR.

Chromium (Debian's `chromium`, or $CHROMIUM) is driven over the DevTools protocol on a pipe
(--remote-debugging-pipe): standard library only. Outgoing traffic goes to a dead proxy, so a
request outside the book is listed and fails at once, and nothing leaves the machine.
Without Chromium the check prints that it was skipped, and why, and exits 0.
Exit status: 0 clean or skipped, 1 problems found, 2 the browser failed.
"""
import argparse
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlsplit

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--allow-file-access-from-files",
         # every http(s)/ws request, loopback included, goes to a port nobody listens on
         "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
         "--remote-debugging-pipe"]
SKIP_DIRS = ("_static", "_sources", "_images")


# --- the DevTools protocol over a pipe ------------------------------------------------------------

class CDP:
    """Chromium's DevTools protocol on --remote-debugging-pipe: Chromium reads fd 3, writes fd 4,
    one JSON message per NUL-terminated frame. Commands wait for their answer; events collect in
    self.events until taken."""

    def __init__(self, chromium, profile):
        to_chrome, self._w = os.pipe()
        self._r, from_chrome = os.pipe()
        # the child's ends, moved above 9 so that putting them on fds 3 and 4 clobbers neither
        far = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_chrome, from_chrome)]
        os.close(to_chrome)
        os.close(from_chrome)
        # bash (not dash: fds above 9) puts them on 3 and 4 (no preexec_fn: several threads start browsers)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{far[0]} 4>&{far[1]} {far[0]}<&- {far[1]}>&-',
             chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=far, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in far:
            os.close(fd)
        self._buf = b""
        self._id = 0
        self.events = []

    def _read(self, timeout):
        ready, _, _ = select.select([self._r], [], [], max(0.0, timeout))
        if not ready:
            return
        chunk = os.read(self._r, 1 << 20)
        if not chunk:
            raise RuntimeError("Chromium closed the DevTools pipe (crashed?)")
        self._buf += chunk
        *frames, self._buf = self._buf.split(b"\0")
        self.events += [json.loads(f) for f in frames]

    def send(self, method, params=None, session=None, timeout=60):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.events):
                if m.get("id") == self._id:
                    del self.events[i]
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error'].get('message', m['error'])}")
                    return m["result"]
            if time.monotonic() > end:
                raise TimeoutError(f"{method}: no answer in {timeout} s")
            self._read(end - time.monotonic())

    def take_events(self, session):
        """The events of one session so far (removed from the queue)."""
        mine = [m for m in self.events if m.get("sessionId") == session and "method" in m]
        self.events = [m for m in self.events if not (m.get("sessionId") == session and "method" in m)]
        return mine

    def close(self):
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._r)
        os.close(self._w)


# --- in the page ------------------------------------------------------------------------------------

# Resolves when the page is ready to be judged: MathJax has typeset (the book loads MathJax 3
# deferred), fonts and images are in, two frames are painted. Returns MathJax's state.
WAIT_JS = r"""
(async (timeoutMs) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const t0 = performance.now();
  let mathjax = 'none';
  if (document.querySelector('script[src*="mathjax" i], .math')) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      if (performance.now() - t0 > timeoutMs) { mathjax = 'not loaded'; break; }
      await sleep(50);
    }
    if (mathjax !== 'not loaded')
      mathjax = await Promise.race([
        MathJax.startup.promise.then(() => 'done', e => 'failed: ' + e),
        sleep(Math.max(100, timeoutMs - (performance.now() - t0))).then(() => 'timed out')]);
  }
  await Promise.race([document.fonts.ready, sleep(5000)]);
  const loading = [...document.images].filter(i => !i.complete);
  await Promise.race([Promise.all(loading.map(i => new Promise(r => { i.onload = i.onerror = r; }))),
                      sleep(5000)]);
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  return mathjax;
})
"""

# Resolves after two painted frames: the layout has followed a resize.
FRAMES_JS = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"

# Returns a list of problems [{kind, what, where, text}] found in the content column.
CHECK_JS = r"""
(() => {
  // MathJax's hidden assistive MathML is clipped on purpose but counts in scrollWidth
  const hide = document.createElement('style');
  hide.textContent = 'mjx-assistive-mml { display: none !important; }';
  document.head.appendChild(hide);
  try { return check(); } finally { hide.remove(); }

  function check() {
  const problems = [];
  const add = (kind, what, el, text) => problems.push({kind, what, where: el ? section(el) : '', text});
  const clip = s => Array.from(s).slice(0, 70).join('');
  const snip = el => clip((el.innerText || el.textContent || '').replace(/\s+/g, ' ').trim());
  const desc = el => {
    let s = el.tagName.toLowerCase() + (el.id ? '#' + el.id : '');
    const cls = (el.getAttribute('class') || '').trim().split(/\s+/).filter(c => c).slice(0, 3);
    return cls.length ? s + '.' + cls.join('.') : s;
  };
  const section = el => {   // the nearest heading: where in the page the problem is
    const sec = el.closest('section');
    const h = sec && sec.querySelector('h1, h2, h3, h4');
    return h ? h.textContent.replace(/[¶#]\s*$/, '').replace(/\s+/g, ' ').trim().slice(0, 50) : '';
  };
  const col = document.querySelector('.bd-article') || document.querySelector('.bd-content')
              || document.querySelector('main') || document.body;
  const shown = el => { const r = el.getBoundingClientRect(); return r.width > 0 || r.height > 0; };

  // math ---------------------------------------------------------------------------------------
  let items = [];
  try { items = MathJax.startup.document.getMathItemsWithin(col); } catch (e) {}
  const tex = it => clip(String(it.math).replace(/\s+/g, ' ').trim());
  for (const it of items) {
    let why = null;
    try {
      it.root.walkTree(n => {
        if (why) return;
        if (n.isKind('merror')) why = 'MathJax error';
        else if (n.isKind('mtext') && n.attributes.get('mathcolor') === 'red') why = 'undefined macro';
        else if (n.isKind('mtext')) {
          const t = n.childNodes.map(c => (c && c.isKind('text') ? c.getText() : '')).join('');
          if (t.includes('\\')) why = `backslash inside \\text{${t}}`;
        }
      });
    } catch (e) {}
    if (why) add('math', why, it.typesetRoot || col, tex(it));
  }
  const rawTeX = /\\\(|\\\[|\$\$|\\begin\{|\\[A-Za-z]+\{|\\_|(^|[^\\\w])\$[^$\s]([^$]*[^\\\s])?\$/;
  const notProse = 'pre, code, kbd, samp, script, style, textarea, mjx-container, .highlight, math';
  const walk = document.createTreeWalker(col, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const p = n.parentElement;
    if (!p || seen.has(p) || p.closest(notProse)) continue;
    const m = n.nodeValue.match(rawTeX);
    if (!m) continue;
    seen.add(p);
    add('math', 'raw TeX in ' + desc(p), p, clip(n.nodeValue.slice(Math.max(0, m.index - 20)).replace(/\s+/g, ' ')));
  }

  // horizontal overflow ------------------------------------------------------------------------
  const scrolls = el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
  const scrollerOf = new Map();
  const scroller = el => {       // the nearest element (self included) that scrolls on its own
    if (!el || el === col) return null;
    if (!scrollerOf.has(el)) scrollerOf.set(el, scrolls(el) ? el : scroller(el.parentElement));
    return scrollerOf.get(el);
  };
  const ignore = el => {
    if (el.closest('.skip-link, .visually-hidden, .sr-only')) return true;
    const cs = getComputedStyle(el);
    return cs.position === 'fixed' || cs.visibility === 'hidden' || !shown(el);
  };
  // a formula or a drawing counts as one box, not as its glyphs and strokes
  const all = [...col.querySelectorAll(':not(mjx-container *, svg *)')];
  // (1) elements sticking out of their parent's box, outside any scroller
  const sticking = new Map();
  // the box an element is laid out in: its parent, or the nearest ancestor with a box of its own
  // (an element with display: contents, like the root <div> of a Bokeh figure, has none)
  const boxOf = el => { let p = el.parentElement;
                        while (p && p !== col && getComputedStyle(p).display === 'contents') p = p.parentElement;
                        return p; };
  for (const el of all) {
    const par = boxOf(el);
    if (!par || scroller(par) || ignore(el)) continue;
    const pr = par.getBoundingClientRect();
    const by = Math.round(el.getBoundingClientRect().right - (pr.left + par.clientLeft + (par.clientWidth || pr.width)));
    if (by > 1) sticking.set(el, {par, by});
  }
  const byParent = new Map();                         // the outermost ones, one report per parent
  for (const [el, {par, by}] of sticking) {
    let inner = false;
    for (let a = el.parentElement; a && a !== col; a = a.parentElement) if (sticking.has(a)) inner = true;
    if (inner) continue;
    if (!byParent.has(par)) byParent.set(par, []);
    byParent.get(par).push({el, by});
  }
  for (const [par, out] of byParent) {
    const {el, by} = out.reduce((a, b) => (b.by > a.by ? b : a));
    const how = getComputedStyle(par).overflowX === 'visible' ? 'sticks out of' : 'is clipped by';
    const more = out.length > 1 ? ` (and ${out.length - 1} more)` : '';
    add('overflow', `${desc(el)}${more} ${how} ${desc(par)} by ${by}px`, el,
        el.tagName === 'IMG' ? (el.getAttribute('src') || '').split('/').pop() : snip(el));
  }
  // (2) content wider than its own box (clipped, or spilling as text does), outside any scroller;
  //     inline formulas (and the theme's span.math around them, which clips) are left to (1): the
  //     overhang of a glyph (the hat of ε̂) makes them a few px "wider" than themselves, unseen
  const wide = [col, ...all].filter(el => el.clientWidth && el.scrollWidth > el.clientWidth + 1
      && !scroller(el) && !ignore(el)
      && !(el.tagName === 'MJX-CONTAINER' && el.getAttribute('display') !== 'true')
      && !el.matches('span.math'));
  const stuck = [...sticking.keys()];
  for (const el of wide) {
    if (wide.some(o => o !== el && el.contains(o)) || stuck.some(s => el.contains(s))) continue;
    const how = getComputedStyle(el).overflowX === 'visible' ? 'spills' : 'is clipped';
    add('overflow', `content of ${desc(el)} ${how}: ${el.scrollWidth}px in ${el.clientWidth}px`, el, snip(el));
  }
  // (3) the page itself scrolls sideways
  const page = document.documentElement;
  if (page.scrollWidth > page.clientWidth + 1)
    add('overflow', `the page scrolls sideways: ${page.scrollWidth}px in ${page.clientWidth}px`, null, '');

  // images ---------------------------------------------------------------------------------------
  for (const im of col.querySelectorAll('img')) {
    const src = (im.getAttribute('src') || '').split('/').pop().slice(0, 60);
    if (im.complete && im.naturalWidth === 0) add('image', 'did not load', im, src);
    else if (shown(im) && im.getBoundingClientRect().width > col.clientWidth + 1)
      add('overflow', `image wider than the column (${Math.round(im.getBoundingClientRect().width)}px in ${col.clientWidth}px)`, im, src);
  }
  return problems;
  }
})()
"""


# Waits (up to timeoutMs) for every Bokeh figure of the page to draw its sliders; scrolls the
# first slider handle of figure `k` to the middle of the viewport; returns where it is (viewport
# coordinates), the slider's bar and the figure's data as text, or why there is none.
BOKEH_JS = r"""
(async (k, timeoutMs) => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  const figures = [...document.querySelectorAll('.bokeh-figure')];
  const handles = () => {          // Bokeh draws widgets inside shadow roots: walk into them
    const found = [];
    const visit = root => { for (const el of root.querySelectorAll('*')) {
      if (el.matches('.noUi-handle')) found.push(el);
      if (el.shadowRoot) visit(el.shadowRoot);
    } };
    visit(document);
    return found;
  };
  const figureOf = el => { while (el.getRootNode() !== document) el = el.getRootNode().host;
                           return el.closest('.bokeh-figure'); };
  const t0 = performance.now();
  let handle;
  while (!(handle = handles().find(h => figureOf(h) === figures[k]))) {
    if (performance.now() - t0 > timeoutMs) return {error: 'drew no slider (BokehJS ' +
        (window.Bokeh ? 'loaded' : 'not loaded') + ')'};
    await sleep(50);
  }
  handle.scrollIntoView({block: 'center'});
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const h = handle.getBoundingClientRect(), bar = handle.closest('.noUi-target').getBoundingClientRect();
  const data = [];
  for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.type === 'ColumnDataSource') data.push(JSON.stringify(m.data, (key, v) =>
        ArrayBuffer.isView(v) ? Array.from(v) : v));
  return {x: h.x + h.width / 2, y: h.y + h.height / 2, left: bar.x, right: bar.x + bar.width,
          value: handle.getAttribute('aria-valuenow'), data: data.join('\n')};
})
"""


def move_sliders(cdp, session, timeout):
    """Drag the first slider of every Bokeh figure of the page with the mouse; the problems found."""
    def evaluate(k):
        r = cdp.send("Runtime.evaluate", {"expression": f"({BOKEH_JS})({k}, {int(timeout * 1000)})",
                                          "awaitPromise": True, "returnByValue": True}, session, timeout + 20)
        if "exceptionDetails" in r:
            raise RuntimeError(f"the slider check's own script failed: {r['exceptionDetails']}")
        return r["result"]["value"]

    n = cdp.send("Runtime.evaluate", {"expression": "document.querySelectorAll('.bokeh-figure').length",
                                      "returnByValue": True}, session)["result"]["value"]
    problems = []
    for k in range(n):
        before = evaluate(k)
        if "error" in before:
            problems.append({"kind": "slider", "what": f"Bokeh figure {k + 1} {before['error']}",
                             "where": "", "text": ""})
            continue
        # press on the handle, move a third of the bar towards its longer side, release
        x, y = before["x"], before["y"]
        to = x + (before["right"] - before["left"]) / 3 * (1 if before["right"] - x > x - before["left"] else -1)
        mouse = lambda kind, at, **kw: cdp.send("Input.dispatchMouseEvent", dict(  # noqa: E731
            type=kind, x=at, y=y, button="left", clickCount=1, **kw), session)
        mouse("mousePressed", x, buttons=1)
        for i in range(1, 11):
            mouse("mouseMoved", x + (to - x) * i / 10, buttons=1)
        mouse("mouseReleased", to, buttons=0)
        after = evaluate(k)
        if after.get("value") == before["value"]:
            problems.append({"kind": "slider", "what": f"Bokeh figure {k + 1}: the dragged slider did not move",
                             "where": "", "text": f"value {before['value']}"})
        elif after.get("data") == before["data"]:
            problems.append({"kind": "slider", "what": f"Bokeh figure {k + 1}: moving the slider changed no data",
                             "where": "", "text": f"value {before['value']} -> {after.get('value')}"})
    return problems


# --- one page ---------------------------------------------------------------------------------------

def outside(url, root):
    """Why a requested URL is outside the built book, or None when it is inside."""
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about") or url.startswith("chrome-error:"):
        return None
    if parts.scheme != "file":
        return "not a file of the book"
    path = Path(unquote(parts.path)).resolve()
    if path != root and root not in path.parents:
        return "a file outside " + str(root)
    return None


def console_problems(events, root):
    """Uncaught exceptions, console errors and requests outside the book, from the page's events."""
    problems, requested = [], []
    for e in events:
        method, p = e["method"], e.get("params", {})
        if method == "Network.requestWillBeSent":
            url = p["request"]["url"]
            requested.append(url)
            why = outside(url, root)
            if why:
                problems.append({"kind": "request", "what": why, "where": "", "text": url})
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = (d.get("exception") or {}).get("description") or d.get("text", "")
            problems.append({"kind": "js", "what": "uncaught exception", "where": d.get("url", ""),
                             "text": text.splitlines()[0] if text else ""})
        elif method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            problems.append({"kind": "js", "what": f"console.{p['type']}", "where": "", "text": text})
        elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
            entry = p["entry"]
            if entry.get("url") and outside(entry["url"], root):
                continue                    # the request itself is reported above
            problems.append({"kind": "js", "what": f"console error ({entry.get('source', '')})",
                             "where": "", "text": f"{entry['text']} {entry.get('url', '')}".strip()})
    return problems, requested


def check_page(cdp, url, widths, root, timeout):
    """Load url in a fresh tab at the first width, check it, then at each further width (the
    viewport resized, as a reader resizes the window: media queries and layout follow, nothing is
    loaded again). Returns ({width: problems}, number of requests); problems that belong to the
    page rather than to a width (exceptions, console errors, requests, MathJax) go under width 0."""
    # a fresh browser context per page: no storage or cache carried over from another page,
    # every page is checked as a reader's first visit
    context = cdp.send("Target.createBrowserContext")["browserContextId"]
    target = cdp.send("Target.createTarget", {"url": "about:blank", "browserContextId": context})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    resize = lambda w: cdp.send("Emulation.setDeviceMetricsOverride",  # noqa: E731
                                {"width": w, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable", {}, session)
        resize(widths[0])
        nav = cdp.send("Page.navigate", {"url": url}, session)
        if nav.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {nav['errorText']}")
        # wait for the load event, then for MathJax, fonts and images
        end = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" and e.get("sessionId") == session
                      for e in cdp.events):
            if time.monotonic() > end:
                raise TimeoutError(f"no load event in {timeout} s")
            cdp._read(end - time.monotonic())
        r = cdp.send("Runtime.evaluate", {"expression": f"({WAIT_JS})({int(timeout * 1000)})",
                                          "awaitPromise": True, "returnByValue": True},
                     session, timeout=timeout + 20)
        mathjax = r["result"].get("value")
        found = {}
        for i, w in enumerate(widths):
            if i:
                resize(w)
                cdp.send("Runtime.evaluate", {"expression": FRAMES_JS, "awaitPromise": True}, session)
            r = cdp.send("Runtime.evaluate", {"expression": CHECK_JS, "returnByValue": True}, session)
            if "exceptionDetails" in r:
                raise RuntimeError(f"the check's own script failed: {r['exceptionDetails']}")
            found[w] = r["result"]["value"]
        sliders = move_sliders(cdp, session, timeout)
        page, requested = console_problems(cdp.take_events(session), root)
        page += sliders
        if mathjax not in ("done", "none"):
            page.insert(0, {"kind": "math", "what": f"MathJax {mathjax}", "where": "", "text": ""})
        found[0] = page
        return found, len(requested)
    finally:
        cdp.send("Target.closeTarget", {"targetId": target})
        cdp.send("Target.disposeBrowserContext", {"browserContextId": context})
        cdp.take_events(session)


# --- the book ---------------------------------------------------------------------------------------

REFRESH = re.compile(r"""<meta[^>]*http-equiv=["']?refresh["']?[^>]*content=["'][^"']*url=([^"'>\s]+)""", re.I)


def pages_of(root):
    """(pages to open, redirect problems): every *.html outside _static/_sources/_images."""
    pages, problems = [], []
    for f in sorted(root.rglob("*.html")):
        if f.relative_to(root).parts[0] in SKIP_DIRS:
            continue
        m = REFRESH.search(f.read_text(errors="replace")[:4000])
        if not m:
            pages.append(f)
            continue
        target = (f.parent / unquote(m.group(1).split("#")[0])).resolve()
        if not target.is_file() or outside(target.as_uri(), root):
            problems.append(f"{f.relative_to(root)}: redirects to {m.group(1)}, not a page of the book")
    return pages, problems


def find_chromium():
    """(path, None) or (None, why not)."""
    if os.environ.get("CHROMIUM"):
        path = shutil.which(os.environ["CHROMIUM"])
        return (path, None) if path else (None, f"$CHROMIUM={os.environ['CHROMIUM']} is not an executable")
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name), None
    return None, "no chromium on PATH (Debian: apt-get install chromium chromium-driver)"


def report(name, found, nreq, seconds):
    """The lines printed for one page."""
    lines = [f"{'FAIL' if any(found.values()) else 'ok  '} {name} ({nreq} requests, {seconds:.1f} s)"]
    for w, problems in sorted(found.items()):
        for p in problems:
            where = f" (in \"{p['where']}\")" if p["where"] else ""
            text = f": {p['text']!r}" if p["text"] else ""
            lines.append(f"  {f'@{w}px' if w else 'page':7} {p['kind']:8} {p['what']}{where}{text}")
    return "\n".join(lines)


def check_pages(chromium, pages, root, widths, timeout, jobs):
    """Check the pages with `jobs` browsers side by side; print each page's report as it comes.
    Returns (names of the failing pages, names of the pages that could not be checked)."""
    todo, lock = list(pages), threading.Lock()
    failed, broken = [], []

    def one_browser():
        profile = tempfile.mkdtemp(prefix="browser-check-")
        cdp = CDP(chromium, profile)
        try:
            cdp.send("Browser.getVersion", timeout=30)
            while True:
                with lock:
                    if not todo:
                        return
                    f = todo.pop(0)
                name, t = str(f.relative_to(root)), time.monotonic()
                try:
                    found, nreq = check_page(cdp, f.as_uri(), widths, root, timeout)
                    text = report(name, found, nreq, time.monotonic() - t)
                except (RuntimeError, TimeoutError) as e:
                    if cdp.proc.poll() is not None:
                        raise
                    found, text = None, f"BROKEN {name}: {e}"
                with lock:
                    print(text, flush=True)
                    if found is None:
                        broken.append(name)
                    elif any(found.values()):
                        failed.append(name)
        finally:
            cdp.close()
            shutil.rmtree(profile, ignore_errors=True)

    with ThreadPoolExecutor(jobs) as pool:
        for browser in [pool.submit(one_browser) for _ in range(jobs)]:
            browser.result()
    return failed, broken


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", nargs="?", default="_build/html", help="the built book (default _build/html)")
    ap.add_argument("--widths", default="400,1000,1400", help="viewport widths in px (default 400,1000,1400)")
    ap.add_argument("--timeout", type=float, default=30, help="seconds a page may take to load and typeset")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                    help="browsers side by side (default: the cores, at most 4)")
    a = ap.parse_args(argv)
    root = Path(a.build).resolve()
    if not any(root.glob("*.html")):
        print(f"browser check: {root} holds no built pages (run `make book` first)")
        return 2
    chromium, why = find_chromium()
    if not chromium:
        print(f"browser check: SKIPPED, {why}")
        return 0
    widths = [int(w) for w in a.widths.split(",")]
    pages, redirect_problems = pages_of(root)
    t0 = time.monotonic()
    print(f"browser check: {len(pages)} pages of {root} at {widths} px, {a.jobs} x {chromium}", flush=True)
    for line in redirect_problems:
        print("FAIL " + line)
    failed, broken = check_pages(chromium, pages, root, widths, a.timeout, max(1, a.jobs))
    failed += redirect_problems
    verdict = "clean" if not failed and not broken else f"{len(failed)} failing, {len(broken)} not checked"
    print(f"browser check: {len(pages)} pages x {len(widths)} widths in {time.monotonic() - t0:.0f} s: {verdict}")
    return 2 if broken else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
