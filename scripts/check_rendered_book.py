"""Open every page of the built book in headless Chromium and check what a reader would see.

For each page listed in ``_toc.yml`` (root and chapters), Chromium loads the HTML file, runs its scripts for a
virtual-time budget (MathJax typesets then) and dumps the resulting DOM. The check asserts:

* maths is typeset: every element of class ``math`` holds an ``mjx-container`` and no raw TeX delimiters
  (``\\(``, ``\\[``, ``$$``) are left in the visible text outside code blocks;
* every ``<img>`` loads: its ``src`` is a local file of the build (no network), not empty, that Pillow decodes
  (SVG: parses as XML); ``data:`` images are decoded too;
* no notebook output shows an error: no traceback output, no cell output containing a Python traceback, no stderr
  stream containing "Error";
* no raw inline TeX (``$\\eta$``, ``$x_t$``: a ``$...$`` pair holding a backslash, ``_``, ``^`` or ``{``) in the
  visible text outside code blocks, where MathJax would not see it (figure labels and table cells are common places).
* tables read as tables, not as data dumps: no column header that is a raw identifier (``reward_lo``,
  ``harmful_kw``: give it a readable name) and no cell that is a bare number with more than 3 decimals and more
  than 4 significant digits (``205.899587``: round it; a small setting such as ``0.0001`` is fine).

And, measured in the laid-out page by a probe script that Chromium runs in a copy of the page (``LAYOUT_PROBE``):

* at 1280 px, nothing is clipped: no table, cell-output text block or displayed equation in the article is wider
  than its container (a reader would have to scroll sideways inside it or would not see its right side);
* at 1280 px, every figure of the article (an ``<img>`` of at least 64 px) sits in a ``<figure>`` with a non-empty
  caption, and is not shrunk so far that its labels become unreadable: shown at no less than ``MIN_LABEL_SCALE`` of
  its natural width, counted at 100 dpi (a 200-dpi PNG may be shown at half its pixel width; draw wide figures
  narrower, as two rows of panels, rather than letting the page shrink them);
* at 390 px (a phone), the page itself never scrolls sideways: wide tables and equations must scroll inside their
  own box.

One line per page with the counts; exit status 1 with a line naming the page and the problem for each failure,
2 if no Chromium binary is found. ``--screenshots DIR`` also saves a PNG of each page at 1280 px and at 390 px
(``<page>.png``, ``<page>@phone.png``).

    .venv/bin/python scripts/check_rendered_book.py [_build/html] [--screenshots DIR]

Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``); the flags are those that work as
root on a machine without network or display (see the toolchain notes).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import html as html_lib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)
RAW_TEX = re.compile(r"\\\(|\\\[|\$\$")
RAW_INLINE_TEX = re.compile(r"(?<![\w$])\$(?=\S)([^$\n]{1,120}?)(?<=\S)\$(?![\w$])")
TEX_MARKS = re.compile(r"[\\_^{]")
DESKTOP, PHONE = (1280, 2400), (390, 2400)
# A figure's labels are drawn at a size in points; as shown, they measure points * dpi / 72 * (shown / natural) px.
# The rule asks that this be at least MIN_LABEL_SCALE of what they measure at matplotlib's 100 dpi shown 1:1 (a 10-pt
# label at 0.6 is 8.3 px): shown / natural * dpi / 100 >= MIN_LABEL_SCALE, with the PNG's own dpi (100 if unset).
MIN_LABEL_SCALE = 0.6
MIN_FIGURE_PX = 64  # smaller images are icons and badges, not figures
PROBE_ID = "sea-layout-probe"
# Runs after the page's own scripts and MathJax (virtual time makes the wait free) and writes what it measured into
# a hidden element that --dump-dom then returns.
LAYOUT_PROBE = """
<script>
window.addEventListener("load", function () { setTimeout(function () {
  var article = document.querySelector("article.bd-article") || document.querySelector("main") || document.body;
  var limit = article.getBoundingClientRect().right + 1;
  function label(el) {
    var near = el.closest("[id]");
    var text = (el.innerText || el.alt || "").replace(/\\s+/g, " ").trim().slice(0, 60);
    return (near ? "#" + near.id + " " : "") + el.tagName.toLowerCase() + " '" + text + "'";
  }
  var clipped = [];
  article.querySelectorAll("table, .cell_output pre, .output pre, mjx-container[display='true']").forEach(function (el) {
    var box = el.parentElement, width = el.scrollWidth;
    var room = Math.min(box.clientWidth, limit - box.getBoundingClientRect().left);
    if (width > room + 2) clipped.push({what: label(el), width: width, room: Math.round(room)});
  });
  var figures = [];
  article.querySelectorAll("img").forEach(function (img) {
    if (img.naturalWidth < __MIN_PX__ || img.getBoundingClientRect().width < 1) return;
    var fig = img.closest("figure"), cap = fig && fig.querySelector("figcaption");
    figures.push({what: label(img), src: img.getAttribute("src"), natural: img.naturalWidth, shown: Math.round(img.getBoundingClientRect().width),
                  caption: cap ? cap.innerText.trim().length > 0 : false});
  });
  // What makes the page scroll sideways: hide one child at a time and descend into the one whose removal ends the
  // overflow, down to the smallest such element (a child past the edge inside a scrolling box never is one).
  var culprits = [];
  function overflows() { return document.documentElement.scrollWidth > window.innerWidth + 1; }
  if (overflows()) {
    var el = document.body;
    while (true) {
      var found = null;
      for (var i = 0; i < el.children.length && !found; i++) {
        var child = el.children[i], old = child.style.display;
        child.style.display = "none";
        if (!overflows()) found = child;
        child.style.display = old;
      }
      if (!found) break;
      el = found;
    }
    if (el !== document.body) culprits.push(label(el));
  }
  var report = {viewport: window.innerWidth, culprits: culprits, page_overflow: document.documentElement.scrollWidth - window.innerWidth,
                clipped: clipped, figures: figures};
  if (window.parent !== window) { window.parent.postMessage(JSON.stringify(report), "*"); return; }
  var node = document.createElement("div");
  node.id = "__ID__"; node.hidden = true; node.setAttribute("data-report", JSON.stringify(report));
  document.body.appendChild(node);
}, 3000); });
</script>
""".replace("__MIN_PX__", str(MIN_FIGURE_PX)).replace("__ID__", PROBE_ID)
# Headless Chromium will not make a window narrower than 500 px, so the phone width is an iframe of that width in a
# wrapper page; the probe inside posts its report to the wrapper, which writes it where --dump-dom sees it.
PHONE_FRAME = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe src="__SRC__" style="width:__W__px;height:__H__px;border:0"></iframe>
<script>
window.addEventListener("message", function (event) {
  var node = document.createElement("div");
  node.id = "__ID__"; node.hidden = true; node.setAttribute("data-report", event.data);
  document.body.appendChild(node);
});
</script></body></html>
"""
PROBE_REPORT = re.compile(r'<div id="%s"[^>]*data-report="([^"]*)"' % PROBE_ID)
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
HIDDEN = {"script", "style", "noscript", "template", "head", "title"}
CODE = {"pre", "code", "kbd", "samp", "textarea"}


