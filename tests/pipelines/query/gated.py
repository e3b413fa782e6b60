"""A catalog with caption statuses and keywords (schema v2) beside a version-1 shard.

Rows are made by the caption job's own `catalog_row` from real files (a tiny PNG and a
uniform grey JPEG for the statuses decided from pixels) and written by its own
`WriteTable` in a Beam pipeline; the version-1 shard is written by pyarrow with the
version-1 schema (CATALOG_SCHEMA without the v2 columns, legacy two-level lists, no
compression, as altbeam 0.1 wrote it).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import pathlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from altbeam.model.serving.caption_status import BLANK, CONTRADICTED, OK, TOO_SMALL, UNSURE
from altbeam.pipelines.catalog import layout
from altbeam.schemas.catalog import CATALOG_SCHEMA

V2_NAMES = ("caption_status", "objects", "keywords", "keyword_scores", "pixels_from")
V1_SCHEMA = pa.schema([f for f in CATALOG_SCHEMA if f.name not in V2_NAMES],
                      metadata={b"altbeam.table": b"catalog",
                                b"altbeam.schema_version": b"1"})

# file name -> (captions, caption_status, objects, keywords, keyword_scores)
GATED = {
    "dog.jpg": (["a dog running on the grass", "a dog on a lawn"], OK, ["dog", "grass"],
                ["dog", "grass"], [0.91, 0.62]),
    "snow.jpg": (["a dog sitting in the snow"], CONTRADICTED, ["dog", "snow"], ["bear"],
                 [0.83]),
    "bike.jpg": (["a man riding a bicycle"], UNSURE, ["man", "bicycle"], [], []),
    "bear.jpg": (["a brown bear walking in the woods"], OK, ["bear"], ["bear"], [0.77]),
    "tiny.png": ([], TOO_SMALL, [], [], []),
    "grey.jpg": ([], BLANK, [], [], []),
}
# Captioned before the caption gate (version-1 shard, run r0): no status, no keywords.
# dog.jpg's r0 row is older than its gated one, so the catalog view shows the gated row.
V1_CAPTIONS = {"dog.jpg": "an old caption of a dog", "old1.jpg": "a person on a bicycle",
               "old2.jpg": "a bear cub on a rock"}
T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def photos(folder: pathlib.Path, sample_photos: pathlib.Path) -> dict[str, pathlib.Path]:
    """Real image files for every row: copies of the samples, a 12x9 PNG, a grey JPEG."""
    folder.mkdir(parents=True, exist_ok=True)
    samples = sorted(sample_photos.glob("*.jpg"))
    out = {}
    for i, name in enumerate(sorted({*GATED, *V1_CAPTIONS})):
        path = folder / name
        if name == "tiny.png":
            Image.new("RGB", (12, 9), (200, 30, 30)).save(path)
        elif name == "grey.jpg":
            Image.new("RGB", (320, 240), (128, 128, 128)).save(path, quality=90)
        else:
            shutil.copy(samples[i % len(samples)], path)
        out[name] = path
    return out


def image_info(path: pathlib.Path):
    """The ImageInfo the caption job makes of a file (real bytes, real decode)."""
    from altbeam.pipelines.caption.decode import ImageInfo, decode_image

    data = path.read_bytes()
    return ImageInfo(uri=str(path), sha256=hashlib.sha256(data).hexdigest(),
                     size_bytes=len(data), mtime_us=int(path.stat().st_mtime * 1e6),
                     metadata=decode_image(data, 32, str(path)).metadata)


def gated_rows(files: dict[str, pathlib.Path], run_id: str = "r1") -> list[dict]:
    from altbeam.pipelines.catalog.beam_io import catalog_row

    rows = []
    for name, (captions, status, objects, keywords, kw_scores) in GATED.items():
        scores = [-0.4 - 0.3 * i for i in range(len(captions))]
        rows.append(catalog_row(image_info(files[name]), captions, scores, "m-2", run_id,
                                caption_status=status, objects=objects, keywords=keywords,
                                keyword_scores=kw_scores))
    return rows


def write_v2(catalog: pathlib.Path, rows: list[dict], run_id: str = "r1") -> None:
    """The rows through the caption job's WriteTable (real Beam, real Parquet writer)."""
    import apache_beam as beam

    from altbeam.pipelines.catalog.beam_io import WriteTable

    with beam.Pipeline("DirectRunner") as p:
        _ = p | beam.Create(rows) | WriteTable(str(catalog), "catalog", run_id)


def write_v1(catalog: pathlib.Path, files: dict[str, pathlib.Path]) -> pathlib.Path:
    """A version-1 shard (run r0) for V1_CAPTIONS."""
    rows = []
    for i, (name, caption) in enumerate(V1_CAPTIONS.items()):
        data = files[name].read_bytes()
        rows.append(dict(uri=str(files[name]), sha256=hashlib.sha256(data).hexdigest(),
                         size_bytes=len(data), format="JPEG", caption=caption, score=-0.8,
                         captions=[caption], scores=[-0.8], model_version="m-1",
                         run_id="r0", processed_at=T0 + dt.timedelta(seconds=i)))
    (catalog / "catalog").mkdir(parents=True, exist_ok=True)
    shard = pathlib.Path(layout.shard_prefix(str(catalog), "catalog", "r0")
                         + "-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(rows, schema=V1_SCHEMA), shard,
                   compression="none", use_compliant_nested_type=False)
    return shard


def mixed_catalog(root: pathlib.Path, sample_photos: pathlib.Path) -> pathlib.Path:
    """root/cat: a version-1 shard (run r0) and a gated version-2 run (r1)."""
    files = photos(root / "photos", sample_photos)
    catalog = root / "cat"
    write_v1(catalog, files)
    write_v2(catalog, gated_rows(files))
    return catalog
