"""`altbeam report`: the HTML page, its thumbnails and escaping, checked in headless Chromium."""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import pathlib
import re
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from altbeam.model.serving.caption_status import UNTRUSTED
from altbeam.pipelines.catalog.api import connect
from altbeam.pipelines.report import commands as report
from altbeam.pipelines.report.thumbs import make_thumbnail
from altbeam.schemas.catalog import CATALOG_SCHEMA
from tests.pipelines.query.test_query import CAPTIONS, make_catalog
from tests.support.browser import Browser, chromium_or_skip

pytest_plugins = ["tests.support.gcs_emulator"]

EVIL_NAME = "<img src=x onerror=alert(1)>.jpg"
EVIL_CAPTION = "</script><script>alert(2)</script> a dog & a <b>cat</b>"
EVIL_MESSAGE = "cannot decode <script>alert(3)</script>: bad \"quote\" 'here'"


@pytest.fixture
def photos(tmp_path, sample_photos) -> list[pathlib.Path]:
    """Copies of the samples, plus a hostile file name, an unreadable file and a missing one."""
    folder = tmp_path / "photos"
    folder.mkdir()
    copies = [pathlib.Path(shutil.copy(p, folder)) for p in sorted(sample_photos.glob("*.jpg"))]
    evil = folder / EVIL_NAME
    shutil.copy(copies[0], evil)
    broken = folder / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 this is not really a jpeg")
    return copies + [evil, broken, folder / "gone.jpg"]


@pytest.fixture
def catalog(tmp_path, photos) -> pathlib.Path:
    captions = CAPTIONS + [EVIL_CAPTION, "a broken file", "a vanished file"]
    cat = make_catalog(tmp_path / "cat", photos, writeback=True, captions=captions)
    # An error whose message carries markup, for the errors table.
    errs = pq.read_table(next((cat / "errors").glob("*.parquet"))).to_pylist()
    errs[0]["message"] = EVIL_MESSAGE
    errs[0]["uri"] = str(photos[0].parent / ("<i>" + EVIL_NAME))
    pq.write_table(pa.Table.from_pylist(errs, schema=pq.read_schema(
        next((cat / "errors").glob("*.parquet")))), next((cat / "errors").glob("*.parquet")))
    return cat


def build(catalog, out, *extra) -> str:
    assert report.main([str(catalog), "--out", str(out), *map(str, extra)]) == 0
    return out.read_text(encoding="utf-8")


def _digests(paths):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.exists()}


# --- without a browser -------------------------------------------------------------

def test_thumbnail_is_small_jpeg_and_source_untouched(sample_photos):
    photo = sorted(sample_photos.glob("*.jpg"))[0]
    before = photo.read_bytes()
    thumb = make_thumbnail(str(photo))
    assert thumb.reason is None and thumb.data_uri.startswith("data:image/jpeg;base64,")
    im = Image.open(io.BytesIO(base64.b64decode(thumb.data_uri.split(",", 1)[1])))
    assert im.format == "JPEG" and max(im.size) == 160 and im.size == (thumb.width, thumb.height)
    assert thumb.size < 16_000
    assert photo.read_bytes() == before


def test_thumbnail_placeholders_give_reasons(tmp_path):
    assert make_thumbnail(str(tmp_path / "nope.jpg")).reason == "image file not found"
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    thumb = make_thumbnail(str(bad))
    assert thumb.data_uri is None and "unreadable image" in thumb.reason


def test_report_content_and_escaping(catalog, photos, tmp_path, capsys):
    before = _digests(photos)
    page = build(catalog, tmp_path / "report.html")
    assert "wrote" in capsys.readouterr().out
    assert _digests(photos) == before                       # photos never modified
    # Hostile strings only ever appear escaped.
    assert "<img src=x" not in page and "<script>alert" not in page and "<b>cat" not in page
    assert html.escape(EVIL_CAPTION, quote=True) in page
    assert html.escape(EVIL_MESSAGE, quote=True) in page
    assert html.escape(EVIL_NAME, quote=True) in page
    assert page.count("<script>") == 1
    # 19 readable images (18 samples + the evil-named copy), 2 placeholders with reasons.
    assert page.count('src="data:image/jpeg;base64,') == 19
    assert "image file not found" in page and "unreadable image" in page
    # Alt text is the caption, escaped.
    alts = re.findall(r'<img src="data:[^"]+" alt="([^"]*)"', page)
    assert html.unescape(alts[0]).startswith("new ")            # run r2's latest caption
    assert html.escape(EVIL_CAPTION, quote=True) in alts
    # Run summary and error sections.
    assert "m-1, m-2" in page and "unresolved errors" in page
    assert "transient read failure" not in page     # that input succeeded in a later run
    assert "written" in page and "skipped" in page   # writeback counts


