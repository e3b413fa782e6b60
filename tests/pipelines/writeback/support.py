"""Shared by the writeback tests: real photos with metadata, catalogs, runs, RAW files.

Catalogs are built with pyarrow from schemas.CATALOG_SCHEMA; the photos are the
bundled samples, converted with Pillow and given metadata with exiftool.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import struct
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageCms

from altbeam.pipelines.writeback import pipeline as writeback
from altbeam.pipelines.writeback.exiftool_session import ExifToolSession
from altbeam.pipelines.writeback.files import Annotator
from altbeam.pipelines.writeback.options import WritebackOptions
from altbeam.schemas import CATALOG_SCHEMA

CAPTION = "a dog runs on the beach\n-with = <b>&amp;</b> $HOME @x"
RICH_TAGS = ["-Make=Canon", "-Model=Canon EOS 5D", "-DateTimeOriginal=2020:01:02 03:04:05",
             "-ExposureTime=1/125", "-FNumber=2.8", "-GPSLatitude=48.85", "-GPSLatitudeRef=N",
             "-GPSLongitude=2.35", "-GPSLongitudeRef=E", "-XMP-dc:Creator=Ann",
             "-XMP-xmp:CreatorTool=Adobe Lightroom", "-XMP-photoshop:Headline=Paris",
             "-Copyright=(c) Ann"]


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def tags(path) -> dict:
    out = subprocess.run(["exiftool", "-j", "-G1", "-a", os.path.abspath(path)],
                         capture_output=True, check=True).stdout
    return json.loads(out)[0]


def exiftool_set(path, *assignments: str) -> None:
    """Metadata set by "a person" (any program but altbeam): exiftool -TAG=value ..."""
    subprocess.run(["exiftool", "-q", "-overwrite_original", *assignments,
                    os.path.abspath(path)], check=True)


def photo(sample_photos, folder, name, fmt="JPEG", rich=False, index=0):
    """A sample photo converted to ``fmt`` at folder/name; optionally with rich metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    src = sorted(sample_photos.glob("*.jpg"))[index]
    path = folder / name
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with Image.open(src) as im:
        im.save(path, fmt, **({"icc_profile": icc} if rich and fmt != "BMP" else {}))
    os.chmod(path, 0o644)
    if rich:
        extra = ["-IPTC:Keywords=paris", "-IPTC:By-line=Ann"] if fmt in ("JPEG", "TIFF") else []
        exiftool_set(path, *RICH_TAGS, *extra)
    return path


def image_facts(path) -> dict:
    """format, width, height as the caption job catalogs them (a RAW: from its preview)."""
    raw = os.path.splitext(str(path))[1].lower() in (".dng", ".cr2")
    preview = raw_preview(path) if raw else None
    with Image.open(io.BytesIO(preview) if preview else path) as im:
        fmt, (width, height) = im.format, im.size
    if preview:
        fmt = "RAW/" + tags(path)["File:FileType"]
    return {"format": fmt, "width": width, "height": height}


def catalog(tmp_path, paths, caption=CAPTION, score=-0.5, version="m1", name="cat"):
    """A one-shard catalog with a row per path (captions may be a dict path -> caption)."""
    cat = tmp_path / name
    (cat / "catalog").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in paths:
        text = caption.get(p) if isinstance(caption, dict) else caption
        rows.append({"uri": str(p), "sha256": sha(p), "size_bytes": os.path.getsize(p),
                     **image_facts(p), "caption": text, "score": score, "captions": [text],
                     "scores": [score], "model_version": version, "run_id": "cap1",
                     "processed_at": dt.datetime.now(dt.UTC)})
    shard = cat / "catalog" / f"run-cap{len(os.listdir(cat / 'catalog'))}-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA), shard)
    return cat


def run(cat, *flags):
    """`altbeam writeback CAT FLAGS`: (its result, its decisions by file name)."""
    result = writeback.run([str(cat), "--quiet", *flags])
    return result, {os.path.basename(d["uri"]): d for d in result["decisions"]}


def annotate(rows, **options):
    """The real Annotator on one batch (what one AnnotateBatch bundle does)."""
    with ExifToolSession() as session:
        annotator = Annotator(WritebackOptions(**options), session)
        try:
            return annotator.annotate(rows)
        finally:
            annotator.close()


