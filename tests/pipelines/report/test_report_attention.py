"""`altbeam report --attention`: per-word heatmaps from the model's attention signature,
with the tiny real-architecture model, a catalog made by the caption pipeline, and
headless Chromium."""
from __future__ import annotations

import base64
import html
import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from altbeam.pipelines.report import commands as report
from altbeam.pipelines.report.attention import AttentionModel, make_heatmaps, overlay
from tests.pipelines.query.test_query import make_catalog
from tests.support.browser import Browser, chromium_or_skip

CARD = re.compile(r'<li class="card" data-uri="([^"]*)".*?<p class="best">(.*?) <span'
                  r'(.*?)</figcaption></figure></li>', re.S)
MINI = re.compile(r'<img src="(data:image/jpeg;base64,[^"]+)" alt="attention for “([^”]*)”"')


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tests.support.tiny import export_tiny_model

    return export_tiny_model(str(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, sample_photos):
    folder = tmp_path_factory.mktemp("photos")
    for photo in sorted(sample_photos.glob("*.jpg"))[:8]:
        shutil.copy(photo, folder)
    return folder


@pytest.fixture(scope="module")
def pipeline_catalog(tmp_path_factory, photo_dir, tiny_model):
    """A catalog written by the caption pipeline with the tiny model (its run summary
    names the model, so the report finds it without --model)."""
    from altbeam.pipelines.caption import pipeline as caption

    cat = tmp_path_factory.mktemp("cat") / "catalog"
    assert caption.main([str(photo_dir), "--catalog", str(cat), "--model", tiny_model,
                         "--batch-size", "4", "--no-progress"]) == 0
    return cat


def build(catalog, out, *extra) -> str:
    assert report.main([str(catalog), "--out", str(out), *map(str, extra)]) == 0
    return out.read_text(encoding="utf-8")


def cards(page: str) -> list[dict]:
    return [{"uri": html.unescape(uri), "caption": html.unescape(best), "rest": rest,
             "minis": MINI.findall(rest)} for uri, best, rest in CARD.findall(page)]


def decode_data_uri(uri: str) -> Image.Image:
    im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    im.load()
    return im


# --- the overlay ------------------------------------------------------------------

def test_one_hot_attention_tints_its_own_cell():
    base = Image.new("RGB", (64, 48), (90, 90, 90))
    grid = np.zeros((4, 4), np.float32)
    grid[1, 2] = 1.0                            # row 1, column 2 of a 4 x 4 grid
    tinted = np.asarray(overlay(base, grid)).astype(int)
    redness = tinted[..., 0] - tinted[..., 1]
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    assert 12 <= y < 24 and 32 <= x < 48        # that cell's pixels (16 x 12 each)
    assert redness[18, 40] > 100 and redness[42, 8] == 0 and redness[6, 56] == 0
    # No attention anywhere: the picture is unchanged.
    assert (np.asarray(overlay(base, np.zeros((4, 4)))) == np.asarray(base)).all()
    # Scaled to the word's peak: a map of small weights tints as much as a one-hot one.
    assert (np.asarray(overlay(base, grid * 0.1)) == tinted).all()


# --- the report, with the tiny model ------------------------------------------------

def test_heatmap_per_image_and_word(pipeline_catalog, tiny_model, photo_dir, tmp_path, capsys):
    before = {p: p.read_bytes() for p in photo_dir.iterdir()}
    page = build(pipeline_catalog, tmp_path / "report.html", "--attention")
    err = capsys.readouterr().err
    assert f"attention heatmaps from model {tiny_model}" in err   # found via runs/*.json
    found = cards(page)
    assert len(found) == 8 and page.count('<details class="heat">') == 8
    for card in found:
        words = card["caption"].split()
        assert [w for _, w in card["minis"]] == words, card["uri"]   # one per word, in order
        assert "differently" not in card["rest"]         # same model as the catalog's
        for uri, _ in card["minis"]:
            im = decode_data_uri(uri)
            assert im.format == "JPEG" and max(im.size) == 64
    assert "Attention heatmaps from model" in page and page.count("<script>") == 1
    assert {p: p.read_bytes() for p in photo_dir.iterdir()} == before   # photos untouched


def test_held_back_images_get_no_heatmaps(tmp_path, photo_dir, tiny_model):
    """A too-small or blank image has no caption in the catalog; --attention must not
    show the model's words for it either."""
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sorted(photo_dir.glob("*.jpg"))[0], folder / "photo.jpg")
    Image.new("RGB", (20, 400), (200, 30, 30)).save(folder / "sliver.png")
    Image.new("RGB", (640, 480), (128, 128, 128)).save(folder / "grey.png")
    from altbeam.pipelines.caption import pipeline as caption

    cat = tmp_path / "catalog"
    assert caption.main([str(folder), "--catalog", str(cat), "--model", tiny_model,
                         "--no-progress"]) == 0
    page = build(cat, tmp_path / "r.html", "--attention")
    # Cards of held-back images have no caption line, so split by card, not by CARD.
    found = {re.search(r'data-uri="[^"]*/([^"/]+)"', card).group(1): card
             for card in page.split('<li class="card" ')[1:]}
    assert set(found) == {"photo.jpg", "sliver.png", "grey.png"}
    assert MINI.findall(found["photo.jpg"])
    for name, why in (("sliver.png", "image too small"), ("grey.png", "image blank")):
        assert not MINI.findall(found[name]) and "differently" not in found[name]
        assert f"no attention heatmaps: no caption: {why}" in found[name]


