"""Camera RAW containers for tests: real photos as their embedded previews.

Real camera RAW samples are scarce offline, so these are built: a minimal TIFF-based
container of the family (DNG: ``DNGVersion`` and a JPEG-compressed IFD0 preview; CR2:
Canon's ``CR\\x02`` header, whose IFD0 strip is the preview) holding a tiny
placeholder JPEG, then exiftool itself writes the real photo as its ``PreviewImage``
(``exiftool "-PreviewImage<=photo.jpg" file``), so exiftool reads the result as a
genuine DNG/CR2 with that preview. `linear_dng` is a DNG with no preview at all
whose sensor data LibRaw decodes.
"""
from __future__ import annotations

import io
import pathlib
import struct
import subprocess

import numpy as np
from PIL import Image

_FORMATS = {1: "B", 2: "s", 3: "H", 4: "I", 5: "II", 10: "ii"}
SHORT, LONG, ASCII, BYTE, RATIONAL, SRATIONAL = 3, 4, 2, 1, 5, 10


def _value_bytes(typ: int, values) -> tuple[bytes, int]:
    if typ == ASCII:
        data = values.encode() + b"\x00"
        return data, len(data)
    if typ in (RATIONAL, SRATIONAL):
        return b"".join(struct.pack("<" + _FORMATS[typ], *v) for v in values), len(values)
    return struct.pack("<" + _FORMATS[typ] * len(values), *values), len(values)


def tiff_container(ifds: list[list], blobs: dict[str, bytes], header_extra: bytes = b"") -> bytes:
    """A little-endian TIFF with a chain of IFDs. Each IFD is a list of (tag, type,
    values), where values may be ("blob", name): the offset of ``blobs[name]``."""
    head = b"II*\x00" + struct.pack("<I", 8 + len(header_extra)) + header_extra
    ifds = [sorted(entries, key=lambda e: e[0]) for entries in ifds]
    ifd_at = [len(head)]
    for entries in ifds[:-1]:
        ifd_at.append(ifd_at[-1] + 2 + 12 * len(entries) + 4)
    data_start = ifd_at[-1] + 2 + 12 * len(ifds[-1]) + 4
    encoded, out_of_line = [], bytearray()
    for entries in ifds:
        encoded.append([])
        for tag, typ, values in entries:
            if isinstance(values, tuple) and values[:1] == ("blob",):
                encoded[-1].append((tag, typ, 1, ("blob", values[1])))
                continue
            data, count = _value_bytes(typ, values)
            if len(data) > 4:
                encoded[-1].append((tag, typ, count, ("at", data_start + len(out_of_line))))
                out_of_line += data + b"\x00" * (len(data) % 2)
            else:
                encoded[-1].append((tag, typ, count, ("inline", data.ljust(4, b"\x00"))))
    blob_at, blob_data = {}, bytearray()
    for name, data in blobs.items():
        blob_at[name] = data_start + len(out_of_line) + len(blob_data)
        blob_data += data + b"\x00" * (len(data) % 2)
    out = bytearray(head)
    for i, entries in enumerate(encoded):
        out += struct.pack("<H", len(entries))
        for tag, typ, count, (kind, value) in entries:
            raw = (struct.pack("<I", blob_at[value]) if kind == "blob" else
                   struct.pack("<I", value) if kind == "at" else value)
            out += struct.pack("<HHI", tag, typ, count) + raw
        out += struct.pack("<I", ifd_at[i + 1] if i + 1 < len(ifd_at) else 0)
    return bytes(out + out_of_line + blob_data)


def jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=kw.pop("quality", 92), **kw)
    return buf.getvalue()


def _placeholder() -> bytes:
    return jpeg_bytes(Image.new("RGB", (8, 8), (128, 128, 128)))


def _camera_tags(make: str, model: str, orientation: int) -> list:
    return [(0x10F, ASCII, make), (0x110, ASCII, model), (0x112, SHORT, [orientation])]


