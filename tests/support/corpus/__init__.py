"""A corpus of bad and awkward inputs, generated at test time (no committed binaries).

``build_corpus(folder)`` writes every case under ``folder/photos`` (plus a sibling
``folder/outside`` for the out-of-root symlink) and returns one :class:`CorpusCase`
per kind. Each case says what the caption run must do with it: catalogue it (good
input, maybe awkward) or record exactly one errors row with a given stage and
error_type; and, for catalogued files, what ``altbeam writeback`` must decide.

Some cases need something to happen while the pipeline runs:

* ``unreadable`` (mode 000) only fails for a non-root user: run the pipeline as
  ``nobody`` (:func:`as_nobody`); ``unlistable_folder`` likewise;
* ``deleted_after_listing`` is deleted by :mod:`tests.support.corpus.race_run` right after the
  listing step has stat'ed it and before the read step runs;
* ``modified_before_writeback`` is rewritten by :func:`modify_before_writeback` between
  the caption run and the writeback.

The caption run must use :data:`CAPTION_FLAGS` (the ``too_large`` case relies on it).
"""
from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image

CATALOGUED, ERROR = "catalogued", "error"
CAPTION_FLAGS = ["--max-file-size", "1MB"]


@dataclasses.dataclass
class CorpusCase:
    kind: str
    path: str                          # the uri the catalog/errors row will carry
    expect: str                        # CATALOGUED or ERROR
    stage: str | None = None           # errors row: list | read | decode | inference
    error_type: str | None = None
    writeback: str = "written"         # catalogued: the writeback action[:reason code]
    dims: tuple[int, int] | None = None  # catalogued: (width, height) after orientation
    no_caption: str | None = None      # catalogued uncaptioned: too_small | blank
    needs_non_root: bool = False       # only fails for a user without root's powers
    delete_after_listing: bool = False
    modify_before_writeback: bool = False


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _noise(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                           ).convert(mode)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG declaring 10 gigapixels: decoding it would need ~30 GB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _png_chunk(b"IEND", b""))


def _oriented_jpeg(orientation: int) -> bytes:
    """Stored 64x32 (left half red); EXIF orientation ``orientation``."""
    im = Image.new("RGB", (64, 32), (20, 20, 220))
    im.paste((220, 20, 20), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[274] = orientation
    exif[271] = "CorpusCam"
    return _encode(im, "JPEG", exif=exif, quality=90)


def _corrupt_exif_jpeg() -> bytes:
    """A good JPEG whose EXIF block is garbage after the TIFF header (bad IFD offsets)."""
    exif = Image.Exif()
    exif[271], exif[272], exif[274] = "Cam", "Model X", 1
    data = bytearray(_encode(_noise(64, 48, 3), "JPEG", exif=exif, quality=90))
    start = data.find(b"Exif\x00\x00") + 6
    data[start + 4:start + 40] = b"\xfe" * 36     # keep "II*\0", smash the IFD
    return bytes(data)


def _wide_jpeg() -> bytes:
    return _encode(_noise(8000, 3, 4), "JPEG", quality=90)


def _cmyk_jpeg() -> bytes:
    return _encode(_noise(64, 48, 20, mode="CMYK"), "JPEG", quality=90)


def _png16() -> bytes:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (48, 1))
    return _encode(Image.fromarray(ramp, "I;16"), "PNG")


def _palette_alpha_png() -> bytes:
    im = Image.new("P", (64, 48), 0)
    im.putpalette([0, 0, 0, 20, 20, 220] + [0] * (254 * 3))
    im.paste(1, (32, 0, 64, 48))
    return _encode(im, "PNG", transparency=0)


def _animated_gif() -> bytes:
    frames = [_noise(32, 32, seed) for seed in (21, 22)]
    return _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                   loop=0)


def _grey_alpha_png() -> bytes:
    return _encode(_noise(50, 36, 23).convert("L").convert("LA"), "PNG")