def find_chromium() -> str | None:
    """$CHROMIUM, else the first of the usual Chromium/Chrome names on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def toc_pages(toc_file: Path) -> list[str]:
    """Document names in ``_toc.yml`` (jb-book format), root first, in reading order; URL entries skipped."""
    toc = yaml.safe_load(toc_file.read_text(encoding="utf-8"))
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            for key in ("parts", "chapters", "sections"):
                walk(entry.get(key))

    walk(toc.get("parts") or toc.get("chapters"))  # parts hold chapters, chapters may hold sections
    return [re.sub(r"\.(md|ipynb|rst)$", "", p) for p in pages]


@dataclass
class Node:
    tag: str
    classes: set[str]
    text: list[str] = field(default_factory=list)  # all text inside, for output blocks
    has_mjx: bool = False


class DomScan(HTMLParser):
    """One pass over the dumped DOM: visible prose text, maths elements, images, notebook output blocks."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[Node] = []
        self.prose: list[str] = []  # visible text outside code blocks
        self.maths: list[Node] = []
        self.outputs: list[Node] = []  # elements of class cell_output / output / output_error
        self.images: list[str] = []
        self.mjx_containers = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "mjx-container":
            self.mjx_containers += 1
            for node in self.stack:
                node.has_mjx = True
        if tag in VOID:
            return
        node = Node(tag, set((attrs.get("class") or "").split()))
        if "math" in node.classes and tag in ("span", "div"):
            self.maths.append(node)
        if node.classes & {"cell_output", "output", "output_error"}:
            self.outputs.append(node)
        self.stack.append(node)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):  # tolerate unclosed elements
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        for node in self.stack:
            if node.classes & {"cell_output", "output", "output_error"}:
                node.text.append(data)
        tags = {node.tag for node in self.stack}
        if not tags & HIDDEN and not tags & CODE and not any(t.startswith("mjx-") for t in tags):
            self.prose.append(data)


