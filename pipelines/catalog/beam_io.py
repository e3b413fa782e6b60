"""Writing and reading the catalog's tables with Beam: rows, Parquet shards, run summary.

File names and the run-id rule are in :mod:`altbeam.pipelines.catalog.layout`; the
incremental index the caption job reads back is in
:mod:`altbeam.pipelines.caption.incremental`.
"""
from __future__ import annotations

import datetime as dt
import json
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from altbeam.model.serving.caption_status import DEFAULT_THRESHOLDS, NO_CAPTION
from altbeam.pipelines.caption.decode import ImageInfo
from altbeam.pipelines.caption.gate import gate_columns, held_back_columns
from altbeam.pipelines.catalog.layout import (
    SHARD_SUFFIX,
    finalized_shards,
    run_summary_path,
    shard_prefix,
)
from altbeam.pipelines.runtime.progress import Tally
from altbeam.schemas import TABLES

UTC = dt.UTC
V2_COLUMNS = ("caption_status", "objects", "keywords", "keyword_scores", "pixels_from")
# zstd: a third of the uncompressed size on caption text at about the cost of snappy to
# read; compliant nested types write lists as Parquet's standard LIST (element), which
# BigQuery's list inference, Spark and pandas read as plain arrays.
PARQUET_CODEC = "zstd"


def _from_us(us: int | None) -> dt.datetime | None:
    return None if us is None else dt.datetime.fromtimestamp(us / 1e6, tz=UTC)


def to_us(value) -> int | None:
    """A timestamp (aware or UTC-naive datetime, or microseconds) as microseconds."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(value)


def catalog_row(info: ImageInfo, captions: list[str], scores: list[float],
                model_version: str, run_id: str, **v2) -> dict:
    """One catalog row, exactly the columns of CATALOG_SCHEMA.

    ``v2`` holds the version-2 columns a caller knows (caption_status, objects,
    keywords, keyword_scores, pixels_from); the rest are null. pixels_from defaults to
    the ImageInfo's own ("file", "frame 0", "PreviewImage", "libraw" ...)."""
    md = info.metadata
    unknown = set(v2) - set(V2_COLUMNS)
    if unknown:
        raise TypeError(f"not catalog columns: {sorted(unknown)}")
    v2.setdefault("pixels_from", getattr(info, "pixels_from", None))
    return {
        "uri": info.uri,
        "sha256": info.sha256,
        "size_bytes": info.size_bytes,
        "mtime": _from_us(info.mtime_us),
        "width": md.width,
        "height": md.height,
        "format": md.format,
        "caption": captions[0] if captions else None,
        "score": scores[0] if scores else None,
        "captions": list(captions),
        "scores": [float(s) for s in scores],
        "model_version": model_version,
        "run_id": run_id,
        "processed_at": dt.datetime.now(UTC),
        "capture_time": md.capture_time,
        "camera_make": md.camera_make,
        "camera_model": md.camera_model,
        "existing_alt_text": md.existing_alt_text,
        "existing_description": md.existing_description,
        **{name: v2.get(name) for name in V2_COLUMNS},
    }


def error_row(err, run_id: str) -> dict:
    """A StageError (or sources.ListError, stage "list") as an ERRORS_SCHEMA row.

    uri and message are redacted: an input URI or a library's error text may carry
    a credential (signed URL, userinfo, bearer token); see pipelines/runtime/redact.py."""
    from altbeam.pipelines.runtime.redact import redact

    return {"uri": redact(err.uri), "stage": getattr(err, "stage", "list"),
            "error_type": err.error_type, "message": redact(err.message), "run_id": run_id,
            "occurred_at": dt.datetime.now(UTC)}


class ToCatalogRows(beam.DoFn):
    """(ImageInfo, PredictionResult) -> catalog row dict, judged by the caption gate;
    (ImageInfo, status) for an image held back before captioning (too_small / blank) ->
    its row without a caption (pipelines/caption/gate.py).

    ``judged``: the concepts the model's head can judge (ModelInfo.judged);
    ``thresholds``: the model's gate thresholds (ModelInfo.thresholds; None: defaults)."""

    def __init__(self, model_version: str, run_id: str, progress_dir: str | None = None,
                 judged: frozenset[str] = frozenset(), thresholds=None):
        self._version = model_version
        self._run_id = run_id
        self._progress_dir = progress_dir
        self._judged = judged
        self._thresholds = thresholds or DEFAULT_THRESHOLDS

    def setup(self):
        self._tally = Tally(self._progress_dir)

    def process(self, keyed):
        info, result = keyed
        self._tally.add("done")
        if isinstance(result, str):
            yield catalog_row(info, [], [], self._version, self._run_id,
                              **held_back_columns(result))
            return
        self._tally.add("captioned")
        inference = result.inference
        yield catalog_row(info, inference["captions"], inference["scores"],
                          self._version, self._run_id,
                          **gate_columns(inference, self._judged, self._thresholds))

    def finish_bundle(self):
        self._tally.flush()