def _sides(page: str) -> list[int]:
    return [max(int(w), int(h)) for w, h in re.findall(r'width="(\d+)" height="(\d+)"', page)]


def test_size_budget_shrinks_then_limits_thumbnails(catalog, tmp_path):
    roomy = _sides(build(catalog, tmp_path / "roomy.html"))
    assert len(roomy) == 19 and set(roomy) == {160}
    shrunk = _sides(build(catalog, tmp_path / "shrunk.html", "--max-mb", "0.06"))
    assert len(shrunk) == 19 and max(shrunk) < 160       # smaller, but every one shown
    tight = build(catalog, tmp_path / "tight.html", "--max-mb", "0.01")
    shown = tight.count('src="data:image/jpeg;base64,')
    assert 0 < shown < 19 and "page size budget" in tight
    thumbs = sum(len(u) for u in re.findall(r'src="(data:[^"]+)"', tight))
    assert thumbs <= 0.01 * (1 << 20)


def test_max_images_note(catalog, tmp_path):
    page = build(catalog, tmp_path / "few.html", "--max-images", "5")
    assert page.count('class="card"') == 5 and "Showing the first 5 of 21 images" in page


def test_empty_and_missing_catalogs(tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "catalog").mkdir(parents=True)
    page = build(empty, tmp_path / "empty.html")
    assert "0 images" in page and "No unresolved errors." in page
    assert report.main([str(tmp_path / "absent"), "--out", str(tmp_path / "x.html")]) == 1
    assert "catalog not found" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


# --- in headless Chromium ----------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with Browser(chromium_or_skip()) as b:
        yield b


# Scroll each visible thumbnail into view (they lazy-load), wait for it to decode.
DECODE_VISIBLE = """(async () => {
  const out = [];
  for (const img of document.querySelectorAll('#grid > li:not([hidden]) img')) {
    img.scrollIntoView();
    await Promise.race([img.decode().catch(() => null),
                        new Promise(r => setTimeout(r, 3000))]);
    out.push({alt: img.alt, ok: img.complete && img.naturalWidth > 0,
              w: img.naturalWidth, h: img.naturalHeight});
  }
  window.scrollTo(0, 0);
  return out;
})()"""


def test_report_in_chromium(browser, catalog, tmp_path):
    out = tmp_path / "report.html"
    build(catalog, out)
    browser.open(out.as_uri())
    assert browser.evaluate("document.documentElement.getAttribute('data-ready')") == "1"
    images = browser.evaluate(DECODE_VISIBLE)
    assert len(images) == 19 and all(i["ok"] for i in images), images
    assert all(max(i["w"], i["h"]) == 160 for i in images)
    assert EVIL_CAPTION in [i["alt"] for i in images]          # alt text is the caption
    state = browser.evaluate("""({
        text: document.body.innerText,
        scripts: document.scripts.length,
        stray: document.querySelectorAll('img:not([src^="data:"]), figcaption b, td i').length,
        placeholders: document.querySelectorAll('.missing[role=img]').length,
        status: document.getElementById('page-status').textContent})""")
    assert EVIL_CAPTION in state["text"] and EVIL_NAME in state["text"]
    assert EVIL_MESSAGE in state["text"]
    assert state["scripts"] == 1 and state["stray"] == 0 and state["placeholders"] == 2
    assert state["status"] == "Page 1 of 1 (21 images)"
    assert browser.problems() == []                    # no console error, no dialog
    shot = browser.screenshot(str(tmp_path / "report.png"))
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000


