"""Shared by the writeback tests: real photos with metadata, catalogs, runs.

Catalogs are built with pyarrow from schemas.CATALOG_SCHEMA; the photos are the
bundled samples, converted with Pillow and given metadata with exiftool.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
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


def catalog(tmp_path, paths, caption=CAPTION, score=-0.5, version="m1", name="cat",
            columns=None):
    """A one-shard catalog with a row per path (captions may be a dict path -> caption).

    ``columns``: path -> more columns of its row (the v2 ones: caption_status, keywords
    ...); a row with caption None has captions [] (as too_small / blank rows do)."""
    cat = tmp_path / name
    (cat / "catalog").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in paths:
        text = caption.get(p) if isinstance(caption, dict) else caption
        rows.append({"uri": str(p), "sha256": sha(p), "size_bytes": os.path.getsize(p),
                     **image_facts(p), "caption": text, "score": score,
                     "captions": [] if text is None else [text],
                     "scores": [] if text is None else [score], "model_version": version,
                     "run_id": "cap1", "processed_at": dt.datetime.now(dt.UTC),
                     **(columns or {}).get(p, {})})
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


# --- RAW files (built by tests/support/raw_files.py) -----------------------------------

def raw_preview(path) -> bytes | None:
    """The RAW file's embedded JPEG preview as exiftool extracts it (None: none)."""
    return subprocess.run(["exiftool", "-b", "-PreviewImage", os.path.abspath(path)],
                          capture_output=True, check=True).stdout or None
