"""decode_image: formats, modes, orientation, draft mode, metadata, and bad files.

Every test image is generated here with Pillow (and exiftool for XMP), so the files
are real encodings of known pixels.
"""
from __future__ import annotations

import datetime as dt
import io
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest
from PIL import Image

from altbeam.pipelines.caption.decode import ImageDecodeError, decode_image, parse_xmp_descriptions

S = 32
RED, BLUE, WHITE = (220, 20, 20), (20, 20, 220), (255, 255, 255)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def solid(colour=RED, size=(64, 48), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def png_with_declared_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def oriented_jpeg() -> bytes:
    """40x20 stored, left half red; EXIF orientation 6 (rotate 90 CW to display)."""
    im = solid(BLUE, (40, 20))
    im.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[274] = 6
    return encode(im, "JPEG", exif=exif, quality=95)


def sixteen_bit_png() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (48, 1))
    return encode(Image.fromarray(ramp, "I;16"), "PNG")


def palette_alpha_png() -> bytes:
    """Palette PNG: left half fully transparent, right half opaque blue."""
    im = Image.new("P", (64, 48), 0)
    im.putpalette([0, 0, 0, *BLUE] + [0] * (254 * 3))
    im.paste(1, (32, 0, 64, 48))
    return encode(im, "PNG", transparency=0)


def animated_gif() -> bytes:
    frames = [solid(RED, (32, 32)), solid(BLUE, (32, 32))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                  loop=0)


def cmyk_jpeg() -> bytes:
    return encode(solid((0, 255, 255, 0), (64, 48), "CMYK"), "JPEG", quality=95)  # red


# name -> bytes for files that must decode, and for files that must fail.
def good_files() -> dict[str, bytes]:
    return {"cmyk.jpg": cmyk_jpeg(), "sixteen_bit.png": sixteen_bit_png(),
            "palette_alpha.png": palette_alpha_png(), "animated.gif": animated_gif(),
            "orientation6.jpg": oriented_jpeg()}


