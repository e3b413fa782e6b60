"""`altbeam writeback CATALOG`: the catalogued captions into the photos as alt text.

Pipeline (every step named; rules and guarantees in docs/writeback.md)::

    ReadLatestCatalog (latest row per uri from CATALOG/catalog/run-*.parquet)
      -> WriteAltText: CheckSidecarNames -> Reshuffle -> Batch
                       -> Annotate (one exiftool -stay_open process per DoFn instance)
      -> WriteWritebackLog (CATALOG/writeback/run-<run_id>-*.parquet)

``WriteAltText`` is reusable: its input is catalog rows (dicts with the columns of
``schemas.CATALOG_SCHEMA``), its output the WRITEBACK_SCHEMA decision rows; the
caption job can put it after its catalog rows.

Exit status: 0 when the run completed and no file failed; 1 when a file failed
(each failure has a row with its reason; the file was restored) or the pipeline
failed; 2 for bad usage.
"""
from __future__ import annotations

import argparse
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from altbeam.pipelines.catalog.beam_io import WriteTable, read_table_rows
from altbeam.pipelines.catalog.layout import (
    check_run_id,
    finalized_shards,
    latest_row,
    shard_glob,
)
from altbeam.pipelines.runtime.flags import parse_job_args
from altbeam.pipelines.runtime.runner import new_pipeline, new_run_id, run_pipeline
from altbeam.pipelines.writeback.exiftool_session import ExifToolSession
from altbeam.pipelines.writeback.files import Annotator
from altbeam.pipelines.writeback.items import decision_row
from altbeam.pipelines.writeback.options import (
    WritebackOptions,
    add_writeback_flags,
    writeback_options,
)
from altbeam.pipelines.writeback.rules import FIELDS
from altbeam.pipelines.writeback.sidecars import shared_sidecar_key, split_shared_sidecars
from altbeam.schemas import table_dir


class ReadLatestCatalog(beam.PTransform):
    """CATALOG -> its latest catalog row per uri (finalized shards only; see layout.LATEST_BY)."""

    def __init__(self, catalog: str):
        super().__init__()
        self._catalog = catalog

    def expand(self, pbegin):
        if not finalized_shards(self._catalog):
            return pbegin | "EmptyCatalog" >> beam.Create([])
        return (pbegin
                | "ReadShards" >> beam.io.ReadFromParquet(shard_glob(self._catalog, "catalog"))
                | "KeyByUri" >> beam.Map(lambda r: (r["uri"], r))
                | "LatestPerUri" >> beam.CombinePerKey(latest_row)
                | "DropKey" >> beam.Values())


def own_write_chain(sha256: str, writes: list[tuple[str, str, str]]) -> list[str]:
    """The hashes of the versions altbeam's writeback produced, one write after another,
    from the file whose hash is ``sha256``; ``writes``: the uri's logged
    (sha256_before, sha256_after, run_id). Stops at a cycle (bounded, whatever the log)."""
    after = {before: sha_after for before, sha_after, _ in writes}
    chain, sha = [], sha256
    while sha in after and after[sha] not in chain and len(chain) < 1000:
        sha = after[sha]
        chain.append(sha)
    return chain


def _follow_writes(keyed):
    """(uri, {"rows": [row], "writes": [(before, after, run_id)]}) -> the row with the
    hashes of the versions altbeam itself produced from the catalogued file (so a re-run
    still recognises a file it wrote as "the catalogued one"), and the runs that logged
    a write of it (a write by any other run lost its log: see unlogged_own_write)."""
    _, joined = keyed
    writes = list(joined["writes"])
    runs = sorted({run_id for *_, run_id in writes})
    for row in joined["rows"]:
        yield {**row, "_produced_sha256": own_write_chain(row["sha256"], writes),
               "_logged_write_runs": runs}


class AttachOwnWrites(beam.PTransform):
    """Catalog rows -> the same rows plus ``_produced_sha256`` from CATALOG/writeback."""

    def __init__(self, catalog: str):
        super().__init__()
        self._catalog = catalog

    def expand(self, rows):
        if not finalized_shards(self._catalog, "writeback"):
            return rows
        writes = (rows.pipeline
                  | "ReadWritebackLog" >> beam.io.ReadFromParquet(
                      shard_glob(self._catalog, "writeback"),
                      columns=["uri", "action", "sha256_before", "sha256_after",
                               "run_id"])
                  | "OnlyWritten" >> beam.Filter(
                      lambda r: r["action"] == "written" and r["sha256_after"]
                      and r["sha256_before"] and r["sha256_before"] != r["sha256_after"])
                  | "KeyWrites" >> beam.Map(
                      lambda r: (r["uri"], (r["sha256_before"], r["sha256_after"],
                                            r["run_id"]))))
        keyed = rows | "KeyRows" >> beam.Map(lambda r: (r["uri"], r))
        return ({"rows": keyed, "writes": writes}
                | "JoinWrites" >> beam.CoGroupByKey()
                | "FollowWrites" >> beam.FlatMap(_follow_writes))


def _split_collisions(keyed, options: WritebackOptions):
    """(sidecar name, rows): several images sharing one stem-named sidecar are all skipped."""
    name, rows = keyed
    rows, colliding = split_shared_sidecars(list(rows), options)
    yield from rows
    others, run_id = sorted(r["uri"] for r in colliding), options.run_id
    for row in colliding:
        yield beam.pvalue.TaggedOutput("skipped", decision_row(
            row, "skipped", f"sidecar_name_collision: {name} would be the sidecar of "
            f"{', '.join(others)}; use --sidecar-naming ext ({row['uri']}.xmp)", run_id))


