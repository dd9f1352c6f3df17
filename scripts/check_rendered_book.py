"""Open every page of the built book in headless Chromium and check what a reader would see.

For each page listed in ``_toc.yml`` (root and chapters), Chromium loads the HTML file, runs its scripts for a
virtual-time budget (MathJax typesets then) and dumps the resulting DOM. The check asserts:

* maths is typeset: every element of class ``math`` holds an ``mjx-container`` and no raw TeX delimiters
  (``\\(``, ``\\[``, ``$$``) are left in the visible text outside code blocks;
* every ``<img>`` loads: its ``src`` is a local file of the build (no network), not empty, that Pillow decodes
  (SVG: parses as XML); ``data:`` images are decoded too;
* no notebook output shows an error: no traceback output, no cell output containing a Python traceback, no stderr
  stream containing "Error".

One line per page with the counts; exit status 1 with a line naming the page and the problem for each failure,
2 if no Chromium binary is found. ``--screenshots DIR`` also saves a 1280x2400 PNG of each page.

    .venv/bin/python scripts/check_rendered_book.py [_build/html] [--screenshots DIR]

Chromium is Debian's ``chromium`` package (``apt-get install -y chromium``); the flags are those that work as
root on a machine without network or display (see the toolchain notes).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
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


def render(chromium: str, page_file: Path, budget_ms: int, screenshot: Path | None, timeout_s: float) -> str:
    """The DOM of ``page_file`` after its scripts ran for ``budget_ms`` of virtual time."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
               "--window-size=1280,2400", "--hide-scrollbars"]
        if screenshot is not None:
            cmd.append(f"--screenshot={screenshot}")
        cmd += ["--dump-dom", page_file.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def check_page(dom: str, page_file: Path, html_dir: Path) -> tuple[str, list[str]]:
    """(counts line, problems) for one rendered page."""
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
    counts = (f"maths {len(scan.maths) - len(untypeset)}/{len(scan.maths)} typeset "
              f"(mjx-container {scan.mjx_containers}), images {len(scan.images) - len(bad_images)}/{len(scan.images)} "
              f"loaded, cell outputs {cells} (stderr {stderr_blocks})")
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
        shot = args.screenshots / (page.replace("/", "__") + ".png") if args.screenshots else None
        try:
            dom = render(chromium, page_file, args.budget_ms, shot, args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as err:
            failures.append(f"{page}: {err}")
            print(f"FAIL {page}: {err}")
            continue
        counts, problems = check_page(dom, page_file, args.html_dir)
        print(f"{'FAIL' if problems else 'ok  '} {page}: {counts}")
        failures += [f"{page}: {p}" for p in problems]

    if failures:
        print(f"\n{len(failures)} problem(s):", *failures, sep="\n", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
