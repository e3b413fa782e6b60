"""Camera RAW files: captioned from their largest embedded preview, upright, or LibRaw.

The RAW containers are built by tests/support/raw_files.py (exiftool writes a real
photo into them as PreviewImage); the end-to-end test captions them with
`altbeam caption` and checks the RAW bytes are never changed.
"""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest
from PIL import Image

from altbeam.pipelines.caption import pipeline as caption
from altbeam.pipelines.caption.decode import ImageDecodeError, decode_image
from altbeam.pipelines.caption.raw_preview import RawReader
from altbeam.pipelines.caption.sources import FileRecord, list_input
from altbeam.pipelines.writeback.exiftool_session import ExifToolSession
from tests.pipelines.caption.test_caption import catalog_rows, photos
from tests.support.raw_files import jpeg_bytes, linear_dng, raw_with_preview

pytestmark = pytest.mark.skipif(not shutil.which("exiftool"), reason="exiftool not installed")

S = 32
RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def half_red_photo(size=(400, 200)) -> bytes:
    """Left half red, right half blue."""
    im = Image.new("RGB", size, BLUE)
    im.paste(RED, (0, 0, size[0] // 2, size[1]))
    return jpeg_bytes(im)


def mean(pixels) -> np.ndarray:
    return pixels.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("suffix,family", [(".dng", "DNG"), (".cr2", "CR2")])
def test_preview_with_the_raws_orientation(tmp_path, suffix, family):
    raw = raw_with_preview(tmp_path / f"IMG_0001{suffix}", half_red_photo(), orientation=6)
    data = raw.read_bytes()
    out = decode_image(data, S, str(raw))
    md = out.metadata
    assert (md.format, out.pixels_from) == (f"RAW/{family}", "PreviewImage")
    assert (md.width, md.height) == (200, 400)           # turned by the RAW's Orientation 6
    assert np.allclose(mean(out.pixels[: S // 2 - 2]), RED, atol=25)    # left half on top
    assert np.allclose(mean(out.pixels[S // 2 + 2:]), BLUE, atol=25)
    assert (md.camera_make, md.capture_time.isoformat()) == ("Canon", "2021-06-05T14:30:00")
    assert raw.read_bytes() == data                       # reading never writes


def test_the_largest_preview_that_decodes_wins(tmp_path):
    small_red = jpeg_bytes(Image.new("RGB", (64, 48), RED))
    big_green = jpeg_bytes(Image.new("RGB", (640, 480), GREEN))
    raw = raw_with_preview(tmp_path / "big_other.dng", small_red, other_image=big_green)
    out = decode_image(raw.read_bytes(), S, str(raw))
    assert out.pixels_from == "OtherImage" and (out.metadata.width, out.metadata.height) == (
        640, 480)
    assert np.allclose(mean(out.pixels), GREEN, atol=12)
    broken = raw_with_preview(tmp_path / "broken_other.dng", small_red,
                              other_image=big_green[:40] + bytes(5000))
    out = decode_image(broken.read_bytes(), S, str(broken))
    assert out.pixels_from == "PreviewImage" and np.allclose(mean(out.pixels), RED, atol=12)


def test_libraw_when_no_preview(tmp_path):
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :32], rgb[:, 32:] = RED, BLUE
    raw = linear_dng(tmp_path / "sensor_only.dng", rgb)
    out = decode_image(raw.read_bytes(), S, str(raw))
    assert (out.pixels_from, out.metadata.format) == ("libraw", "RAW/DNG")
    assert (out.metadata.width, out.metadata.height) == (64, 48)
    left, right = mean(out.pixels[:, : S // 2 - 2]), mean(out.pixels[:, S // 2 + 2:])
    assert left[0] > left[2] + 100 and right[2] > right[0] + 100     # red left, blue right


def test_without_exiftool_libraw_alone_and_a_named_error(tmp_path):
    rgb = np.full((48, 64, 3), 128, np.uint8)
    sensor = linear_dng(tmp_path / "sensor_only.dng", rgb)
    preview_only = raw_with_preview(tmp_path / "preview_only.cr2", half_red_photo())
    with RawReader(ExifToolSession(executable="no-such-exiftool")) as reader:
        out = decode_image(sensor.read_bytes(), S, str(sensor), raw_reader=reader)
        assert out.pixels_from == "libraw"
        with pytest.raises(ImageDecodeError) as e:
            decode_image(preview_only.read_bytes(), S, str(preview_only), raw_reader=reader)
    assert e.value.error_type == "raw_unreadable" and "exiftool unavailable" in str(e.value)


def test_not_a_raw_inside_is_an_error_not_a_crash():
    with pytest.raises(ImageDecodeError) as e:
        decode_image(b"not a raw file at all\n" * 50, S, "/in/DSC_0001.NEF")
    assert e.value.error_type == "raw_unreadable" and "RAW/NEF" in str(e.value)


def test_raw_families_are_listed(tmp_path):
    for name in ("a.CR3", "b.nef", "c.ARW", "d.raf", "e.rw2", "f.orf", "g.pef", "h.srw",
                 "i.3fr", "j.iiq", "k.x3f", "l.dng"):
        (tmp_path / name).write_bytes(b"x" * 16)
    assert all(isinstance(i, FileRecord) for i in list_input(str(tmp_path)))


def test_raws_captioned_end_to_end(sample_photos, contract_model, tmp_path):
    src, cat = tmp_path / "in", tmp_path / "cat"
    src.mkdir()
    real = [open(p, "rb").read() for p in photos(sample_photos)[:2]]
    raw_with_preview(src / "IMG_0001.CR2", real[0], orientation=8)
    raw_with_preview(src / "IMG_0002.dng", real[1])
    rgb = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    linear_dng(src / "IMG_0003.dng", rgb)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}

    summary = caption.run([str(src), "--catalog", str(cat), "--model", str(contract_model),
                           "--no-progress"])
    assert (summary["exit_code"], summary["captioned"], summary["failed"]) == (0, 3, 0)
    rows = {r["uri"].rsplit("/", 1)[-1]: r for r in catalog_rows(cat)}
    assert {n: (r["format"], r["pixels_from"]) for n, r in rows.items()} == {
        "IMG_0001.CR2": ("RAW/CR2", "PreviewImage"),
        "IMG_0002.dng": ("RAW/DNG", "PreviewImage"),
        "IMG_0003.dng": ("RAW/DNG", "libraw")}
    with Image.open(photos(sample_photos)[0]) as photo:
        assert (rows["IMG_0001.CR2"]["width"], rows["IMG_0001.CR2"]["height"]) == (
            photo.height, photo.width)                  # Orientation 8 turns it
    for name, row in rows.items():
        assert row["caption"] and row["sha256"] == before[name]
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.iterdir()}
    assert after == before                              # RAW bytes never change
