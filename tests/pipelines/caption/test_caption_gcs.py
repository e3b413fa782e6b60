"""The caption pipeline from a gs:// bucket to a gs:// catalog, on gcp-storage-emulator.

Beam's own GCS filesystem (gcsio) does the reading and writing: with no credentials it
builds an anonymous google-cloud-storage client, which sends every request to
STORAGE_EMULATOR_HOST (set by the gcs_emulator fixture before any gs:// access).
"""
from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from altbeam.pipelines.caption import pipeline as caption
from altbeam.schemas import CATALOG_SCHEMA, ERRORS_SCHEMA

pytest_plugins = ["tests.support.gcs_emulator"]


def read_table(bucket, prefix: str):
    blobs = [b for b in bucket.list_blobs(prefix=prefix)
             if b.name.endswith(".parquet") and "/run-" in b.name and "beam-temp" not in b.name]
    tables = [pq.read_table(io.BytesIO(b.download_as_bytes())) for b in blobs]
    return blobs, tables


def test_gcs_in_gcs_out(gcs_emulator, gcs_bucket, sample_photos, contract_model, tmp_path):
    local = tmp_path / "photos"
    local.mkdir()
    chosen = sorted(sample_photos.glob("*.jpg"))[:5]
    for p in chosen:
        (local / p.name).write_bytes(p.read_bytes())
    (local / "broken.jpg").write_bytes(b"not a jpeg")
    gcs_emulator.upload_dir(gcs_bucket, local, "archive/2024")
    gcs_bucket.blob("archive/readme.txt").upload_from_string("not listed")
    src, cat = f"gs://{gcs_bucket.name}/archive", f"gs://{gcs_bucket.name}/catalog"

    first = caption.run([src, "--catalog", cat, "--model", str(contract_model),
                         "--batch-size", "2", "--no-progress"])
    assert (first["captioned"], first["failed"], first["exit_code"]) == (5, 1, 0)

    blobs, tables = read_table(gcs_bucket, "catalog/catalog/")
    assert len(blobs) >= 1
    rows = [r for t in tables for r in t.to_pylist()]
    assert all(t.schema.equals(CATALOG_SCHEMA, check_metadata=False) for t in tables)
    assert sorted(r["uri"] for r in rows) == sorted(
        f"gs://{gcs_bucket.name}/archive/2024/{p.name}" for p in chosen)
    assert all(r["mtime"] is not None and len(r["captions"]) == 3 for r in rows)

    _, err_tables = read_table(gcs_bucket, "catalog/errors/")
    errors = [r for t in err_tables for r in t.to_pylist()]
    assert all(t.schema.equals(ERRORS_SCHEMA, check_metadata=False) for t in err_tables)
    assert [(e["uri"].rsplit("/", 1)[-1], e["stage"]) for e in errors] == [("broken.jpg",
                                                                           "decode")]
    run_json = json.loads(gcs_bucket.blob(f"catalog/runs/{first['run_id']}.json")
                          .download_as_bytes())
    assert run_json["captioned"] == 5

    # Incremental on GCS: nothing new, nothing recaptioned, no new rows.
    second = caption.run([src, "--catalog", cat, "--model", str(contract_model),
                          "--no-progress"])
    assert (second["captioned"], second["skipped_unchanged"]) == (0, 5)
    _, tables = read_table(gcs_bucket, "catalog/catalog/")
    assert sum(t.num_rows for t in tables) == 5
