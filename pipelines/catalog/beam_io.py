"""Reading and writing the catalog: rows, the incremental index, Parquet shards, run summary.

Incremental rule (also in docs/pipeline.md). For each listed file, the catalog's
latest row for the same ``uri`` (latest ``processed_at``) decides:

* no row: the image is new and is captioned;
* same ``size_bytes`` and same ``mtime`` (to the microsecond): unchanged, skipped
  without reading the file;
* size or mtime differ: the file is read and hashed; if its SHA-256 equals the
  catalogued ``sha256`` the content is unchanged (only touched/copied) and it is
  skipped, otherwise it is captioned again and the new row supersedes the old one.

``--force`` captions everything. Only finalized shards are read
(``CATALOG/catalog/run-*.parquet``): Beam writes into a ``beam-temp-*`` subfolder and
renames into place on finalize, so the partial output of a killed run is never in the
index and its images are simply captioned by the next run; a shard that was renamed
before the kill is complete, and its images are skipped, so no image gets two rows
from the pair of runs.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from altbeam.pipelines.caption.decode import ImageInfo
from altbeam.pipelines.cli import check_run_id  # the rule; cli imports nothing heavy
from altbeam.pipelines.runtime.progress import Tally
from altbeam.schemas import CATALOG_SCHEMA, ERRORS_SCHEMA, table_dir, table_prefix

UTC = dt.UTC


def _from_us(us: int | None) -> dt.datetime | None:
    return None if us is None else dt.datetime.fromtimestamp(us / 1e6, tz=UTC)


def _to_us(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        delta = value - dt.datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return int(value)


def catalog_row(info: ImageInfo, captions: list[str], scores: list[float],
                model_version: str, run_id: str) -> dict:
    """One catalog row, exactly the columns of CATALOG_SCHEMA."""
    md = info.metadata
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
    """(ImageInfo, PredictionResult) -> catalog row dict."""

    def __init__(self, model_version: str, run_id: str, progress_dir: str | None = None):
        self._version = model_version
        self._run_id = run_id
        self._progress_dir = progress_dir

    def setup(self):
        self._tally = Tally(self._progress_dir)

    def process(self, keyed):
        info, result = keyed
        self._tally.add("captioned")
        self._tally.add("done")
        yield catalog_row(info, result.inference["captions"], result.inference["scores"],
                          self._version, self._run_id)

    def finish_bundle(self):
        self._tally.flush()


def finalized_shards(catalog: str, table: str = "catalog") -> list[str]:
    """Finalized Parquet shards of a table (not Beam's beam-temp-* leftovers)."""
    pattern = table_dir(catalog, table) + "/run-*.parquet"
    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing catalog folder simply has no shards
        return []


def _latest(rows: Iterable[tuple]) -> tuple:
    return max(rows, key=lambda r: r[0])


class ReadCatalogIndex(beam.PTransform):
    """Existing catalog -> (uri, (size_bytes, mtime_us, sha256)) for the latest row per uri."""

    def __init__(self, catalog: str):
        super().__init__()
        self._catalog = catalog

    def expand(self, pbegin):
        shards = finalized_shards(self._catalog)
        if not shards:
            return pbegin | "NoCatalogYet" >> beam.Create([])
        rows = pbegin | "ReadShards" >> beam.io.ReadFromParquet(
            table_dir(self._catalog, "catalog") + "/run-*.parquet",
            columns=["uri", "size_bytes", "mtime", "sha256", "processed_at"])
        return (rows
                | "ToIndexEntry" >> beam.Map(lambda r: (r["uri"], (
                    _to_us(r["processed_at"]), r["size_bytes"], _to_us(r["mtime"]),
                    r["sha256"])))
                | "LatestPerUri" >> beam.CombinePerKey(_latest)
                | "DropProcessedAt" >> beam.MapTuple(lambda uri, v: (uri, v[1:])))


class SkipUnchanged(beam.DoFn):
    """FileRecord -> FileRecord to process (main) or uri ("unchanged")."""

    def __init__(self, progress_dir: str | None = None):
        self._progress_dir = progress_dir

    def setup(self):
        self._tally = Tally(self._progress_dir)

    def process(self, record, index):
        known = index.get(record.uri)
        if known is None:
            yield record
            return
        size, mtime_us, sha, *versions = known   # versions: see caption.AddOwnWrites
        if size == record.size_bytes and mtime_us == record.mtime_us:
            self._tally.add("unchanged")
            yield beam.pvalue.TaggedOutput("unchanged", record.uri)
        else:  # changed size/mtime: the decode step confirms with the content hash
            yield type(record)(record.uri, record.size_bytes, record.mtime_us, sha,
                               tuple(versions[0]) if versions else ())

    def finish_bundle(self):
        self._tally.flush()


class WriteTable(beam.PTransform):
    """Rows -> ``CATALOG/<table>/run-<run_id>-SSSSS-of-NNNNN.parquet`` (finalized names)."""

    def __init__(self, catalog: str, table: str, run_id: str, num_shards: int = 0):
        super().__init__()
        self._prefix = shard_prefix(catalog, table, run_id)
        self._schema = {"catalog": CATALOG_SCHEMA, "errors": ERRORS_SCHEMA}[table]
        self._num_shards = num_shards

    def expand(self, rows):
        return rows | "WriteToParquet" >> beam.io.WriteToParquet(
            self._prefix, schema=self._schema, file_name_suffix=".parquet",
            num_shards=self._num_shards)


def checked_run_id(run_id: str) -> str:
    """``run_id`` if it is safe inside a file name, else ValueError naming the rule.

    Every file a run writes into the catalog is named here (`shard_prefix`,
    `run_summary_path`), so this is the one place that a run id from the CLI, the
    Python API (CaptionConfig, WritebackOptions) or a caller's own pipeline always
    passes: "../x" can never name a file outside the catalog.
    """
    return check_run_id(run_id)


def shard_prefix(catalog: str, table: str, run_id: str) -> str:
    """``CATALOG/<table>/run-<run_id>``, the shard prefix of one run's output of a table."""
    return table_prefix(catalog, table, checked_run_id(run_id))


def run_summary_path(catalog: str, run_id: str) -> str:
    return f"{table_dir(catalog, 'runs')}/{checked_run_id(run_id)}.json"


def write_run_summary(_, *, catalog: str, run_id: str, started_at: float, config: dict,
                      captioned: int, unchanged: int, failed: int,
                      catalog_files: list, error_files: list) -> str:
    """Write CATALOG/runs/<run_id>.json once both tables are finalized; return its path."""
    finished = time.time()
    seconds = max(finished - started_at, 1e-9)
    summary = {
        "run_id": run_id,
        "started_at": dt.datetime.fromtimestamp(started_at, UTC).isoformat(),
        "finished_at": dt.datetime.fromtimestamp(finished, UTC).isoformat(),
        "seconds": round(seconds, 3),
        "captioned": captioned,
        "skipped_unchanged": unchanged,
        "failed": failed,
        "images_per_second": round(captioned / seconds, 3),
        "catalog_shards": sorted(str(f) for f in catalog_files),
        "error_shards": sorted(str(f) for f in error_files),
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
