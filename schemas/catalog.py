"""The catalog's tables, versioned.

A catalog is a directory (local or ``gs://``) holding one folder per table::

    CATALOG/catalog/run-<run_id>-00000-of-00003.parquet   one row per image per run
    CATALOG/errors/run-<run_id>-00000-of-00001.parquet    one row per failed input
    CATALOG/writeback/run-<run_id>-....parquet            one row per writeback decision
    CATALOG/runs/<run_id>.json                            run summary (counts, timing)

Every run appends new shards and never rewrites old ones, so an interrupted run
leaves earlier shards intact; readers take the latest row per ``uri``.

Field by field (catalog):

=====================  ==========================  ===========================================
column                 type                        meaning
=====================  ==========================  ===========================================
uri                    string                      where the image was read (path or gs://)
sha256                 string                      hex SHA-256 of the file's bytes as read
size_bytes             int64                       file size in bytes
mtime                  timestamp[us, UTC]          file modification time (null if unknown)
width, height          int32                       pixel size after EXIF orientation
format                 string                      Pillow format name (JPEG, PNG, ...)
caption                string                      the model's best caption
score                  float32                     its length-normalised log-probability
captions               list<string>                all K beams, best first
scores                 list<float32>               their scores, same order
model_version          string                      ``model_card.json`` version of the model
run_id                 string                      the run that wrote the row
processed_at           timestamp[us, UTC]          when the row was produced
capture_time           timestamp[us]               EXIF DateTimeOriginal (camera local time)
camera_make            string                      EXIF Make
camera_model           string                      EXIF Model
existing_alt_text      string                      alt text already in the file (XMP/IPTC)
existing_description   string                      description already in the file
caption_status         string                      ok | unsure | contradicted | too_small |
                                                   blank (v2; null in v1 shards)
objects                list<string>                object words the caption names (v2)
keywords               list<string>                concepts the CNN is confident of (v2)
keyword_scores         list<float32>               their scores, same order (v2)
pixels_from            string                      where the pixels came from: ``file``, or
                                                   e.g. ``PreviewImage`` of a RAW file (v2)
=====================  ==========================  ===========================================

Schema evolution: a new version only *appends* nullable columns (never renames,
retypes or drops one), so shards of every version read together — DuckDB with
``union_by_name``, pyarrow.dataset with the newest schema, BigQuery with the newest
shard's schema — and the older shards' new columns read as null. Each shard's footer
names its table and version (``altbeam.table``, ``altbeam.schema_version``).
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "2"

_UTC = pa.timestamp("us", tz="UTC")


def _with_version(schema: pa.Schema, table: str) -> pa.Schema:
    return schema.with_metadata({b"altbeam.table": table.encode(),
                                 b"altbeam.schema_version": SCHEMA_VERSION.encode()})


CATALOG_SCHEMA = _with_version(pa.schema([
    pa.field("uri", pa.string(), nullable=False),
    pa.field("sha256", pa.string(), nullable=False),
    pa.field("size_bytes", pa.int64(), nullable=False),
    pa.field("mtime", _UTC),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("format", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("captions", pa.list_(pa.string())),
    pa.field("scores", pa.list_(pa.float32())),
    pa.field("model_version", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("processed_at", _UTC, nullable=False),
    pa.field("capture_time", pa.timestamp("us")),
    pa.field("camera_make", pa.string()),
    pa.field("camera_model", pa.string()),
    pa.field("existing_alt_text", pa.string()),
    pa.field("existing_description", pa.string()),
    # v2 (grounded captions, real archives): appended, nullable.
    pa.field("caption_status", pa.string()),
    pa.field("objects", pa.list_(pa.string())),
    pa.field("keywords", pa.list_(pa.string())),
    pa.field("keyword_scores", pa.list_(pa.float32())),
    pa.field("pixels_from", pa.string()),
]), "catalog")

# stage: list | read | decode | inference | writeback ; error_type: exception class or a
# short code such as "too_large"; message: human-readable, names the file and the reason.
ERRORS_SCHEMA = _with_version(pa.schema([
    pa.field("uri", pa.string(), nullable=False),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("error_type", pa.string(), nullable=False),
    pa.field("message", pa.string(), nullable=False),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("occurred_at", _UTC, nullable=False),
]), "errors")

# action: written | skipped | failed | would_write (dry run)
WRITEBACK_SCHEMA = _with_version(pa.schema([
    pa.field("uri", pa.string(), nullable=False),
    pa.field("action", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("fields", pa.list_(pa.string())),
    pa.field("target", pa.string()),          # the file written: the image or its sidecar
    pa.field("caption", pa.string()),
    pa.field("score", pa.float32()),
    pa.field("model_version", pa.string()),
    pa.field("sha256_before", pa.string()),
    pa.field("sha256_after", pa.string()),
    pa.field("run_id", pa.string(), nullable=False),
    pa.field("at", _UTC, nullable=False),
    # v2 (real archives): appended, nullable. The target's modification time before and
    # after the decision (null for gs:// objects, and after for anything not written).
    pa.field("mtime_before", _UTC),
    pa.field("mtime_after", _UTC),
]), "writeback")

TABLES = {"catalog": CATALOG_SCHEMA, "errors": ERRORS_SCHEMA, "writeback": WRITEBACK_SCHEMA}


def table_dir(catalog: str, table: str) -> str:
    """Folder of one table inside a catalog (works for local paths and gs:// URIs)."""
    if table not in TABLES and table != "runs":
        raise ValueError(f"unknown catalog table {table!r}; expected one of {sorted(TABLES)}")
    return catalog.rstrip("/") + "/" + table


def table_prefix(catalog: str, table: str, run_id: str) -> str:
    """Shard prefix for one run's output of one table (``WriteToParquet`` adds the suffix)."""
    return f"{table_dir(catalog, table)}/run-{run_id}"