class WriteTable(beam.PTransform):
    """Rows -> ``CATALOG/<table>/run-<run_id>-SSSSS-of-NNNNN.parquet`` (finalized names)."""

    def __init__(self, catalog: str, table: str, run_id: str, num_shards: int = 0):
        super().__init__()
        self._prefix = shard_prefix(catalog, table, run_id)      # checks the run id
        self._schema = TABLES[table]
        self._num_shards = num_shards

    def expand(self, rows):
        return rows | "WriteToParquet" >> beam.io.WriteToParquet(
            self._prefix, schema=self._schema, file_name_suffix=SHARD_SUFFIX,
            num_shards=self._num_shards, codec=PARQUET_CODEC, use_compliant_nested_type=True)


NOT_IMAGE_REASONS = ("not_an_image", "xmp_sidecar")
NO_EXTENSION = "(none)"


def skipped_summary(skipped: list) -> dict:
    """The run summary's account of the listed files that were not taken (sources.
    SkippedFile): counts by extension of those that are not images and of those outside
    --extensions, with totals, and the files themselves (``skipped_files``: uri,
    extension, reason; the uri redacted like the errors table's), which the query
    view ``skipped`` lists."""
    from altbeam.pipelines.runtime.redact import redact

    out: dict = {}
    for key, wanted in (("skipped_not_images", NOT_IMAGE_REASONS),
                        ("skipped_not_in_extensions", ("not_in_extensions",))):
        counts: dict[str, int] = {}
        for item in skipped:
            if item.reason in wanted:
                label = item.extension or NO_EXTENSION
                counts[label] = counts.get(label, 0) + 1
        out[key] = dict(sorted(counts.items()))
        out[key + "_total"] = sum(counts.values())
    out["skipped_files"] = sorted(
        ({"uri": redact(i.uri), "extension": i.extension, "reason": i.reason}
         for i in skipped), key=lambda f: f["uri"])
    return out


def write_run_summary(_, *, catalog: str, run_id: str, started_at: float, config: dict,
                      statuses: dict, unchanged: int, failed: int,
                      catalog_files: list, error_files: list,
                      skipped: list | None = None) -> str:
    """Write CATALOG/runs/<run_id>.json once both tables are finalized; return its path.

    ``statuses``: catalog rows of this run per caption_status (gate.StatusCounts);
    ``captioned`` counts the captioned ones, ``no_caption`` those held back as
    too_small / blank. ``skipped``: the listing's SkippedFiles (see `skipped_summary`)."""
    finished = time.time()
    seconds = max(finished - started_at, 1e-9)
    no_caption = sum(statuses.get(s, 0) for s in NO_CAPTION)
    captioned = sum(statuses.values()) - no_caption
    summary = {
        "run_id": run_id,
        "started_at": dt.datetime.fromtimestamp(started_at, UTC).isoformat(),
        "finished_at": dt.datetime.fromtimestamp(finished, UTC).isoformat(),
        "seconds": round(seconds, 3),
        "captioned": captioned,
        "no_caption": no_caption,
        "statuses": dict(statuses),
        "skipped_unchanged": unchanged,
        "failed": failed,
        "images_per_second": round((captioned + no_caption) / seconds, 3),
        "catalog_shards": sorted(str(f) for f in catalog_files),
        "error_shards": sorted(str(f) for f in error_files),
        **skipped_summary(skipped or []),
        **config,
    }
    path = run_summary_path(catalog, run_id)
    with FileSystems.create(path) as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True).encode("utf-8"))
    return path


def read_run_summary(catalog: str, run_id: str) -> dict:
    with FileSystems.open(run_summary_path(catalog, run_id)) as f:
        return json.loads(f.read().decode("utf-8"))


def read_table_rows(catalog: str, table: str) -> list[dict]:
    """All rows of one table from its finalized shards (small tables; CLI and tests)."""
    import pyarrow.parquet as pq

    rows: list[dict] = []
    for path in finalized_shards(catalog, table):
        with FileSystems.open(path) as f:
            rows.extend(pq.read_table(f).to_pylist())
    return rows
