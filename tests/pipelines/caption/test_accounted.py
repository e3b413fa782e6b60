"""Every file under an input is accounted for: a catalog row, an errors row, or a
counted skip (not an image) in the run summary, the CLI's last line and the query
view ``skipped``."""
from __future__ import annotations

import shutil

import pytest
from PIL import Image

from altbeam.pipelines.caption import pipeline as caption
from altbeam.pipelines.catalog.api import connect
from tests.pipelines.caption.test_caption import catalog_rows, error_rows, photos
from tests.pipelines.caption.test_formats import NOT_IMAGES, psd_composite, saved
from tests.support.raw_files import raw_with_preview


def mixed_folder(sample_photos, src) -> dict[str, int]:
    """Real photos, odd formats, a RAW, non-images and broken images; the expected
    number of catalog rows, errors rows and skips."""
    (src / "sub").mkdir(parents=True)
    for path in photos(sample_photos)[:2]:
        shutil.copy(path, src)
    (src / "phone.heic").write_bytes(saved("HEIF", quality=90))
    (src / "scan.jp2").write_bytes(saved("JPEG2000"))
    (src / "layers.psd").write_bytes(psd_composite())
    (src / "png_named.dat").write_bytes(saved("PNG"))       # a picture by content
    whole = saved("JPEG", Image.new("RGB", (256, 256), (9, 9, 9)))
    (src / "sub" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    (src / "sub" / "readme.jpg").write_text("text named like a photo\n")
    for name in ("notes.txt", "song.mp3", "paper.pdf", "empty"):
        (src / "sub" / name).write_bytes(NOT_IMAGES[name])
    (src / "phone.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    rows, errors, skips = 6, 2, 5
    if shutil.which("exiftool"):
        raw_with_preview(src / "IMG_0001.CR2", open(photos(sample_photos)[2], "rb").read())
        rows += 1
    return {"rows": rows, "errors": errors, "skips": skips}


def test_every_file_is_a_row_an_error_or_a_skip(sample_photos, contract_model, tmp_path,
                                                capsys):
    src, cat = tmp_path / "in", tmp_path / "cat"
    expected = mixed_folder(sample_photos, src)
    given = sum(1 for p in src.rglob("*") if p.is_file())

    assert caption.main([str(src), "--catalog", str(cat), "--model", str(contract_model),
                         "--no-progress"]) == 0
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert ("skipped 5 files that are not images: (none) ×1, .mp3 ×1, .pdf ×1, .txt ×1, "
            ".xmp ×1") in line

    rows, errors = catalog_rows(cat), error_rows(cat)
    assert {r["uri"].rsplit("/", 1)[-1]: r["error_type"] for r in errors} == {
        "cut.jpg": "truncated", "readme.jpg": "not_an_image"}
    assert (len(rows), len(errors)) == (expected["rows"], expected["errors"])
    by_name = {r["uri"].rsplit("/", 1)[-1]: r for r in rows}
    assert by_name["png_named.dat"]["format"] == "PNG"
    assert by_name["layers.psd"]["pixels_from"] == "composite"
    assert {r["pixels_from"] for n, r in by_name.items() if n.endswith(".jpg")} == {"file"}

    con = connect(str(cat))
    skipped = con.sql("SELECT uri, extension, reason, run_id FROM skipped ORDER BY uri"
                      ).fetchall()
    assert [(u.rsplit("/", 1)[-1], e, r) for u, e, r, _ in skipped] == [
        ("phone.xmp", ".xmp", "xmp_sidecar"), ("empty", "", "not_an_image"),
        ("notes.txt", ".txt", "not_an_image"), ("paper.pdf", ".pdf", "not_an_image"),
        ("song.mp3", ".mp3", "not_an_image")]
    [(run_id, total)] = con.sql("SELECT run_id, json_extract(summary, "
                                "'$.skipped_not_images_total')::INT FROM runs").fetchall()
    assert {r for *_, r in skipped} == {run_id} and total == expected["skips"]
    counted = con.sql("SELECT (SELECT count(*) FROM catalog) + (SELECT count(*) FROM errors)"
                      " + (SELECT count(*) FROM skipped)").fetchall()[0][0]
    assert counted == given == sum(expected.values())


def test_extensions_flag_keeps_its_meaning_and_counts_the_rest(sample_photos,
                                                               contract_model, tmp_path):
    src, cat = tmp_path / "in", tmp_path / "cat"
    src.mkdir()
    shutil.copy(photos(sample_photos)[0], src / "a.jpg")
    Image.new("RGB", (40, 40), (1, 200, 3)).save(src / "b.png")
    (src / "c.txt").write_text("notes")
    summary = caption.run([str(src), "--catalog", str(cat), "--model", str(contract_model),
                           "--extensions", "jpg", "--no-progress"])
    assert summary["captioned"] == 1
    assert summary["skipped_not_in_extensions"] == {".png": 1, ".txt": 1}
    assert summary["skipped_not_images_total"] == 0
    assert "skipped 2 files not in --extensions: .png ×1, .txt ×1" in caption.format_summary(
        summary)


def test_catalog_inside_the_input_is_skipped_not_captioned(sample_photos, contract_model,
                                                           tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photos(sample_photos)[0], src / "a.jpg")
    args = [str(src), "--catalog", str(src / "cat"), "--model", str(contract_model),
            "--no-progress"]
    assert caption.run(args)["captioned"] == 1
    again = caption.run(args)
    assert (again["captioned"], again["failed"], again["skipped_unchanged"]) == (0, 0, 1)
    assert set(again["skipped_not_images"]) == {".json", ".parquet"}


@pytest.mark.parametrize("counts,text", [
    ({}, ""), ({".txt": 1}, "; skipped 1 file that is not an image: .txt ×1")])
def test_skipped_phrase(counts, text):
    assert caption.skipped_phrase(counts, "that are not images", "that is not an image") == text
