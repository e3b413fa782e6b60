"""The incremental rule as plain function calls (the join's DoFn called directly): no Beam
pipeline, no TensorFlow."""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pytest

from altbeam.pipelines.caption.incremental import (
    CHANGED,
    NEW,
    UNCHANGED,
    IndexEntry,
    SkipUnchanged,
    index_entry,
    listing_decision,
    to_confirm,
)
from altbeam.pipelines.caption.sources import FileRecord
from altbeam.pipelines.writeback.pipeline import own_write_chain

MTIME_US = 1_767_225_600_123_456            # 2026-01-01T00:00:00.123456Z
ENTRY = IndexEntry(size_bytes=1000, mtime_us=MTIME_US, sha256="catalogued")


def record(size=1000, mtime_us=MTIME_US) -> FileRecord:
    return FileRecord(uri="/photos/a.jpg", size_bytes=size, mtime_us=mtime_us)


@pytest.mark.parametrize("listed,entry,decision", [
    (record(), None, NEW),
    (record(), ENTRY, UNCHANGED),
    (record(size=1001), ENTRY, CHANGED),
    (record(mtime_us=MTIME_US + 1), ENTRY, CHANGED),           # touched, to the microsecond
    (record(mtime_us=None), ENTRY, CHANGED),                   # a store without mtimes
    (record(mtime_us=None), ENTRY._replace(mtime_us=None), UNCHANGED),
])
def test_listing_decision(listed, entry, decision):
    assert listing_decision(listed, entry) == decision


def test_a_changed_file_carries_what_confirms_it_is_the_same_image():
    entry = ENTRY._replace(own_writes=("written-once", "written-twice"))
    confirm = to_confirm(record(size=1200), entry)
    assert (confirm.uri, confirm.size_bytes) == ("/photos/a.jpg", 1200)   # as listed
    assert confirm.known_sha256 == "catalogued"
    assert confirm.known_versions == ("written-once", "written-twice")
    assert to_confirm(record(size=1200), ENTRY).known_versions == ()


def test_index_entry_of_a_catalog_row():
    mtime = dt.datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=dt.UTC)
    row = {"uri": "/photos/a.jpg", "size_bytes": 1000, "mtime": mtime, "sha256": "catalogued",
           "processed_at": mtime, "run_id": "r1"}
    assert index_entry(row) == ENTRY
    assert index_entry({**row, "mtime": None}).mtime_us is None
    # The listing's microseconds and the catalog's timestamp agree: unchanged.
    assert listing_decision(record(), index_entry(row)) == UNCHANGED


def test_own_write_versions_follow_the_writeback_log():
    writes = [("orig", "v1", "w1"), ("v1", "v2", "w2"), ("other", "x", "w1")]
    assert own_write_chain("orig", writes) == ["v1", "v2"]
    assert own_write_chain("v1", writes) == ["v2"]
    assert own_write_chain("unknown", writes) == []
    # A log that loops (a file written back to earlier bytes) ends, each version once.
    assert own_write_chain("a", [("a", "b", "w1"), ("b", "a", "w2")]) == ["b", "a"]


def skip_unchanged(files: list[FileRecord], index: list[IndexEntry]) -> list:
    """SkipUnchanged on one uri's group as CoGroupByKey hands it over: (main, tag, value)."""
    fn = SkipUnchanged()
    fn.setup()
    out = []
    for value in fn.process(("/photos/a.jpg", {"files": files, "index": index})):
        if isinstance(value, beam.pvalue.TaggedOutput):
            out.append(("unchanged", value.value))
        else:
            out.append(("todo", value))
    fn.finish_bundle()
    return out


def test_a_joined_uri_group_goes_where_the_rule_says():
    assert skip_unchanged([record()], []) == [("todo", record())]                    # new
    assert skip_unchanged([record()], [ENTRY]) == [("unchanged", "/photos/a.jpg")]
    [(where, confirm)] = skip_unchanged([record(size=1200)], [ENTRY])               # changed
    assert where == "todo" and confirm.known_sha256 == "catalogued"
    # Catalogued but not listed this time: nothing to do, nothing counted.
    assert skip_unchanged([], [ENTRY]) == []
    # A file listed twice (overlapping inputs) is decided twice, as in the listing.
    assert skip_unchanged([record(), record()], [ENTRY]) == [
        ("unchanged", "/photos/a.jpg")] * 2