def image_problem(src: str, page_file: Path, html_dir: Path) -> str | None:
    """Why ``src`` (an img src on ``page_file``) would not load, or None if it decodes."""
    if src.startswith("data:"):
        header, _, payload = src.partition(",")
        try:
            data = base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode()
        except (binascii.Error, ValueError):
            return f"undecodable data: URI ({header})"
        return _decode_problem(data, "svg" in header, src[:40])
    url = urlparse(src)
    if url.scheme in ("http", "https") or src.startswith("//"):
        return f"remote image {src} (the book must not need the network)"
    if not url.path:
        return "img without src"
    target = (page_file.parent / unquote(url.path)).resolve()
    try:
        target.relative_to(html_dir.resolve())
    except ValueError:
        return f"image {src} points outside the build folder"
    if not target.is_file():
        return f"image {src} does not exist ({target})"
    data = target.read_bytes()
    return _decode_problem(data, target.suffix.lower() == ".svg", src)


def _decode_problem(data: bytes, svg: bool, name: str) -> str | None:
    if not data:
        return f"image {name} is empty"
    if svg:
        try:
            ET.fromstring(data)
        except ET.ParseError as err:
            return f"SVG image {name} does not parse: {err}"
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.width == 0 or img.height == 0:
                return f"image {name} has zero size"
    except Exception as err:  # noqa: BLE001 - any decoder error means a broken image
        return f"image {name} does not decode: {err}"
    return None


def render(chromium: str, page_file: Path, budget_ms: int, screenshot: Path | None, timeout_s: float,
           window: tuple[int, int] = DESKTOP) -> str:
    """The DOM of ``page_file`` shown ``window`` = (width, height) CSS px wide and tall, after its scripts ran for
    ``budget_ms`` of virtual time, with ``LAYOUT_PROBE``'s report in it. The probe goes into a hidden copy of the
    page beside it (relative links and images resolve as they do for the page), removed afterwards; a width under
    Chromium's 500 px minimum is shown in an iframe of that width (``PHONE_FRAME``)."""
    html = page_file.read_text(encoding="utf-8")
    at = html.rfind("</body>")
    probed = html[:at] + LAYOUT_PROBE + html[at:] if at >= 0 else html + LAYOUT_PROBE
    copy = page_file.with_name(f".probe-{page_file.name}")
    frame = page_file.with_name(f".probe-frame-{page_file.name}")
    copy.write_text(probed, encoding="utf-8")
    opened, size = copy, window
    if window[0] < 500:
        frame.write_text(PHONE_FRAME.replace("__SRC__", copy.name).replace("__W__", str(window[0]))
                         .replace("__H__", str(window[1])).replace("__ID__", PROBE_ID), encoding="utf-8")
        opened, size = frame, (500, window[1])
    try:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                   f"--window-size={size[0]},{size[1]}", "--hide-scrollbars"]
            if screenshot is not None:
                cmd.append(f"--screenshot={screenshot}")
            cmd += ["--dump-dom", opened.resolve().as_uri()]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    finally:
        copy.unlink(missing_ok=True)
        frame.unlink(missing_ok=True)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def layout_report(dom: str) -> dict:
    """What ``LAYOUT_PROBE`` measured in ``dom``; a RuntimeError if it did not run (scripts blocked, page too slow)."""
    found = PROBE_REPORT.search(dom)
    if not found:
        raise RuntimeError("the layout probe left no report (did the page's load event fire within the budget?)")
    return json.loads(html_lib.unescape(found.group(1)))


