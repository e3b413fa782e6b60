"""RAW files (issue 18): alt text goes to an XMP sidecar, the RAW's bytes never change.

The RAW files are DNG and CR2 containers carrying a real sample photo as their
PreviewImage (tests/support/raw_files.py); real exiftool, real Beam runs.
"""
from __future__ import annotations

import os
import shutil

import pytest

from altbeam.pipelines.catalog.beam_io import read_table_rows
from tests.pipelines.writeback.support import (
    CAPTION,
    annotate,
    catalog,
    catalog_row,
    exiftool_set,
    photo,
    raw_preview,
    run,
    sha,
    tags,
)
from tests.support.raw_files import raw_with_preview

pytestmark = pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool missing")

ALT = "XMP-iptcCore:AltTextAccessibility"


def raw(sample_photos, folder, name, index=0):
    """A DNG or CR2 (by ``name``) carrying sample photo ``index`` as its PreviewImage;
    another name: a DNG renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    src = sorted(sample_photos.glob("*.jpg"))[index]
    suffix = os.path.splitext(name)[1]
    built = folder / (name if suffix.lower() in (".dng", ".cr2") else name + ".dng")
    path = raw_with_preview(built, src.read_bytes()).rename(folder / name)
    os.chmod(path, 0o644)
    assert raw_preview(path) == src.read_bytes()       # a real photo inside a real RAW
    return path


def file_state(path) -> tuple:
    st = os.stat(path)
    return sha(path), st.st_size, st.st_mtime_ns


def test_a_raw_file_is_annotated_in_its_sidecar_and_never_written(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    dng = raw(sample_photos, folder, "IMG_0001.dng")
    before = file_state(dng)
    cat = catalog(tmp_path, [dng])
    (row,) = read_table_rows(str(cat), "catalog")
    assert row["format"] == "RAW/DNG"

    # every mode, every field: only the XMP fields, only in the sidecar
    result, by_name = run(cat, "--xmp-description", "--exif-description", "--iptc-caption")
    d = by_name["IMG_0001.dng"]
    assert result["counts"] == {"written": 1}, d["reason"]
    side = folder / "IMG_0001.xmp"                 # Lightroom/Bridge/Capture One's name
    assert d["target"] == str(side)
    assert d["fields"] == [ALT, "XMP-dc:Description"]
    assert "EXIF:ImageDescription" in d["reason"] and "IPTC:Caption-Abstract" in d["reason"]
    assert file_state(dng) == before                              # the RAW: not one byte
    assert d["sha256_before"] == d["sha256_after"] == before[0]
    got = tags(side)
    assert got[ALT] == CAPTION and got["XMP-dc:Description"] == CAPTION
    assert got["XMP-altbeam:Caption"] == CAPTION
    assert sorted(os.listdir(folder)) == ["IMG_0001.dng", "IMG_0001.xmp"]

    sidecar = side.read_bytes()
    again, by_name = run(cat, "--xmp-description")
    assert again["counts"] == {"skipped": 1}
    assert by_name["IMG_0001.dng"]["reason"].startswith("already_written")
    assert side.read_bytes() == sidecar and file_state(dng) == before
    _, by_name = run(cat, "--sidecar-naming", "ext")  # the existing sidecar, not a second one
    assert by_name["IMG_0001.dng"]["reason"].startswith("already_written")
    assert sorted(os.listdir(folder)) == ["IMG_0001.dng", "IMG_0001.xmp"]

    exiftool_set(side, f"-{ALT}=Harbour at dawn, two fishing boats")   # now a person's
    _, by_name = run(cat)
    assert by_name["IMG_0001.dng"]["reason"].startswith("existing_text")
    assert file_state(dng) == before


def test_raw_sidecar_names_existing_sidecars_and_pairs(sample_photos, tmp_path):
    folder = tmp_path / "photos"
    dark = raw(sample_photos, folder, "dark.dng", index=1)        # darktable's sidecar exists
    exiftool_set(folder / "dark.dng.xmp", "-XMP-xmp:Rating=3")
    ext = raw(sample_photos, folder, "ext.dng", index=2)
    pair = raw(sample_photos, folder, "pair.dng", index=3)         # RAW + JPEG, one stem
    pair_jpg = photo(sample_photos, folder, "pair.jpg", index=3)
    twin_a = raw(sample_photos, folder, "twin.CR2", index=4)       # two RAWs, one stem
    twin_b = raw(sample_photos, folder, "twin.dng", index=5)       # (a DNG converted beside)
    raws = (dark, ext, pair, twin_a, twin_b)
    before = {p.name: file_state(p) for p in raws}
    cat = catalog(tmp_path, [dark, pair, pair_jpg, twin_a, twin_b])
    catalog(tmp_path, [ext])

    result, by_name = run(cat)
    assert by_name["dark.dng"]["target"] == str(folder / "dark.dng.xmp")   # updated, kept
    assert tags(folder / "dark.dng.xmp")[ALT] == CAPTION
    assert tags(folder / "dark.dng.xmp")["XMP-xmp:Rating"] == 3
    assert not (folder / "dark.xmp").exists()
    assert by_name["pair.dng"]["target"] == str(folder / "pair.xmp")
    assert by_name["pair.jpg"]["target"] == str(pair_jpg)            # a JPEG: in place
    assert tags(pair_jpg)[ALT] == CAPTION
    for twin in ("twin.CR2", "twin.dng"):            # either would take twin.xmp: neither
        assert by_name[twin]["reason"].startswith("sidecar_name_collision"), twin
    assert by_name["ext.dng"]["target"] == str(folder / "ext.xmp")
    assert {p.name: file_state(p) for p in raws} == before

    _, by_name = run(cat, "--sidecar-naming", "ext")    # each twin its own name.ext.xmp
    assert by_name["twin.CR2"]["target"] == str(folder / "twin.CR2.xmp")
    assert by_name["twin.dng"]["target"] == str(folder / "twin.dng.xmp")
    assert by_name["twin.CR2"]["action"] == by_name["twin.dng"]["action"] == "written"
    assert by_name["pair.dng"]["reason"].startswith("already_written")   # pair.xmp found
    assert not (folder / "twin.xmp").exists() and not (folder / "pair.dng.xmp").exists()
    assert {p.name: file_state(p) for p in raws} == before


def test_a_raw_catalogued_under_another_format_is_never_written(sample_photos, tmp_path):
    """A RAW that exiftool recognises but whose row does not say so (a DNG named .tif)."""
    folder = tmp_path / "photos"
    hidden = raw(sample_photos, folder, "scan.tif")
    before = file_state(hidden)
    (d,) = annotate([catalog_row(hidden, format="TIFF")], run_id="r1")
    assert d["action"] == "skipped" and d["reason"].startswith("raw_file:"), d["reason"]
    assert "DNG" in d["reason"]
    assert file_state(hidden) == before
    (d,) = annotate([catalog_row(hidden, format="RAW/DNG")], run_id="r2")   # as the RAW it is
    assert d["action"] == "written" and d["target"] == str(folder / "scan.xmp")
    assert file_state(hidden) == before


def test_an_archive_folder_through_caption_writeback_and_caption_again(
        sample_photos, contract_model, tmp_path):
    """A RAW and a captioned newsroom JPEG: captioned, annotated beside the person's words
    and in the RAW's sidecar, every time kept; a second caption run captions nothing."""
    from altbeam.pipelines.caption import pipeline as caption

    folder = tmp_path / "archive"
    cr2 = raw(sample_photos, folder, "IMG_0001.CR2", index=6)
    news = photo(sample_photos, folder, "news.jpg", index=7)
    exiftool_set(news, "-IPTC:Caption-Abstract=The mayor opens the bridge. Photo: Ann",
                 "-XMP-dc:Description=The mayor opens the bridge. Photo: Ann")
    for p in (cr2, news):
        os.utime(p, ns=(1_500_000_000_123_456_789,) * 2)
    before = {p.name: file_state(p) for p in (cr2, news)}
    words = tags(news)["IPTC:Caption-Abstract"], tags(news)["XMP-dc:Description"]
    cat = tmp_path / "cat"
    args = [str(folder), "--catalog", str(cat), "--model", str(contract_model), "--no-progress"]
    assert caption.run(args)["captioned"] == 2
    rows = {os.path.basename(r["uri"]): r for r in read_table_rows(str(cat), "catalog")}
    assert rows["IMG_0001.CR2"]["format"] == "RAW/CR2"

    result, by_name = run(cat)
    assert result["counts"] == {"written": 2}, [d["reason"] for d in by_name.values()]
    side = folder / "IMG_0001.xmp"
    assert by_name["IMG_0001.CR2"]["target"] == str(side)
    assert tags(side)[ALT] == rows["IMG_0001.CR2"]["caption"]
    assert file_state(cr2) == before["IMG_0001.CR2"]                 # the RAW: untouched
    assert tags(news)[ALT] == rows["news.jpg"]["caption"]
    assert (tags(news)["IPTC:Caption-Abstract"], tags(news)["XMP-dc:Description"]) == words
    assert os.stat(news).st_mtime_ns == before["news.jpg"][2]         # time kept

    again = caption.run(args)                        # the sidecar is no new image
    assert (again["captioned"], again["skipped_unchanged"], again["failed"]) == (0, 2, 0)
    assert len(list(read_table_rows(str(cat), "catalog"))) == 2
    assert not [r for r in read_table_rows(str(cat), "errors") if r["uri"].endswith(".xmp")]
    rerun, _ = run(cat)
    assert rerun["counts"] == {"skipped": 2}