def catalog_row(path, caption=CAPTION, version="m1", **extra) -> dict:
    return {"uri": str(path), "sha256": sha(path), "caption": caption, "score": -0.5,
            "model_version": version, **image_facts(path),
            "processed_at": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5), **extra}


# --- RAW files -------------------------------------------------------------------------

def raw_preview(path) -> bytes | None:
    """The RAW file's embedded JPEG preview as exiftool extracts it (None: none)."""
    return subprocess.run(["exiftool", "-b", "-PreviewImage", os.path.abspath(path)],
                          capture_output=True, check=True).stdout or None


def raw_with_preview(jpeg_path, path, family: str = "DNG", make: str = "Canon",
                     model: str = "EOS Test"):
    """A RAW container carrying a real photo as its preview, laid out as cameras write
    them; exiftool reads the photo back as ``PreviewImage``:

    * DNG: a TIFF with DNGVersion; IFD0 a small RGB thumbnail, one SubIFD the JPEG
      preview (NewSubfileType 1, Compression 7);
    * CR2: Canon's ``CR`` 2.0 TIFF header; IFD0 the JPEG preview (Compression 6), one
      SubIFD the thumbnail.

    exiftool cannot add a PreviewImage to a file without one, so the little-endian TIFF
    is written here by hand. No sensor data: LibRaw does not open these.
    """
    jpeg = open(jpeg_path, "rb").read()
    with Image.open(io.BytesIO(jpeg)) as im:
        size = im.size
        thumb = im.convert("RGB").resize((max(1, size[0] // 16), max(1, size[1] // 16)))
    pixels = thumb.tobytes()
    make_b, model_b = make.encode() + b"\0", model.encode() + b"\0"

    def long(v):
        return struct.pack("<I", v)

    def short(v):
        return struct.pack("<HH", v, 0)

    header = (b"II*\0" + long(16) + b"CR\x02\0" + bytes(4) if family == "CR2"
              else b"II*\0" + long(8))
    # (width, height, compression, photometric, data) of the preview and the thumbnail
    preview = (*size, 7 if family == "DNG" else 6, 6, "jpeg")
    small = (*thumb.size, 1, 2, "thumb")
    first, second = (small, preview) if family == "DNG" else (preview, small)
    n_first = 14 if family == "DNG" else 12
    sub_at = len(header) + 2 + 12 * n_first + 4
    blobs = {"bps": struct.pack("<HHH", 8, 8, 8), "make": make_b, "model": model_b,
             "camera": model_b, "thumb": pixels, "jpeg": jpeg}
    at, data, pos = {}, b"", sub_at + 2 + 12 * 9 + 4
    for key, blob in blobs.items():
        at[key] = pos + len(data)
        data += blob + b"\0" * (len(blob) & 1)      # TIFF values start on word boundaries

    def image(width, height, compression, photometric, blob):
        return [(254, 4, 1, long(1 if blob == "jpeg" or family == "DNG" else 0)),
                (256, 4, 1, long(width)), (257, 4, 1, long(height)),
                (258, 3, 3, long(at["bps"])), (259, 3, 1, short(compression)),
                (262, 3, 1, short(photometric)), (273, 4, 1, long(at[blob])),
                (277, 3, 1, short(3)), (279, 4, 1, long(len(blobs[blob])))]

    ifd0 = image(*first) + [(271, 2, len(make_b), long(at["make"])),
                            (272, 2, len(model_b), long(at["model"])),
                            (330, 4, 1, long(sub_at))]
    if family == "DNG":
        ifd0 += [(50706, 1, 4, bytes([1, 4, 0, 0])),                   # DNGVersion 1.4
                 (50708, 2, len(model_b), long(at["camera"]))]         # UniqueCameraModel
    assert len(ifd0) == n_first

    def ifd(entries):
        out = struct.pack("<H", len(entries))
        for tag, kind, count, value in sorted(entries):
            out += struct.pack("<HHI", tag, kind, count) + value
        return out + long(0)

    with open(path, "wb") as f:
        f.write(header + ifd(ifd0) + ifd(image(*second)) + data)
    os.chmod(path, 0o644)
    return path
