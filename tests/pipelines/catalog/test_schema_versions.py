"""Shards of two schema versions read together, by every reader a user may bring.

A version-1 shard is written as altbeam 0.1 wrote it (Beam's defaults: uncompressed,
legacy list encoding, 19 columns); a version-2 shard through today's WriteTable. Both
sit in one catalog folder and must read as one table: pyarrow.dataset, DuckDB (the
catalog API's views) and pandas, with the v2 columns null on the v1 rows.
"""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from altbeam.pipelines.catalog.api import catalog_dataset, connect
from altbeam.pipelines.catalog.beam_io import V2_COLUMNS, WriteTable
from altbeam.pipelines.catalog.layout import finalized_shards
from altbeam.schemas import CATALOG_SCHEMA

UTC = dt.UTC
V1_SCHEMA = pa.schema([f for f in CATALOG_SCHEMA if f.name not in V2_COLUMNS],
                      metadata={b"altbeam.table": b"catalog", b"altbeam.schema_version": b"1"})


def row(uri: str, run_id: str, at: dt.datetime, **extra) -> dict:
    base = {"uri": uri, "sha256": "0" * 64, "size_bytes": 10, "mtime": at, "width": 4,
            "height": 3, "format": "JPEG", "caption": f"a caption of {uri}", "score": -1.0,
            "captions": [f"a caption of {uri}", "another"], "scores": [-1.0, -1.5],
            "model_version": "m1", "run_id": run_id, "processed_at": at, "capture_time": None,
            "camera_make": None, "camera_model": None, "existing_alt_text": None,
            "existing_description": None}
    return base | extra


@pytest.fixture(scope="module")
def two_version_catalog(tmp_path_factory):
    cat = tmp_path_factory.mktemp("cat")
    (cat / "catalog").mkdir()
    t1 = dt.datetime(2026, 1, 1, tzinfo=UTC)
    old = pa.Table.from_pylist([row("/a.jpg", "r1", t1), row("/b.jpg", "r1", t1)],
                               schema=V1_SCHEMA)
    pq.write_table(old, cat / "catalog" / "run-r1-00000-of-00001.parquet",
                   compression="none", use_compliant_nested_type=False)
    t2 = dt.datetime(2026, 2, 1, tzinfo=UTC)
    new_rows = [row("/b.jpg", "r2", t2, caption_status="ok", objects=["dog"],
                    keywords=["dog", "grass"], keyword_scores=[0.9, 0.7], pixels_from="file"),
                row("/c.jpg", "r2", t2, caption_status="unsure", objects=[], keywords=[],
                    keyword_scores=[], pixels_from="file")]
    new_rows = [{name: r.get(name) for name in CATALOG_SCHEMA.names} for r in new_rows]
    with beam.Pipeline() as p:
        _ = p | beam.Create(new_rows) | WriteTable(str(cat), "catalog", "r2", num_shards=1)
    return cat


def test_v2_shards_are_compressed_with_standard_lists(two_version_catalog):
    [new] = [s for s in finalized_shards(str(two_version_catalog)) if "run-r2" in s]
    meta = pq.ParquetFile(new).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    assert meta.schema.to_arrow_schema().metadata[b"altbeam.schema_version"] == b"2"
    paths = [meta.schema.column(i).path for i in range(meta.num_columns)]
    assert "captions.list.element" in paths and "keywords.list.element" in paths


def test_pyarrow_dataset_reads_both_versions(two_version_catalog):
    table = catalog_dataset(str(two_version_catalog)).to_table()
    assert table.num_rows == 4
    by = {(r["uri"], r["run_id"]): r for r in table.to_pylist()}
    assert by[("/a.jpg", "r1")]["caption_status"] is None
    assert by[("/a.jpg", "r1")]["captions"] == ["a caption of /a.jpg", "another"]
    assert by[("/b.jpg", "r2")]["keywords"] == ["dog", "grass"]
    # A user's own pyarrow.dataset over the folder, with the newest schema.
    plain = ds.dataset(two_version_catalog / "catalog", schema=CATALOG_SCHEMA).to_table()
    assert sorted(plain.column("uri").to_pylist()) == ["/a.jpg", "/b.jpg", "/b.jpg", "/c.jpg"]


def test_duckdb_views_read_both_versions(two_version_catalog):
    con = connect(str(two_version_catalog))
    latest = con.sql("SELECT uri, run_id, caption_status, keywords, captions[1] AS first "
                     "FROM catalog ORDER BY uri").fetchall()
    assert latest == [("/a.jpg", "r1", None, None, "a caption of /a.jpg"),
                      ("/b.jpg", "r2", "ok", ["dog", "grass"], "a caption of /b.jpg"),
                      ("/c.jpg", "r2", "unsure", [], "a caption of /c.jpg")]


def test_pandas_reads_both_versions(two_version_catalog):
    frame = pd.read_parquet(two_version_catalog / "catalog", schema=CATALOG_SCHEMA)
    assert len(frame) == 4
    assert frame.loc[frame.run_id == "r1", "caption_status"].isna().all()
    assert list(frame.loc[frame.uri == "/c.jpg", "caption_status"]) == ["unsure"]
    assert list(frame.loc[frame.uri == "/a.jpg", "captions"].iloc[0]) == [
        "a caption of /a.jpg", "another"]