def raw_with_preview(path: pathlib.Path, photo_jpeg: bytes, *, orientation: int = 1,
                     other_image: bytes | None = None, make: str = "Canon",
                     model: str = "Canon EOS 5D Mark IV") -> pathlib.Path:
    """A DNG or CR2 (by ``path``'s suffix) whose PreviewImage exiftool sets to
    ``photo_jpeg``; ``other_image`` adds a second embedded JPEG (exiftool's OtherImage)."""
    placeholder = _placeholder()
    family = path.suffix.lower()
    entries = _camera_tags(make, model, orientation) + [
        (0x100, LONG, [8]), (0x101, LONG, [8]), (0x102, SHORT, [8, 8, 8]),
        (0x103, SHORT, [7 if family == ".dng" else 6]), (0x106, SHORT, [6]),
        (0x111, LONG, ("blob", "preview")), (0x115, SHORT, [3]), (0x116, LONG, [8]),
        (0x117, LONG, [len(placeholder)])]
    blobs = {"preview": placeholder}
    if family == ".dng":
        entries += [(0xFE, LONG, [1]), (0xC612, BYTE, [1, 4, 0, 0]),
                    (0xC614, ASCII, f"{make} {model}")]
        header_extra = b""
    elif family == ".cr2":
        header_extra = b"CR\x02\x00" + struct.pack("<I", 0)
    else:
        raise ValueError(f"can build .dng or .cr2, not {family}")
    if other_image is not None:
        entries += [(0x201, LONG, ("blob", "other")), (0x202, LONG, [len(other_image)])]
        blobs["other"] = other_image
    # IFD1: a small RGB image, as cameras write (exiftool rewrites a CR2 only with
    # its IFD chain after IFD0).
    ifd1 = [(0x100, LONG, [2]), (0x101, LONG, [2]), (0x102, SHORT, [8, 8, 8]),
            (0x103, SHORT, [1]), (0x106, SHORT, [2]), (0x111, LONG, ("blob", "rgb")),
            (0x115, SHORT, [3]), (0x116, LONG, [2]), (0x117, LONG, [12])]
    blobs["rgb"] = bytes(12)
    path.write_bytes(tiff_container([entries, ifd1], blobs, header_extra))
    photo = path.with_name(path.name + ".preview.jpg")
    photo.write_bytes(photo_jpeg)
    try:
        subprocess.run(["exiftool", "-q", "-overwrite_original", f"-PreviewImage<={photo}",
                        "-DateTimeOriginal=2021:06:05 14:30:00", str(path)],
                       check=True, capture_output=True, timeout=60)
    finally:
        photo.unlink()
    return path


def linear_dng(path: pathlib.Path, rgb: np.ndarray, orientation: int = 1) -> pathlib.Path:
    """A DNG with no preview: ``rgb`` (uint8 H x W x 3) as 16-bit LinearRaw sensor data."""
    height, width, _ = rgb.shape
    pixels = (rgb.astype(np.uint16) * 257).astype("<u2").tobytes()
    identity = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]
    entries = _camera_tags("Altbeam", "Linear Test", orientation) + [
        (0xFE, LONG, [0]), (0x100, LONG, [width]), (0x101, LONG, [height]),
        (0x102, SHORT, [16, 16, 16]), (0x103, SHORT, [1]), (0x106, SHORT, [34892]),
        (0x111, LONG, ("blob", "pixels")), (0x115, SHORT, [3]), (0x116, LONG, [height]),
        (0x117, LONG, [len(pixels)]), (0x11C, SHORT, [1]), (0xC612, BYTE, [1, 4, 0, 0]),
        (0xC614, ASCII, "Altbeam Linear Test"), (0xC621, SRATIONAL, identity),
        (0xC628, RATIONAL, [(1, 1), (1, 1), (1, 1)])]
    path.write_bytes(tiff_container([entries], {"pixels": pixels}))
    return path