def test_pagination_filter_and_sort_in_chromium(browser, catalog, tmp_path):
    out = tmp_path / "paged.html"
    build(catalog, out, "--page-size", "8")
    browser.open(out.as_uri())
    visible = "document.querySelectorAll('#grid > li:not([hidden])').length"
    assert browser.evaluate(visible) == 8
    page1 = browser.evaluate(DECODE_VISIBLE)
    browser.evaluate("document.getElementById('next').click()")
    assert browser.evaluate("document.documentElement.getAttribute('data-page')") == "2"
    page2 = browser.evaluate(DECODE_VISIBLE)
    assert len(page1) == 8 and len(page2) == 8 and all(i["ok"] for i in page1 + page2)
    assert not {i["alt"] for i in page1} & {i["alt"] for i in page2}
    browser.evaluate("""(() => { const f = document.getElementById('filter');
        f.value = 'dog'; f.dispatchEvent(new Event('input')); })()""")
    assert browser.evaluate(visible) == 3     # two dog captions + the evil one
    browser.evaluate("""(() => { const f = document.getElementById('filter');
        f.value = ''; f.dispatchEvent(new Event('input'));
        const s = document.getElementById('sort'); s.value = 'score';
        s.dispatchEvent(new Event('change')); })()""")
    first = browser.evaluate("document.querySelector('#grid > li:not([hidden])')"
                             ".getAttribute('data-score')")
    assert float(first) == pytest.approx(-2.5)            # lowest caption score first
    assert browser.problems() == []


@pytest.mark.slow
def test_report_of_real_caption_run(browser, sample_photos, contract_model, tmp_path):
    from altbeam.pipelines.caption import pipeline as caption

    cat = tmp_path / "catalog"
    assert caption.main([str(sample_photos), "--catalog", str(cat), "--model",
                         str(contract_model), "--no-progress"]) in (0, None)
    out = tmp_path / "real.html"
    page = build(cat, out)
    assert "fixture-0" in page                    # model version from the model card
    browser.open(out.as_uri())
    images = browser.evaluate(DECODE_VISIBLE)
    assert len(images) == 18 and all(i["ok"] for i in images)
    # The alt text is the caption; one the gate does not trust says so.
    rows = connect(str(cat)).sql("SELECT caption, caption_status FROM catalog").fetchall()
    assert all(c.endswith("in a picture") for c, _ in rows)
    assert sorted(i["alt"] for i in images) == sorted(
        c if s not in UNTRUSTED else f"{c} (caption not trusted: {s})" for c, s in rows)
    statuses = browser.evaluate("Array.from(document.querySelectorAll('#grid .status .badge'))"
                                ".map(b => b.textContent)")
    assert sorted(statuses) == sorted(s for _, s in rows if s is not None)
    runs = json.loads(next((cat / "runs").glob("*.json")).read_text())
    assert f"{runs['captioned']}" in page
    assert browser.problems() == []


def test_catalog_schema_is_what_the_report_reads():
    # The report selects these columns by name: fail loudly if the schema renames one.
    wanted = {c.strip() for c in report.IMAGE_COLUMNS.split(",")}
    assert wanted <= set(CATALOG_SCHEMA.names)


@pytest.mark.slow   # Beam retries Google credentials ~25 s once per process without ADC
def test_report_from_gcs_catalog_of_gcs_images(tmp_path, sample_photos, gcs_bucket, gcs_emulator):
    local = sorted(sample_photos.glob("*.jpg"))[:4]
    uris = gcs_emulator.upload_dir(gcs_bucket, sample_photos, prefix="photos")
    gs_photos = [u for u in uris if u.endswith(tuple(p.name for p in local))]
    cat = make_catalog(tmp_path / "cat", local)
    for shard in (cat / "catalog").glob("*.parquet"):      # point the rows at gs://
        rows = pq.read_table(shard).to_pylist()
        by_name = {u.rsplit("/", 1)[-1]: u for u in gs_photos}
        for r in rows:
            r["uri"] = by_name[pathlib.Path(r["uri"]).name]
        pq.write_table(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA), shard)
    gcs_emulator.upload_dir(gcs_bucket, cat, prefix="catalog")
    page = build(f"gs://{gcs_bucket.name}/catalog", tmp_path / "gcs.html")
    assert page.count('src="data:image/jpeg;base64,') == 4
    assert html.escape(gs_photos[0]) in page
