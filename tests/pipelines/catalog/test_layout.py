"""The catalog's layout rules: file names, run ids, and the one "latest row per uri" rule
as the Beam jobs (Python key) and the DuckDB views (SQL) both apply it."""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from altbeam.pipelines.caption.incremental import IndexEntry, ReadCatalogIndex
from altbeam.pipelines.catalog import layout
from altbeam.pipelines.catalog.api import connect
from altbeam.pipelines.writeback.pipeline import ReadLatestCatalog
from altbeam.schemas.catalog import CATALOG_SCHEMA

UTC = dt.UTC
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def catalog_row(uri: str, run_id: str, processed_at: dt.datetime, sha: str) -> dict:
    return {"uri": uri, "sha256": sha, "size_bytes": len(sha), "mtime": T0,
            "run_id": run_id, "processed_at": processed_at, "caption": f"{run_id} {uri}"}


def write_runs(catalog, rows_by_run: dict[str, list[dict]]) -> None:
    """One finalized shard per run, named as WriteTable names them."""
    (catalog / "catalog").mkdir(parents=True, exist_ok=True)
    for run_id, rows in rows_by_run.items():
        path = layout.shard_prefix(str(catalog), "catalog", run_id) + "-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(rows, schema=CATALOG_SCHEMA), path)


def micros(when: dt.datetime) -> int:
    return int(when.timestamp()) * 1_000_000 + when.microsecond


@pytest.fixture
def tied_catalog(tmp_path):
    """uri "tie": runs "r-a" and "r-b" at the same instant (r-b must win); uri "older":
    r-b's row is older than r-a's, so r-a wins although its run id is smaller."""
    cat = tmp_path / "cat"
    write_runs(cat, {
        "r-b": [catalog_row("tie", "r-b", T0, "b" * 8),
                catalog_row("older", "r-b", T0 - dt.timedelta(seconds=1), "b" * 9)],
        "r-a": [catalog_row("tie", "r-a", T0, "a" * 10),
                catalog_row("older", "r-a", T0, "a" * 11)],
    })
    return cat


# --- the latest-row rule ----------------------------------------------------------------

def test_latest_row_breaks_a_processed_at_tie_by_the_greater_run_id():
    a = catalog_row("u", "20260301T120000Z-aaaaaa", T0, "a")
    b = catalog_row("u", "20260301T120000Z-bbbbbb", T0, "b")
    assert layout.latest_row([a, b]) is b and layout.latest_row([b, a]) is b
    newer = catalog_row("u", "0-smaller-run-id", T0 + dt.timedelta(microseconds=1), "n")
    assert layout.latest_row([a, b, newer]) is newer       # processed_at decides first


def test_the_sql_order_is_built_from_the_same_columns():
    assert layout.LATEST_BY == ("processed_at", "run_id")
    assert layout.LATEST_ORDER_SQL == "processed_at DESC, run_id DESC"


def test_duckdb_view_takes_the_same_latest_row(tied_catalog):
    con = connect(str(tied_catalog))
    latest = dict(con.sql("SELECT uri, run_id FROM catalog ORDER BY uri").fetchall())
    assert latest == {"tie": "r-b", "older": "r-a"}
    assert con.sql("SELECT count(*) FROM catalog_history").fetchall() == [(4,)]


def test_both_beam_readers_take_the_same_latest_row(tied_catalog):
    cat = str(tied_catalog)
    with test_pipeline.TestPipeline() as p:
        rows = p | "Latest" >> ReadLatestCatalog(cat)
        assert_that(rows | beam.Map(lambda r: (r["uri"], r["run_id"])),
                    equal_to([("tie", "r-b"), ("older", "r-a")]), label="WritebackReader")
        index = p | "Index" >> ReadCatalogIndex(cat)
        assert_that(index, equal_to([("tie", IndexEntry(8, micros(T0), "b" * 8)),
                                     ("older", IndexEntry(11, micros(T0), "a" * 11))]),
                    label="CaptionIndex")


# --- file names and run ids ---------------------------------------------------------------

def test_shard_glob_matches_finalized_shards_only(tmp_path):
    cat = tmp_path / "cat"
    write_runs(cat, {"r1": [catalog_row("u", "r1", T0, "x")]})
    temp = cat / "catalog" / "beam-temp-run-r2-0123"
    temp.mkdir()
    (temp / "run-r2-00000-of-00001.parquet").write_bytes(b"PAR1 partial")
    (cat / "catalog" / "notes.parquet").write_bytes(b"not a shard")
    assert layout.shard_glob(str(cat), "catalog") == f"{cat}/catalog/run-*.parquet"
    assert layout.finalized_shards(str(cat)) == [
        f"{cat}/catalog/run-r1-00000-of-00001.parquet"]
    assert layout.finalized_shards(str(tmp_path / "missing")) == []


def test_file_names_of_one_run(tmp_path):
    assert layout.shard_prefix("gs://b/cat/", "errors", "r1") == "gs://b/cat/errors/run-r1"
    assert layout.run_summary_path("/c", "r1") == "/c/runs/r1.json"
    assert layout.run_summaries_glob("/c") == "/c/runs/*.json"


@pytest.mark.parametrize("run_id", ["../x", "a/b", "..", ".hidden", "", "a" * 129, "x\ny",
                                    "a..b"])
def test_bad_run_ids_are_refused_wherever_a_file_is_named(run_id):
    for name in (lambda: layout.check_run_id(run_id),
                 lambda: layout.shard_prefix("/c", "catalog", run_id),
                 lambda: layout.run_summary_path("/c", run_id)):
        with pytest.raises(ValueError, match="--run-id"):
            name()


def test_good_run_ids_pass():
    for run_id in ("20261124T091630Z-3fa2c1", "r1", "nightly.2026-01-01_a", "a" * 128):
        assert layout.check_run_id(run_id) == run_id
