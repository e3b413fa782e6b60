"""Every format Pillow (with pillow-heif) opens is a candidate by content and decodes;
files that are not images are skips, never errors.

Each file is made here with Pillow (a PSD, which Pillow cannot write, by hand), and
written twice: with its own extension and as ``.bin`` (recognised by content alone).
"""
from __future__ import annotations

import io
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from altbeam.pipelines.caption.decode import ImageDecodeError, decode_image
from altbeam.pipelines.caption.formats import skip_reason, sniff_picture
from altbeam.pipelines.caption.sources import FileRecord, SkippedFile, list_input

S = 32
RED, BLUE = (220, 20, 20), (20, 20, 220)


def saved(fmt: str, im: Image.Image | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    (im or Image.new("RGB", (64, 48), RED)).save(buf, fmt, **kw)
    return buf.getvalue()


def psd_composite(colour=RED, size=(64, 48)) -> bytes:
    """A Photoshop file of one flattened RGB composite (raw, no layers)."""
    width, height = size
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    planes = b"".join(bytes([c]) * (width * height) for c in colour)
    return header + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes


def two_page_tiff() -> bytes:
    pages = [Image.new("RGB", (64, 48), RED), Image.new("RGB", (64, 48), BLUE)]
    return saved("TIFF", pages[0], save_all=True, append_images=pages[1:])


# name -> (bytes, extension, Pillow format recorded, pixels_from)
PICTURES = {
    "heic": (lambda: saved("HEIF", quality=95), ".heic", "HEIF", "file"),
    "avif": (lambda: saved("AVIF", quality=95), ".avif", "AVIF", "file"),
    "jpeg2000": (lambda: saved("JPEG2000"), ".jp2", "JPEG2000", "file"),
    "psd": (psd_composite, ".psd", "PSD", "composite"),
    "tga": (lambda: saved("TGA"), ".tga", "TGA", "file"),
    "bigtiff": (lambda: saved("TIFF", big_tiff=True), ".tif", "TIFF", "file"),
    "ico": (lambda: saved("ICO", sizes=[(64, 48)]), ".ico", "ICO", "file"),
    "ppm": (lambda: saved("PPM"), ".ppm", "PPM", "file"),
    "pgm": (lambda: saved("PPM", Image.new("L", (64, 48), 90)), ".pgm", "PPM", "file"),
    "pcx": (lambda: saved("PCX"), ".pcx", "PCX", "file"),
    "dds": (lambda: saved("DDS"), ".dds", "DDS", "file"),
    "sgi": (lambda: saved("SGI"), ".sgi", "SGI", "file"),
    "qoi": (lambda: saved("QOI"), ".qoi", "QOI", "file"),
    "im": (lambda: saved("IM"), ".im", "IM", "file"),     # no magic: its strict header
    "webp": (lambda: saved("WEBP", quality=95), ".webp", "WEBP", "file"),
    "multipage_tiff": (two_page_tiff, ".tiff", "TIFF", "frame 0"),
}
# Formats with no magic bytes Pillow checks: recognised by their extension only.
EXTENSION_ONLY = {"tga"}


@pytest.mark.parametrize("name", sorted(PICTURES))
def test_picture_decodes_by_content_and_by_name(name, tmp_path):
    make, ext, fmt, source = PICTURES[name]
    data = make()
    (tmp_path / f"{name}{ext}").write_bytes(data)
    (tmp_path / f"{name}.bin").write_bytes(data)
    listed = {i.uri.rsplit("/", 1)[-1]: i for i in list_input(str(tmp_path))}
    assert isinstance(listed[f"{name}{ext}"], FileRecord)
    by_content = listed[f"{name}.bin"]
    if name in EXTENSION_ONLY:
        assert by_content == SkippedFile(by_content.uri, ".bin", "not_an_image")
    else:
        assert isinstance(by_content, FileRecord), by_content
    out = decode_image(data, S, f"mem://{name}.bin")
    assert out.pixels.shape == (S, S, 3)
    assert (out.metadata.width, out.metadata.height, out.metadata.format) == (64, 48, fmt)
    assert out.pixels_from == source
    expected = (90, 90, 90) if name == "pgm" else RED
    assert np.allclose(out.pixels.reshape(-1, 3).mean(axis=0), expected, atol=12), name


def test_eps_needs_ghostscript_or_decodes():
    data = saved("EPS")
    assert sniff_picture(data) == ["EPS"]
    if shutil.which("gs"):
        assert decode_image(data, S, "mem://a.eps").metadata.format == "EPS"
        return
    with pytest.raises(ImageDecodeError) as e:
        decode_image(data, S, "mem://a.eps")
    assert e.value.error_type == "needs_ghostscript" and "Ghostscript" in str(e.value)


NOT_IMAGES = {
    "notes.txt": b"Python notes: P1 is the first point\n" * 3,
    "report.txt": b"BMW report, page 1\n",
    "song.mp3": b"ID3\x03\x00\x00\x00\x00\x00\x0f" + bytes(range(256)) * 8,
    "paper.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n",
    "empty": b"",
    "data.bin": b"\x01\x00\x00\x00" + bytes(200),        # WMF's weak magic, not a WMF
}


@pytest.mark.parametrize("name", sorted(NOT_IMAGES))
def test_not_an_image_is_a_skip(name):
    data = NOT_IMAGES[name]
    assert skip_reason(f"/in/{name}", lambda: io.BytesIO(data)) == "not_an_image"


def test_sidecars_are_skipped_and_named_pictures_always_read(tmp_path):
    assert skip_reason("/in/IMG_1.xmp", lambda: io.BytesIO(b"<x:xmpmeta/>")) == "xmp_sidecar"
    unread = lambda: pytest.fail("a picture's name is enough; its bytes are not read")  # noqa: E731
    assert skip_reason("/in/IMG_1.CR2", unread) is None
    assert skip_reason("/in/scan.JP2", unread) is None


def test_truncated_jpeg_is_a_candidate_and_an_error_by_content(tmp_path):
    whole = saved("JPEG", Image.new("RGB", (256, 256), RED))
    cut = whole[: len(whole) // 2]
    (tmp_path / "cut.bin").write_bytes(cut)
    [record] = list_input(str(tmp_path))
    assert isinstance(record, FileRecord)
    with pytest.raises(ImageDecodeError) as e:
        decode_image(cut, S, record.uri)
    assert e.value.error_type == "truncated"