class AnnotateBatch(beam.DoFn):
    """A batch of catalog rows -> decision rows; one exiftool process per DoFn instance."""

    def __init__(self, options: WritebackOptions):
        self._options = options

    def setup(self):
        self._session = ExifToolSession().start()
        self._annotator = Annotator(self._options, self._session)

    def process(self, rows):
        yield from self._annotator.annotate(list(rows))

    def teardown(self):
        if getattr(self, "_annotator", None):
            self._annotator.close()
        if getattr(self, "_session", None):
            self._session.close()


class WriteAltText(beam.PTransform):
    """Catalog rows -> WRITEBACK_SCHEMA decision rows, writing alt text into the files."""

    def __init__(self, options: WritebackOptions, batch_size: int = 16):
        super().__init__()
        self._options = options
        self._batch_size = batch_size

    def expand(self, rows):
        opts = self._options
        checked = (rows   # RAW files and stem-named sidecars: one stem, one sidecar
                   | "KeyBySidecar" >> beam.Map(lambda r: (shared_sidecar_key(r, opts), r))
                   | "GroupBySidecar" >> beam.GroupByKey()
                   | "CheckSidecarNames" >> beam.FlatMap(
                       _split_collisions, opts).with_outputs("skipped", main="rows"))
        decisions = (checked.rows
                     | "Reshuffle" >> beam.Reshuffle()
                     | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size,
                                                     max_batch_size=self._batch_size)
                     | "Annotate" >> beam.ParDo(AnnotateBatch(opts)))
        return (decisions, checked.skipped) | "AllDecisions" >> beam.Flatten()


class WriteWritebackLog(beam.PTransform):
    """Decision rows -> ``CATALOG/writeback/run-<run_id>-SSSSS-of-NNNNN.parquet``."""

    def __init__(self, catalog: str, run_id: str):
        super().__init__()
        self._table = WriteTable(catalog, "writeback", run_id)

    def expand(self, decisions):
        return decisions | "WriteTable" >> self._table


def build(p: beam.Pipeline, catalog: str, options: WritebackOptions,
          batch_size: int = 16) -> dict:
    """Add the writeback job to ``p``; return {"decisions", "log_files"}."""
    rows = (p
            | "ReadLatestCatalog" >> ReadLatestCatalog(catalog)
            | "AttachOwnWrites" >> AttachOwnWrites(catalog))
    decisions = rows | "WriteAltText" >> WriteAltText(options, batch_size)
    log_files = decisions | "WriteWritebackLog" >> WriteWritebackLog(catalog, options.run_id)
    return {"decisions": decisions, "log_files": log_files}


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="altbeam writeback", allow_abbrev=False,
        description="Write each catalogued caption into its image as IPTC alt text "
                    "(XMP-iptcCore:AltTextAccessibility), never over a person's words; "
                    "by default only captions the caption gate marked ok. "
                    "Apache Beam/Dataflow pipeline options may be given anywhere; any "
                    "other unknown flag is refused.")
    ap.add_argument("catalog", help="catalog folder (local or gs://)")
    add_writeback_flags(ap, dry_run=True)
    ap.add_argument("--batch-size", type=int, default=16, help="files per exiftool call")
    ap.add_argument("--run-id", default="", help="run identifier (default: time + random)")
    ap.add_argument("--quiet", action="store_true", help="print only the summary")
    return ap


def run(argv: list[str] | None = None) -> dict:
    """Run the writeback; return {"run_id", "counts", "decisions", "exit_code"}."""
    started_at = time.time()   # exiftool temp files older than this are dead runs' leftovers
    ap = make_parser()
    args, beam_argv = parse_job_args(ap, list(sys.argv[1:] if argv is None else argv))
    if args.batch_size < 1:
        ap.error("--batch-size must be at least 1")
    if args.run_id:   # checked again where it names the log's shards (shard_prefix)
        check_run_id(args.run_id)
    options = writeback_options(args, args.run_id or new_run_id(), started_at)
    catalog = args.catalog.rstrip("/") or "/"
    if not finalized_shards(catalog):
        print(f"altbeam writeback: {catalog}: no catalog shards in "
              f"{table_dir(catalog, 'catalog')}/", file=sys.stderr)
        return {"run_id": options.run_id, "counts": {}, "decisions": [], "exit_code": 1}
    start = time.monotonic()
    p = new_pipeline(PipelineOptions(flags=beam_argv))   # flags=[]: never re-parse sys.argv
    build(p, catalog, options, args.batch_size)
    run_pipeline(p)
    decisions = [r for r in read_table_rows(catalog, "writeback")
                 if r["run_id"] == options.run_id]
    counts: dict[str, int] = {}
    for d in decisions:
        counts[d["action"]] = counts.get(d["action"], 0) + 1
    if not args.quiet:
        for d in sorted(decisions, key=lambda d: d["uri"]):
            print(f"{d['action']:<11} {d['reason']}", file=sys.stderr)
    print(f"altbeam writeback: run {options.run_id} in {time.monotonic() - start:.1f}s: "
          + ", ".join(f"{k} {counts.get(k, 0)}" for k in
                      ("written", "would_write", "skipped", "failed"))
          + f"; log in {table_dir(catalog, 'writeback')}/", file=sys.stderr)
    return {"run_id": options.run_id, "counts": counts, "decisions": decisions,
            "exit_code": 1 if counts.get("failed") else 0}


def main(argv: list[str] | None = None) -> int:
    """CLI entry (`altbeam writeback`): 0 done, 1 a file failed / no catalog, 2 usage."""
    try:
        return run(argv)["exit_code"]
    except ValueError as e:
        print(f"altbeam writeback: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["FIELDS", "ReadLatestCatalog", "WriteAltText", "WriteWritebackLog",
           "WritebackOptions", "build", "main", "run"]