def png_dpi(src: str, page_file: Path) -> float:
    """The horizontal dpi a PNG at ``src`` (relative to ``page_file``) declares; 100 (matplotlib's) if none."""
    from PIL import Image

    target = page_file.parent / unquote(urlparse(src).path)
    try:
        with Image.open(target) as img:
            return float(img.info.get("dpi", (100.0, 100.0))[0]) or 100.0
    except (OSError, ValueError):
        return 100.0


def layout_problems(report: dict, phone: bool, page_file: Path | None = None) -> list[str]:
    """The layout rules of the module docstring, applied to one probe report (``phone``: the 390 px rules only);
    ``page_file`` locates the figures' PNGs, whose dpi the label-size rule reads."""
    width = report["viewport"]
    if phone:
        if report["page_overflow"] > 1:
            return [f"at {width} px the page scrolls sideways by {report['page_overflow']} px (a wide element is "
                    f"not inside its own scrolling box): {'; '.join(report.get('culprits', [])) or 'element not found'}"]
        return []
    problems = [f"clipped at {width} px: {c['what']} is {c['width']} px wide in a {c['room']} px container "
                "(wrap, split or shorten it)" for c in report["clipped"]]
    for fig in report["figures"]:
        if not fig["caption"]:
            problems.append(f"figure without a caption: {fig['what']} {fig.get('src', '')} (glue it with {{glue:figure}} "
                            "and a caption)")
        dpi = png_dpi(fig["src"], page_file) if page_file is not None and fig.get("src") else 100.0
        scale = fig["shown"] / fig["natural"] * dpi / 100
        if scale < MIN_LABEL_SCALE:
            problems.append(f"figure shrunk until its labels are unreadable: shown {fig['shown']} of {fig['natural']} px "
                            f"at {dpi:.0f} dpi, label scale {scale:.2f} < {MIN_LABEL_SCALE}: {fig['what']} {fig.get('src', '')}; draw it "
                            "narrower (two rows of panels)")
    return problems


def raw_inline_tex(prose: str) -> list[str]:
    """``$...$`` spans in visible text that look like TeX (they hold a backslash, ``_``, ``^`` or ``{``)."""
    return sorted({m.group(0) for m in RAW_INLINE_TEX.finditer(prose) if TEX_MARKS.search(m.group(1))})


RAW_NAME = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)+$")  # a snake_case identifier: reward_lo, harmful_kw
LONG_DECIMAL = re.compile(r"^-?\d+\.\d{4,}$")  # a bare number with more than 3 decimals (flagged past 4 significant digits)