def test_other_model_captions_missing_files_and_budget(tmp_path, photo_dir, tiny_model):
    photos = sorted(photo_dir.glob("*.jpg"))[:3] + [photo_dir / "gone.jpg"]
    cat = make_catalog(tmp_path / "cat", photos)      # captions written by "another model"
    page = build(cat, tmp_path / "other.html", "--attention", "--model", tiny_model)
    found = {c["uri"]: c for c in cards(page)}
    for photo in photos[:3]:
        card = found[str(photo)]
        words = [w for _, w in card["minis"]]
        assert words and "captions this image differently" in card["rest"]
        assert f"its words: “{' '.join(words)}”" in card["rest"]   # which words they are
    assert "no attention heatmaps: image file not found" in found[str(photos[3])]["rest"]
    # A tight budget: thumbnails get half, heatmaps what is left, then a reason.
    tight = build(cat, tmp_path / "tight.html", "--attention", "--model", tiny_model,
                  "--max-mb", "0.01")
    assert "heatmaps left out: page size budget reached" in tight
    assert sum(len(u) for u in re.findall(r'src="(data:[^"]+)"', tight)) <= 0.01 * (1 << 20)


def test_heatmap_budget_stops_the_model(photo_dir, tiny_model):
    uris = [str(p) for p in sorted(photo_dir.glob("*.jpg"))]
    model = AttentionModel.load(tiny_model)
    full = make_heatmaps(uris, model)
    sizes = [sum(map(len, h.images)) for h in full]
    assert all(h.reason is None and h.images for h in full)
    budget = sizes[0] + sizes[1] + sizes[2] // 2       # room for two strips and a half
    cut = make_heatmaps(uris, model, budget)
    assert [h.images for h in cut[:2]] == [h.images for h in full[:2]]
    assert all("budget" in h.reason for h in cut[2:]) and len(cut) == len(uris)


def test_show_and_tell_model_has_no_maps_to_show(photo_dir, tmp_path):
    from tests.support.tiny import export_tiny_model

    flat = AttentionModel.load(export_tiny_model(str(tmp_path / "st"), decoder="show_and_tell"))
    heats = make_heatmaps([str(p) for p in sorted(photo_dir.glob("*.jpg"))[:2]], flat)
    assert all(not h.images and "attention is uniform" in h.reason for h in heats)


def test_model_without_attention_signature(pipeline_catalog, contract_model, tmp_path, capsys):
    page = build(pipeline_catalog, tmp_path / "plain.html", "--attention",
                 "--model", contract_model)
    err = capsys.readouterr().err
    assert "notice" in err and "no caption_with_attention signature" in err
    assert '<details class="heat">' not in page and len(cards(page)) == 8
    assert "no caption_with_attention signature" in page       # said on the page too
    assert page.count('src="data:image/jpeg;base64,') == 8     # thumbnails as before


def test_bad_model_flags(pipeline_catalog, tmp_path, capsys):
    out = tmp_path / "x.html"
    assert report.main([str(pipeline_catalog), "--out", str(out), "--attention",
                        "--model", str(tmp_path / "nope")]) == 2
    assert "cannot load model" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):
        report.main([str(pipeline_catalog), "--out", str(out), "--model", "m"])


# --- in headless Chromium ----------------------------------------------------------

OPEN_AND_DECODE = """(async () => {
  const out = [];
  for (const d of document.querySelectorAll('details.heat')) d.open = true;
  for (const img of document.querySelectorAll('.heat-strip img')) {
    img.scrollIntoView();
    await Promise.race([img.decode().catch(() => null),
                        new Promise(r => setTimeout(r, 3000))]);
    out.push({ok: img.complete && img.naturalWidth > 0, w: img.naturalWidth,
              h: img.naturalHeight, label: img.closest('figure').textContent});
  }
  return out;
})()"""


def test_heatmaps_in_chromium(pipeline_catalog, tmp_path):
    out = tmp_path / "report.html"
    page = build(pipeline_catalog, out, "--attention")
    expected = sum(len(c["minis"]) for c in cards(page))
    with Browser(chromium_or_skip()) as browser:
        browser.open(out.as_uri())
        assert browser.evaluate("document.documentElement.getAttribute('data-ready')") == "1"
        closed = browser.evaluate("[...document.querySelectorAll('details.heat')]"
                                  ".filter(d => !d.open).length")
        assert closed == 8                                   # collapsed by default
        minis = browser.evaluate(OPEN_AND_DECODE)
        assert len(minis) == expected > 8 and all(m["ok"] for m in minis), minis
        assert all(max(m["w"], m["h"]) == 64 and m["label"] for m in minis)
        assert browser.problems() == []                      # no console error, no CSP report
