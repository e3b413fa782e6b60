"""`altbeam report` shows caption statuses and keywords (catalog schema v2).

The catalog: a gated run written by the caption job's catalog_row + WriteTable beside a
version-1 shard (tests/pipelines/query/gated.py); the page is checked as text and in
headless Chromium (what a person sees: innerText, alt text, layout boxes).
"""
from __future__ import annotations

import html
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from altbeam.pipelines.catalog import layout
from altbeam.pipelines.catalog.beam_io import catalog_row
from altbeam.pipelines.report import commands as report
from altbeam.schemas.catalog import CATALOG_SCHEMA
from tests.pipelines.query import gated
from tests.support.browser import Browser, chromium_or_skip

EVIL_KEYWORD = "<img src=x onerror=alert(7)>"
EVIL_STATUS = "<i>fresh</i>"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, sample_photos):
    return gated.mixed_catalog(tmp_path_factory.mktemp("mixed"), sample_photos)


@pytest.fixture(scope="module")
def page(mixed, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "report.html"
    assert report.main([str(mixed), "--out", str(out)]) == 0
    return out


def card(text: str, file_name: str) -> str:
    """One card's HTML, found by its file name."""
    match = re.search(r'<li class="card" data-uri="[^"]*/' + re.escape(file_name)
                      + r'".*?</li>', text)
    assert match, file_name
    return match.group(0)


def test_cards_name_their_status_and_keywords(page):
    text = page.read_text(encoding="utf-8")
    snow = card(text, "snow.jpg")
    assert 'data-status="contradicted" data-untrusted=""' in snow
    assert '<span class="badge">contradicted</span> not trusted:' in snow and "the caption names dog, snow" in snow
    assert "keywords: bear" in snow
    assert 'alt="a dog sitting in the snow (caption not trusted: contradicted)"' in snow
    assert '<span class="badge">unsure</span> not trusted:' in card(text, "bike.jpg")
    tiny = card(text, "tiny.png")
    assert "no caption: image too small" in tiny and 'class="best"' not in tiny
    assert 'alt="no caption: image too small"' in tiny
    assert "no caption: image blank" in card(text, "grey.jpg")
    ok = card(text, "dog.jpg")
    assert '<span class="badge">ok</span>' in ok and "not trusted" not in ok and "data-untrusted" not in ok
    assert 'alt="a dog running on' in ok
    old = card(text, "old1.jpg")                    # captioned before the gate: as before
    assert 'class="status' not in old and 'alt="a person on a bicycle"' in old


def test_summary_counts_each_status(page):
    text = page.read_text(encoding="utf-8")
    block = re.search(r'<ul class="stats" id="statuses">(.*?)</ul>', text).group(1)
    counts = re.findall(r"<b>(\d+)</b>(\w+)<small>", block)
    assert counts == [("2", "ok"), ("1", "unsure"), ("1", "contradicted"),
                      ("1", "too_small"), ("1", "blank"), ("2", "not_judged")]


def test_a_version_1_catalog_renders_as_before(tmp_path, sample_photos):
    files = gated.photos(tmp_path / "photos", sample_photos)
    catalog = tmp_path / "cat"
    gated.write_v1(catalog, files)
    out = tmp_path / "v1.html"
    assert report.main([str(catalog), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.count('class="card"') == 3 and 'class="status' not in text
    assert "not judged (every image was captioned before the caption gate)" in text


def test_status_keywords_and_objects_are_escaped(tmp_path, sample_photos):
    files = gated.photos(tmp_path / "photos", sample_photos)
    row = catalog_row(gated.image_info(files["dog.jpg"]), ["a dog"], [-0.5], "m-3", "r9",
                      caption_status=EVIL_STATUS, objects=["<b>dog</b>"],
                      keywords=[EVIL_KEYWORD], keyword_scores=[0.9])
    catalog = tmp_path / "cat"
    (catalog / "catalog").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=CATALOG_SCHEMA),
                   layout.shard_prefix(str(catalog), "catalog", "r9") + "-00000-of-00001.parquet")
    out = tmp_path / "evil.html"
    assert report.main([str(catalog), "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "<img src=x" not in text and "<i>fresh" not in text
    assert html.escape(EVIL_KEYWORD) in text and html.escape(EVIL_STATUS) in text
    assert "unknown caption status" in text             # a status this version does not know


# --- in headless Chromium ----------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with Browser(chromium_or_skip()) as b:
        yield b


# Per card: its file name, the visible text of its status line (null when none), whether
# that line has a layout box, the picture's alt text, the card's border colour.
CARDS = """Array.from(document.querySelectorAll('#grid > li')).map(c => {
  const s = c.querySelector('.status'), img = c.querySelector('img');
  const box = s ? s.getBoundingClientRect() : null;
  return {file: c.getAttribute('data-uri').split('/').pop(),
          status: s ? s.innerText : null,
          shown: !!box && box.width > 0 && box.height > 0 &&
                 getComputedStyle(s).visibility === 'visible',
          alt: img ? img.alt : null, border: getComputedStyle(c).borderTopColor};
})"""


def test_statuses_are_visible_in_chromium(browser, page):
    browser.open(page.as_uri())
    assert browser.evaluate("document.documentElement.getAttribute('data-ready')") == "1"
    cards = {c["file"]: c for c in browser.evaluate(CARDS)}
    assert cards["snow.jpg"]["status"].startswith("contradicted not trusted")
    assert cards["bike.jpg"]["status"].startswith("unsure not trusted")
    assert cards["tiny.png"]["status"] == "too_small no caption: image too small"
    assert cards["grey.jpg"]["status"].startswith("blank no caption: image blank")
    assert cards["dog.jpg"]["status"] == "ok"
    assert cards["old1.jpg"]["status"] is None
    assert all(c["shown"] for c in cards.values() if c["status"] is not None)
    assert cards["snow.jpg"]["alt"].endswith("(caption not trusted: contradicted)")
    untrusted = {f for f, c in cards.items() if c["border"] == "rgb(204, 102, 102)"}
    assert untrusted == {"snow.jpg", "bike.jpg"}             # framed apart from the rest
    summary = browser.evaluate("document.getElementById('statuses').innerText")
    assert "contradicted" in summary and "not trusted" in summary and "not_judged" in summary
    # The text filter finds cards by their status.
    browser.evaluate("""(() => { const f = document.getElementById('filter');
        f.value = 'not trusted'; f.dispatchEvent(new Event('input')); })()""")
    visible = browser.evaluate("Array.from(document.querySelectorAll('#grid > li:not([hidden])'))"
                               ".map(c => c.getAttribute('data-status')).sort()")
    assert visible == ["contradicted", "unsure"]
    assert browser.evaluate("document.querySelectorAll('figcaption b, figcaption i').length") == 0
    assert browser.problems() == []