def _corrupt_png_header() -> bytes:
    """Right PNG signature, IHDR with a bad CRC: Pillow refuses the header."""
    data = bytearray(_encode(_noise(40, 30, 5), "PNG"))
    data[29] ^= 0xFF                       # inside IHDR's CRC
    return bytes(data)


def _corrupt_png_data() -> bytes:
    """A valid header followed by an IDAT that is not zlib data."""
    ihdr = struct.pack(">IIBBBBB", 40, 30, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"definitely not zlib data" * 8) + _png_chunk(b"IEND", b""))


def build_corpus(folder) -> list[CorpusCase]:
    """Write the corpus under ``folder`` and return its cases (inputs: ``folder/photos``)."""
    root = pathlib.Path(folder) / "photos"
    outside = pathlib.Path(folder) / "outside"
    root.mkdir(parents=True)
    outside.mkdir()
    cases: list[CorpusCase] = []

    def add(kind: str, name: str, data: bytes | None, expect: str = CATALOGUED, **kw):
        path = root / name
        if data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        cases.append(CorpusCase(kind, str(path), expect, **kw))
        return path

    # -- good but awkward: catalogued ----------------------------------------------
    add("cmyk_jpeg", "cmyk.jpg", _cmyk_jpeg(), dims=(64, 48))
    add("png_16bit", "sixteen_bit.png", _png16(), dims=(64, 48))
    add("palette_png_transparency", "palette_alpha.png", _palette_alpha_png(), dims=(64, 48))
    add("greyscale_alpha_png", "grey_alpha.png", _grey_alpha_png(), dims=(50, 36))
    add("animated_gif", "animated.gif", _animated_gif(), dims=(32, 32))
    for o in range(2, 9):
        add(f"exif_orientation_{o}", f"orientation{o}.jpg", _oriented_jpeg(o),
            dims=(32, 64) if o >= 5 else (64, 32))
    add("corrupt_exif_block", "corrupt_exif.jpg", _corrupt_exif_jpeg(), dims=(64, 48))
    # Too small or too uniform to describe: catalogued without a caption, never written.
    add("one_pixel", "one_pixel.png", _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
        dims=(1, 1), no_caption="too_small", writeback="skipped:status_too_small")
    add("very_wide", "very_wide.jpg", _wide_jpeg(), dims=(8000, 3), no_caption="too_small",
        writeback="skipped:status_too_small")
    add("uniform_grey", "grey.jpg", _encode(Image.new("RGB", (64, 48), (128, 128, 128)),
                                            "JPEG"),
        dims=(64, 48), no_caption="blank", writeback="skipped:status_blank")
    add("tiff", "scan.tif", _encode(_noise(48, 40, 6), "TIFF"), dims=(48, 40))
    add("webp", "web.webp", _encode(_noise(48, 40, 7), "WEBP", quality=90), dims=(48, 40))
    add("bmp_not_writable", "old.bmp", _encode(_noise(48, 36, 8), "BMP"), dims=(48, 36),
        writeback="skipped:format_not_writable")
    add("unicode_name", "café ☕ 写真 ñ.jpg", _encode(_noise(48, 36, 9), "JPEG"), dims=(48, 36))
    add("spaces_in_name", "  two  spaces and leading .jpg", _encode(_noise(48, 36, 10), "JPEG"),
        dims=(48, 36))
    add("newline_in_name", "line\nbreak.jpg", _encode(_noise(48, 36, 11), "JPEG"),
        dims=(48, 36))
    add("option_like_name", "-overwrite_original_in_place.jpg",
        _encode(_noise(48, 36, 12), "JPEG"), dims=(48, 36))
    add("dir_named_x_jpg", "x.jpg/inside.png", _encode(_noise(48, 36, 13), "PNG"),
        dims=(48, 36))
    target = add("symlink_target", "target.jpg", _encode(_noise(48, 36, 14), "JPEG"),
                 dims=(48, 36))
    (root / "link_inside.jpg").symlink_to(target)
    add("symlink_inside_root", "link_inside.jpg", None, dims=(48, 36),
        writeback="skipped:symlink")
    add("modified_before_writeback", "edited_later.jpg", _encode(_noise(48, 36, 15), "JPEG"),
        dims=(48, 36), writeback="skipped:changed_since_catalogued",
        modify_before_writeback=True)

    # -- bad: exactly one errors row each --------------------------------------------
    whole_jpeg = _encode(_noise(300, 200, 1), "JPEG", quality=90)
    whole_png = _encode(_noise(300, 200, 2), "PNG")
    add("zero_bytes", "zero.jpg", b"", ERROR, stage="decode", error_type="empty_file")
    add("truncated_jpeg", "truncated.jpg", whole_jpeg[: len(whole_jpeg) // 2], ERROR,
        stage="decode", error_type="truncated")
    add("truncated_png", "truncated.png", whole_png[: len(whole_png) // 2], ERROR,
        stage="decode", error_type="truncated")
    add("text_named_jpg", "readme.jpg", b"this is a text file, not a photo\n" * 20, ERROR,
        stage="decode", error_type="not_an_image")
    add("decompression_bomb", "bomb.png", _bomb_png(), ERROR, stage="decode",
        error_type="too_many_pixels")
    add("corrupt_png_header", "bad_crc.png", _corrupt_png_header(), ERROR, stage="decode",
        error_type="corrupt_header")
    add("corrupt_png_data", "bad_idat.png", _corrupt_png_data(), ERROR, stage="decode",
        error_type="corrupt_data")
    add("too_large", "huge_file.png", whole_png[:64] + os.urandom(1_200_000), ERROR,
        stage="list", error_type="too_large")
    (root / "loop.jpg").symlink_to("loop.jpg")
    add("symlink_loop", "loop.jpg", None, ERROR, stage="list", error_type="symlink_loop")
    (root / "dangling.jpg").symlink_to(root / "gone.jpg")
    add("broken_symlink", "dangling.jpg", None, ERROR, stage="list",
        error_type="broken_symlink")
    (outside / "secret.jpg").write_bytes(_encode(_noise(20, 20, 16), "JPEG"))
    (root / "escape.jpg").symlink_to(outside / "secret.jpg")
    add("symlink_outside_root", "escape.jpg", None, ERROR, stage="list",
        error_type="symlink_outside_root")
    unreadable = add("unreadable", "no_access.jpg", _encode(_noise(20, 20, 17), "JPEG"),
                     ERROR, stage="read", error_type="permission_denied",
                     needs_non_root=True)
    os.chmod(unreadable, 0)
    locked = root / "locked"
    locked.mkdir()
    (locked / "hidden.jpg").write_bytes(_encode(_noise(20, 20, 18), "JPEG"))
    add("unlistable_folder", "locked", None, ERROR, stage="list",
        error_type="permission_denied", needs_non_root=True)
    os.chmod(locked, 0)
    add("deleted_after_listing", "vanishing.jpg", _encode(_noise(20, 20, 19), "JPEG"), ERROR,
        stage="read", error_type="not_found", delete_after_listing=True)
    (root / "notes.txt").write_text("not an image and not named like one: never listed\n")
    return cases


def modify_before_writeback(case: CorpusCase) -> bytes:
    """Rewrite the file (someone edits it after captioning); return its new bytes."""
    data = _encode(_noise(40, 30, 99), "JPEG")
    pathlib.Path(case.path).write_bytes(data)
    return data


def chown_tree(folder, user: str = "nobody") -> None:
    """Give ``folder`` and everything in it (links themselves too) to ``user``."""
    import pwd

    pw = pwd.getpwnam(user)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [*dirnames, *filenames]:
            os.lchown(os.path.join(dirpath, name), pw.pw_uid, pw.pw_gid)
    os.lchown(folder, pw.pw_uid, pw.pw_gid)


def as_nobody(cmd: list[str]) -> list[str]:
    """``cmd`` run as the unprivileged ``nobody`` user (the tests run as root)."""
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
