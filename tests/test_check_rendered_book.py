"""scripts/check_rendered_book.py's layout rules catch what they promise: a clipped table, a figure without a
caption, a figure shrunk past readability, raw inline TeX and a page that scrolls sideways on a phone, each on a
hand-made page rendered by the same headless Chromium as the book check; a clean page passes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.book


@pytest.fixture(scope="module")
def check():
    from conftest import load_script

    return load_script("check_rendered_book")


@pytest.fixture(scope="module")
def chromium(check):
    found = check.find_chromium()
    if not found:
        from conftest import missing_prerequisite

        missing_prerequisite("no Chromium binary on PATH (chromium, chromium-browser, google-chrome): `make chromium` "
                             "installs Debian's package")
    return found


def _png(path: Path, width: int, height: int, dpi: float = 100.0) -> str:
    from PIL import Image

    Image.new("RGB", (width, height), (200, 220, 240)).save(path, dpi=(dpi, dpi))
    return path.name


def _page(folder: Path, body: str) -> Path:
    # The book's layout in miniature: a 600 px article in a wider page.
    page = folder / "page.html"
    page.write_text(f"""<!DOCTYPE html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="margin:0"><main><article class="bd-article" style="width:600px; max-width:100%">{body}</article></main>
</body></html>""", encoding="utf-8")
    return page


def _problems(check, chromium, page: Path) -> list[str]:
    dom = check.render(chromium, page, 8000, None, 120)
    phone = check.render(chromium, page, 8000, None, 120, window=check.PHONE)
    return check.check_page(dom, page, page.parent, phone)[1]


def test_a_clean_page_passes(check, chromium, tmp_path):
    src = _png(tmp_path / "fig.png", 560, 300)
    page = _page(tmp_path, f"""<p>Prose with a price of $5 and $10, not maths.</p>
<table><tr><td>a</td><td>b</td></tr></table>
<figure><img src="{src}" style="width:100%"><figcaption>A caption.</figcaption></figure>""")
    assert _problems(check, chromium, page) == []


def test_each_layout_rule_fires(check, chromium, tmp_path):
    wide = _png(tmp_path / "wide.png", 1600, 300)  # shown at 600 px: label scale 0.375
    sharp = _png(tmp_path / "sharp.png", 1100, 300, dpi=200)  # 200 dpi shown at 600 px: label scale 1.09, fine
    page = _page(tmp_path, f"""<p>A label left as $\\eta_t$ in the text.</p>
<div><table style="width:900px"><tr><td>a very wide table</td></tr></table></div>
<img src="{wide}" style="width:100%">
<figure><img src="{sharp}" style="width:100%"><figcaption>Sharp.</figcaption></figure>
<p style="white-space:nowrap">{"unbreakable " * 60}</p>""")
    problems = _problems(check, chromium, page)
    text = "\n".join(problems)
    assert "raw inline TeX" in text and "$\\eta_t$" in text, text
    assert "clipped at 1280 px: table" in text.replace("#", ""), text
    assert "figure without a caption" in text and "wide.png" in text, text
    assert "labels are unreadable" in text and "label scale 0.37" in text, text
    assert "sharp.png" not in text, "a 200-dpi figure shown at half its pixel width is readable"
    assert "at 390 px the page scrolls sideways" in text, text


def test_rules_on_probe_reports(check):
    report = {"viewport": 1280, "page_overflow": 0, "clipped": [], "culprits": [],
              "figures": [{"what": "img 'x'", "natural": 1000, "shown": 700, "caption": True}]}
    assert check.layout_problems(report, phone=False) == []  # 0.70 at 100 dpi
    report["figures"][0]["shown"] = 500
    assert "label scale 0.50" in check.layout_problems(report, phone=False)[0]
    phone = {"viewport": 390, "page_overflow": 40, "culprits": ["span 'a/very/long/path'"]}
    assert "a/very/long/path" in check.layout_problems(phone, phone=True)[0]
    assert check.raw_inline_tex("costs $5 or $10; $\\alpha$ and $x_t$ but not $x$") == ["$\\alpha$", "$x_t$"]


def test_table_rules_on_a_dom(check):
    """Raw identifiers as column headers and numbers printed with more digits than they carry are flagged; readable
    headers, row labels that are file names, 3 decimals and small settings such as 0.0001 are not."""
    clean = """<table><thead><tr><th>claim</th><th>mean reward [95% CI]</th><th>wall time (s)</th></tr></thead>
<tbody><tr><th>advbench_v2_sea</th><td>0.568</td><td>0.0001</td><td>57.5 [40.0, 72.5]</td></tr></tbody></table>"""
    assert check.table_problems(clean) == []
    dump = """<table><thead><tr><th></th><th>reward_lo</th><th>w1_limit</th><th>W1</th></tr></thead>
<tbody><tr><th>sea</th><td>-0.858</td><td>27.836518</td><td>18.673797348471638</td></tr></tbody></table>"""
    problems = check.table_problems(dump)
    assert len(problems) == 2, problems
    assert "raw identifier" in problems[0] and "reward_lo, w1_limit" in problems[0], problems
    assert "2 table cell(s)" in problems[1] and "27.836518" in problems[1] and "-0.858" not in problems[1], problems
