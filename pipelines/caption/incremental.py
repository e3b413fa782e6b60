"""The caption job's incremental rule: which listed files need captioning again.

Rule (also in docs/pipeline.md). For each listed file, the catalog's latest row for
the same ``uri`` (:data:`altbeam.pipelines.catalog.layout.LATEST_BY`) decides
(:func:`listing_decision`):

* no row: the image is ``new`` and is captioned;
* same ``size_bytes`` and same ``mtime`` (to the microsecond): ``unchanged``, skipped
  without reading the file;
* size or mtime differ: ``changed``; the file is read and hashed, and if its SHA-256
  equals the catalogued ``sha256``, or one of the versions altbeam's writeback
  produced from those bytes (``IndexEntry.own_writes``: the same image plus alt
  text), the content is unchanged and it is skipped; otherwise it is captioned again
  and the new row supersedes the old one.

The listing meets the index in a shuffle (`JoinCatalogIndex`: CoGroupByKey by uri),
not as a side input: no worker ever holds the whole index, whose size is the
catalog's (bench/incremental_join.py measures both ways).

``--force`` captions everything. Only finalized shards are read (layout.shard_glob):
Beam writes into a ``beam-temp-*`` subfolder and renames into place on finalize, so
the partial output of a killed run is never in the index and its images are simply
captioned by the next run; a shard that was renamed before the kill is complete, and
its images are skipped, so no image gets two rows from the pair of runs.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import apache_beam as beam

from altbeam.pipelines.caption.sources import FileRecord
from altbeam.pipelines.catalog.beam_io import to_us
from altbeam.pipelines.catalog.layout import finalized_shards, latest_row, shard_glob
from altbeam.pipelines.runtime.progress import Tally
from altbeam.pipelines.writeback.pipeline import AttachOwnWrites

NEW, UNCHANGED, CHANGED = "new", "unchanged", "changed"


class IndexEntry(NamedTuple):
    """What the catalog knows of one uri: its latest row's file facts."""

    size_bytes: int
    mtime_us: int | None          # microseconds since the epoch, UTC
    sha256: str
    # Hashes of the versions altbeam's writeback produced from these bytes, in order.
    own_writes: tuple[str, ...] = ()


def index_entry(row: dict) -> IndexEntry:
    """A catalog row (uri, size_bytes, mtime, sha256 ...) as its IndexEntry."""
    return IndexEntry(row["size_bytes"], to_us(row["mtime"]), row["sha256"])


def listing_decision(record: FileRecord, entry: IndexEntry | None) -> str:
    """NEW, UNCHANGED or CHANGED, from the listing alone (no byte of the file read)."""
    if entry is None:
        return NEW
    if entry.size_bytes == record.size_bytes and entry.mtime_us == record.mtime_us:
        return UNCHANGED
    return CHANGED


def to_confirm(record: FileRecord, entry: IndexEntry) -> FileRecord:
    """A CHANGED record carrying the hashes that mean "same image" to the decode step."""
    return dataclasses.replace(record, known_sha256=entry.sha256,
                               known_versions=tuple(entry.own_writes))


class ReadCatalogIndex(beam.PTransform):
    """Existing catalog -> (uri, IndexEntry) of the latest row per uri (no own_writes yet)."""

    def __init__(self, catalog: str):
        super().__init__()
        self._catalog = catalog

    def expand(self, pbegin):
        if not finalized_shards(self._catalog):
            return pbegin | "NoCatalogYet" >> beam.Create([])
        return (pbegin
                | "ReadShards" >> beam.io.ReadFromParquet(
                    shard_glob(self._catalog, "catalog"),
                    columns=["uri", "size_bytes", "mtime", "sha256", "processed_at",
                             "run_id"])
                | "KeyByUri" >> beam.Map(lambda r: (r["uri"], r))
                | "LatestPerUri" >> beam.CombinePerKey(latest_row)
                | "ToIndexEntry" >> beam.MapTuple(lambda uri, r: (uri, index_entry(r))))


class AddOwnWrites(beam.PTransform):
    """(uri, IndexEntry) -> the same with ``own_writes`` from CATALOG/writeback.

    After a writeback the file holds the same image plus alt text: its bytes (and size,
    mtime) differ from the catalogued ones, but it must not be captioned again. The
    writeback log links each catalogued sha256 to the versions it produced.
    """

    def __init__(self, catalog: str):
        super().__init__()
        self._catalog = catalog

    def expand(self, index):
        rows = index | "AsRows" >> beam.MapTuple(
            lambda uri, entry: {"uri": uri, "sha256": entry.sha256, "entry": entry})
        return (rows
                | "AttachOwnWrites" >> AttachOwnWrites(self._catalog)
                | "ToEntry" >> beam.Map(lambda r: (r["uri"], r["entry"]._replace(
                    own_writes=tuple(r.get("_produced_sha256") or ())))))


class JoinCatalogIndex(beam.PTransform):
    """(listed FileRecords, (uri, IndexEntry)) -> (uri, {"files": [...], "index": [...]}).

    A shuffle-based join (CoGroupByKey by uri): each worker holds one uri's group at a
    time, never the whole index, so the catalog may hold tens of millions of images.
    Catalogued uris that were not listed come out with no files and are dropped by
    `SkipUnchanged`.
    """

    def expand(self, files_and_index):
        files, index = files_and_index
        keyed_files = files | "KeyFilesByUri" >> beam.Map(lambda r: (r.uri, r))
        return {"files": keyed_files, "index": index} | "CoGroupByUri" >> beam.CoGroupByKey()


class SkipUnchanged(beam.DoFn):
    """A uri's joined group (`JoinCatalogIndex`) -> its FileRecords to process (main)
    or their uri ("unchanged"); see the rule above."""

    def __init__(self, progress_dir: str | None = None):
        self._progress_dir = progress_dir

    def setup(self):
        self._tally = Tally(self._progress_dir)

    def process(self, joined):
        _, group = joined
        entry = next(iter(group["index"]), None)   # ReadCatalogIndex: one per uri
        for record in group["files"]:
            decision = listing_decision(record, entry)
            if decision == NEW:
                yield record
            elif decision == UNCHANGED:
                self._tally.add("unchanged")
                yield beam.pvalue.TaggedOutput("unchanged", record.uri)
            else:   # the decode step confirms with the content hash
                yield to_confirm(record, entry)

    def finish_bundle(self):
        self._tally.flush()