class TableScan(HTMLParser):
    """The column headers (``th`` inside ``thead``) and the cells (``td``) of every table in a DOM."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.headers: list[str] = []
        self.cells: list[str] = []
        self._in_thead = 0
        self._cell: list[str] | None = None
        self._kind = ""

    def handle_starttag(self, tag, attrs):
        if tag == "thead":
            self._in_thead += 1
        elif tag in ("th", "td"):
            self._cell, self._kind = [], "header" if tag == "th" and self._in_thead else tag

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_thead -= 1
        elif tag in ("th", "td") and self._cell is not None:
            text = " ".join("".join(self._cell).split())
            if self._kind == "header":
                self.headers.append(text)
            elif self._kind == "td":
                self.cells.append(text)
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_problems(dom: str) -> list[str]:
    """The table rules on a rendered page: raw identifiers as column names, numbers printed with more digits than
    they carry (more than 3 decimals and more than 4 significant digits)."""
    scan = TableScan()
    scan.feed(dom)
    scan.close()
    problems = []
    raw = sorted({h for h in scan.headers if RAW_NAME.match(h)})
    if raw:
        problems.append(f"table column named by a raw identifier (give it a readable name): {', '.join(raw[:6])}")
    long = [c for c in scan.cells if LONG_DECIMAL.match(c) and len(c.lstrip("-").replace(".", "").lstrip("0")) > 4]
    if long:
        problems.append(f"{len(long)} table cell(s) with more than 3 decimals (round them), e.g. {', '.join(long[:4])}")
    return problems


def check_page(dom: str, page_file: Path, html_dir: Path, phone_dom: str | None = None) -> tuple[str, list[str]]:
    """(counts line, problems) for one rendered page: ``dom`` at 1280 px, ``phone_dom`` (if given) at 390 px."""
    scan = DomScan()
    scan.feed(dom)
    scan.close()
    problems = []

    untypeset = [m for m in scan.maths if not m.has_mjx]
    if untypeset:
        problems.append(f"{len(untypeset)} of {len(scan.maths)} maths elements have no mjx-container (not typeset)")
    prose = " ".join(scan.prose)
    raw = sorted({m.group(0) for m in RAW_TEX.finditer(prose)})
    if raw:
        at = RAW_TEX.search(prose).start()
        problems.append(f"raw TeX delimiters {raw} in the visible text, e.g. ...{prose[max(0, at - 60):at + 60]!r}...")
    inline = raw_inline_tex(prose)
    if inline:
        problems.append(f"raw inline TeX in the visible text (MathJax does not typeset it there): {', '.join(inline[:5])}")

    bad_images = [p for src in scan.images if (p := image_problem(src, page_file, html_dir))]
    problems += bad_images

    stderr_blocks = 0
    for node in scan.outputs:
        text = "".join(node.text)
        if node.classes & {"traceback", "output_error"}:
            problems.append(f"error output: {text.strip()[:300]!r}")
        elif "cell_output" in node.classes and "Traceback (most recent call last)" in text:
            problems.append(f"cell output with a traceback: {text.strip()[:300]!r}")
        elif "stderr" in node.classes:
            stderr_blocks += 1
            if "Error" in text:
                problems.append(f"stderr output with an error: {text.strip()[:300]!r}")
    cells = sum("cell_output" in n.classes for n in scan.outputs)
    problems += table_problems(dom)
    report = layout_report(dom)
    problems += layout_problems(report, phone=False, page_file=page_file)
    if phone_dom is not None:
        problems += layout_problems(layout_report(phone_dom), phone=True)
    counts = (f"maths {len(scan.maths) - len(untypeset)}/{len(scan.maths)} typeset "
              f"(mjx-container {scan.mjx_containers}), images {len(scan.images) - len(bad_images)}/{len(scan.images)} "
              f"loaded, cell outputs {cells} (stderr {stderr_blocks}), figures {len(report['figures'])}")
    return counts, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html_dir", nargs="?", type=Path, default=ROOT / "_build" / "html",
                        help="the built HTML folder (default: _build/html)")
    parser.add_argument("--toc", type=Path, default=ROOT / "_toc.yml", help="table of contents listing the pages")
    parser.add_argument("--screenshots", type=Path, help="save a PNG of each page into this folder")
    parser.add_argument("--budget-ms", type=int, default=15000, help="Chromium's virtual-time budget per page")
    parser.add_argument("--timeout", type=float, default=180, help="wall-clock limit per page, seconds")
    args = parser.parse_args(argv)

    chromium = find_chromium()
    if not chromium:
        print("no Chromium binary found (apt-get install -y chromium, or set $CHROMIUM)", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)

    failures = []
    for page in toc_pages(args.toc):
        page_file = args.html_dir / f"{page}.html"
        if not page_file.is_file():
            failures.append(f"{page}: no page {page_file}")
            print(f"FAIL {page}: no page {page_file}")
            continue
        shot = args.screenshots / page.replace("/", "__") if args.screenshots else None
        try:
            dom = render(chromium, page_file, args.budget_ms, shot and shot.with_suffix(".png"), args.timeout)
            phone_dom = render(chromium, page_file, args.budget_ms, shot and Path(f"{shot}@phone.png"), args.timeout,
                               window=PHONE)
            counts, problems = check_page(dom, page_file, args.html_dir, phone_dom)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            failures.append(f"{page}: {err}")
            print(f"FAIL {page}: {err}")
            continue
        print(f"{'FAIL' if problems else 'ok  '} {page}: {counts}")
        failures += [f"{page}: {p}" for p in problems]

    if failures:
        print(f"\n{len(failures)} problem(s):", *failures, sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