def bad_files() -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, expected error_type)."""
    whole = encode(solid(RED, (256, 256)), "JPEG")
    return {"zero_bytes.jpg": (b"", "empty_file"),
            "truncated.jpg": (whole[: len(whole) // 3], "truncated"),
            "text.jpg": (b"this is not an image, just text\n" * 4, "not_an_image"),
            "huge_dims.png": (png_with_declared_size(100_000, 100_000), "too_many_pixels")}


def mean_rgb(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(-1, 3).mean(axis=0)


@pytest.mark.parametrize("fmt,ext,kw", [
    ("JPEG", "jpg", {"quality": 95}), ("PNG", "png", {}), ("WEBP", "webp", {"quality": 95}),
    ("TIFF", "tif", {}), ("BMP", "bmp", {}), ("GIF", "gif", {}),
])
def test_formats_decode_to_rgb_square(fmt, ext, kw):
    data = encode(solid(RED, (64, 48)), fmt, **kw)
    out = decode_image(data, S, f"mem://red.{ext}")
    assert out.pixels.shape == (S, S, 3) and out.pixels.dtype == np.uint8
    assert np.allclose(mean_rgb(out.pixels), RED, atol=12), fmt
    md = out.metadata
    assert (md.width, md.height, md.format) == (64, 48, fmt)


def test_stretches_to_square_without_cropping():
    im = solid(BLUE, (400, 100))
    im.paste(RED, (0, 0, 100, 100))           # left quarter red: a centre crop would lose it
    px = decode_image(encode(im, "PNG"), S, "mem://wide.png").pixels
    assert np.allclose(mean_rgb(px[:, : S // 4 - 1]), RED, atol=15)
    assert np.allclose(mean_rgb(px[:, S // 4 + 1:]), BLUE, atol=15)


def test_exif_orientation_applied_and_reported():
    out = decode_image(oriented_jpeg(), S, "mem://o6.jpg")
    assert (out.metadata.width, out.metadata.height) == (20, 40)
    top, bottom = out.pixels[: S // 2 - 2], out.pixels[S // 2 + 2:]
    assert np.allclose(mean_rgb(top), RED, atol=30)      # stored left half shows on top
    assert np.allclose(mean_rgb(bottom), BLUE, atol=30)


def test_cmyk_becomes_rgb():
    out = decode_image(cmyk_jpeg(), S, "mem://cmyk.jpg")
    r, g, b = mean_rgb(out.pixels)
    assert r > 200 and g < 40 and b < 40


def test_sixteen_bit_keeps_its_range():
    px = decode_image(sixteen_bit_png(), S, "mem://16.png").pixels
    assert px[:, 0].mean() < 20 and px[:, -1].mean() > 235      # ramp, not clipped white


def test_palette_alpha_composited_on_white():
    px = decode_image(palette_alpha_png(), S, "mem://p.png").pixels
    assert np.allclose(mean_rgb(px[:, : S // 2 - 1]), WHITE, atol=3)
    assert np.allclose(mean_rgb(px[:, S // 2 + 1:]), BLUE, atol=3)


def test_greyscale_and_la_modes():
    assert decode_image(encode(solid(128, mode="L"), "PNG"), S, "m://l.png").pixels.mean() == 128
    la = Image.new("LA", (16, 16), (0, 0))          # black but fully transparent -> white
    assert decode_image(encode(la, "PNG"), S, "m://la.png").pixels.min() == 255


def test_animation_uses_first_frame():
    out = decode_image(animated_gif(), S, "mem://anim.gif")
    assert np.allclose(mean_rgb(out.pixels), RED, atol=12)


def test_big_jpeg_uses_draft_but_reports_full_size(sample_photos):
    photo = Image.open(next(sample_photos.glob("*.jpg"))).convert("RGB")
    big = photo.resize((photo.width * 8, photo.height * 8))
    data = encode(big, "JPEG", quality=90)
    probe = Image.open(io.BytesIO(data))
    probe.draft(None, (S, S))
    assert probe.size[0] * 8 - 8 <= big.width      # libjpeg really can scale it 1/8
    out = decode_image(data, S, "mem://big.jpg")
    assert (out.metadata.width, out.metadata.height) == big.size
    ref = np.asarray(big.resize((S, S), Image.Resampling.BILINEAR, reducing_gap=3.0))
    assert np.abs(out.pixels.astype(int) - ref.astype(int)).mean() < 12


@pytest.mark.parametrize("name", sorted(bad_files()))
def test_bad_files_raise_clear_errors(name):
    data, expected_type = bad_files()[name]
    uri = f"/photos/{name}"
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, S, uri)
    assert info.value.error_type == expected_type
    assert uri in str(info.value) and len(info.value.reason) > 5


def test_pixel_limit_is_a_flag():
    data = encode(solid(RED, (200, 100)), "PNG")
    with pytest.raises(ImageDecodeError, match="20,000 pixels, over the limit of 10,000") as e:
        decode_image(data, S, "mem://x.png", max_pixels=10_000)
    assert e.value.error_type == "too_many_pixels"
    assert decode_image(data, S, "mem://x.png", max_pixels=None).pixels.shape == (S, S, 3)


def test_exif_metadata_read():
    exif = Image.Exif()
    exif[271], exif[272], exif[270] = "Canon", "EOS 5D\x00", "A red square"
    exif.get_ifd(0x8769)[36867] = "2021:07:04 18:30:05"
    out = decode_image(encode(solid(), "JPEG", exif=exif), S, "mem://e.jpg").metadata
    assert out.camera_make == "Canon" and out.camera_model == "EOS 5D"
    assert out.capture_time == dt.datetime(2021, 7, 4, 18, 30, 5)
    assert out.existing_description == "A red square" and out.existing_alt_text is None


def test_no_metadata_gives_nulls():
    md = decode_image(encode(solid(), "PNG"), S, "mem://n.png").metadata
    assert (md.capture_time, md.camera_make, md.camera_model, md.existing_alt_text,
            md.existing_description) == (None,) * 5


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
@pytest.mark.parametrize("ext,fmt", [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"),
                                     ("tif", "TIFF")])
def test_xmp_written_by_exiftool_is_read(tmp_path, ext, fmt):
    path = tmp_path / f"x.{ext}"
    path.write_bytes(encode(solid(), fmt))
    subprocess.run(["exiftool", "-q", "-overwrite_original",
                    "-XMP-dc:Description=A dog on a beach",
                    "-XMP-iptcCore:AltTextAccessibility=Brown dog running on sand", str(path)],
                   check=True)
    md = decode_image(path.read_bytes(), S, str(path)).metadata
    assert md.existing_description == "A dog on a beach"
    assert md.existing_alt_text == "Brown dog running on sand"


def test_xmp_parser_prefers_x_default_and_survives_garbage():
    packet = b"""<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description><rdf:Alt>
<rdf:li xml:lang="de">Ein Hund</rdf:li><rdf:li xml:lang="x-default">A dog</rdf:li>
</rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>
<?xpacket end='w'?>"""
    assert parse_xmp_descriptions(packet) == ("A dog", None)
    assert parse_xmp_descriptions(b"<x:xmpmeta><broken") == (None, None)
    assert parse_xmp_descriptions(b"\x00\x01garbage") == (None, None)
