"""The book builds from the committed notebook outputs (no execution) with zero warnings, maths rendered offline,
and every page reads right in headless Chromium (maths typeset, images loaded, no error outputs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_TIMEOUT_S = 900

pytestmark = pytest.mark.book


def _jupyter_book() -> str:
    exe = Path(sys.executable).with_name("jupyter-book")
    found = str(exe) if exe.exists() else shutil.which("jupyter-book")
    if not found:
        from conftest import missing_prerequisite

        missing_prerequisite("jupyter-book is not installed (pip install -e '.[book]')")
    return found


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Build into a scratch folder with --path-output: the sources are read in place, nothing is written there."""
    out = tmp_path_factory.mktemp("book")
    cmd = [_jupyter_book(), "build", "-W", "-n", "--keep-going", "--all", str(ROOT), "--path-output", str(out)]
    env = dict(os.environ, NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    return proc, out / "_build" / "html"


def test_book_builds_without_warnings(built_book):
    proc, html = built_book
    log = proc.stdout[-6000:] + proc.stderr[-6000:]
    assert proc.returncode == 0, f"jupyter-book build -W -n --keep-going --all failed:\n{log}"
    assert (html / "book" / "intro.html").exists(), f"no book/intro.html in {html}:\n{log}"
    assert "WARNING" not in proc.stdout + proc.stderr, f"the build printed warnings:\n{log}"


def test_chapters_are_built(built_book):
    proc, html = built_book
    if proc.returncode != 0:
        pytest.skip("the build failed (see test_book_builds_without_warnings)")
    toc = (ROOT / "_toc.yml").read_text()
    chapters = re.findall(r"file:\s*(\S+)", toc)
    assert len(chapters) >= 2, toc
    missing = [c for c in chapters if not (html / f"{c}.html").exists()]
    assert not missing, f"chapters in _toc.yml without a page: {missing}"


def test_maths_is_rendered_offline(built_book):
    proc, html = built_book
    if proc.returncode != 0:
        pytest.skip("the build failed (see test_book_builds_without_warnings)")
    page = (html / "book" / "intro.html").read_text(encoding="utf-8")
    scripts = re.findall(r'<script[^>]*src="([^"]*mathjax[^"]*)"', page, flags=re.I)
    assert scripts, "intro.html loads no MathJax script (is there maths on the page? is the extension enabled?)"
    remote = [s for s in scripts if re.match(r"(https?:)?//", s)]
    assert not remote, f"MathJax is loaded from the network: {remote}"
    for src in scripts:
        local = (html / "book" / src.split("?")[0]).resolve()
        assert local.exists(), f"MathJax script {src} is referenced but {local} is missing"


def _load_check_script():
    from conftest import load_script

    return ROOT / "scripts" / "check_rendered_book.py", load_script("check_rendered_book")


def test_pages_render_in_chromium(built_book, tmp_path):
    """scripts/check_rendered_book.py on the built book: every page of _toc.yml, as Chromium renders it."""
    proc, html = built_book
    if proc.returncode != 0:
        pytest.skip("the build failed (see test_book_builds_without_warnings)")
    script, check = _load_check_script()
    if not check.find_chromium():
        from conftest import missing_prerequisite

        missing_prerequisite("no Chromium binary on PATH (chromium, chromium-browser, google-chrome): `make chromium` "
                             "installs Debian's package")
    shots = tmp_path / "screenshots"
    cmd = [sys.executable, str(script), str(html), "--screenshots", str(shots)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    report = f"screenshots in {shots}\n{run.stdout}\n{run.stderr[-4000:]}"
    assert run.returncode == 0, f"rendered-book check failed ({report})"
    pages = [line for line in run.stdout.splitlines() if line.startswith("ok ")]
    assert len(pages) == len(check.toc_pages(ROOT / "_toc.yml")), run.stdout
