"""Object-storage faults: transient errors are retried, a permanent one is one errors row.

``tests/support/fault_proxy.py`` sits between the pipeline and ``gcp-storage-emulator``
(``STORAGE_EMULATOR_HOST`` points at the proxy), so Beam's own gcsio code meets the
faults. How gcsio retries (Beam 2.77, read in apache_beam/io/gcp/gcsio.py and
gcsio_retry.py): every call it makes through google-cloud-storage (listing, metadata,
media download, resumable upload, batch copy/delete for the rename) carries
``gcsio_retry.DEFAULT_RETRY_WITH_THROTTLING_COUNTER``, a ``google.api_core`` Retry with
google-cloud-storage's ``_should_retry`` predicate: 408/429/500/502/503/504 and
connection errors are retried with jittered exponential back-off (first sleeps in
[0, 1] s, then [0, 2] s ...) for up to 120 s; 403/404 are not retried.

The caption run reads photos from and writes its catalog to the emulator through the
proxy, so reads, listing and every write of the run meet the faults.
"""
from __future__ import annotations

import io
import time

import pyarrow.parquet as pq
import pytest

from altbeam.pipelines.caption import pipeline as caption
from tests.support.fault_proxy import Fault, FaultProxy

pytest_plugins = ["tests.support.gcs_emulator"]


@pytest.fixture
def proxy(gcs_emulator, monkeypatch):
    with FaultProxy(gcs_emulator.host) as p:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", p.host)
        yield p


@pytest.fixture
def bucket_with_photos(gcs_emulator, gcs_bucket, sample_photos, tmp_path):
    local = tmp_path / "photos"
    local.mkdir()
    chosen = sorted(sample_photos.glob("*.jpg"))[:4]
    for p in chosen:
        (local / p.name).write_bytes(p.read_bytes())
    gcs_emulator.upload_dir(gcs_bucket, local, "in")
    uris = sorted(f"gs://{gcs_bucket.name}/in/{p.name}" for p in chosen)
    return gcs_bucket, uris


def table(bucket, name: str) -> list[dict]:
    rows = []
    for blob in bucket.list_blobs(prefix=f"cat/{name}/"):
        if blob.name.endswith(".parquet") and "beam-temp" not in blob.name:
            rows += pq.read_table(io.BytesIO(blob.download_as_bytes())).to_pylist()
    return rows


def run_caption(bucket, contract_model) -> dict:
    return caption.run([f"gs://{bucket.name}/in", "--catalog", f"gs://{bucket.name}/cat",
                        "--model", str(contract_model), "--batch-size", "2",
                        "--no-progress"])


def test_transient_5xx_on_every_path_is_retried(proxy, bucket_with_photos, contract_model):
    """The first request to every distinct URL fails (503, or 500 for writes)."""
    bucket, uris = bucket_with_photos
    proxy.faults += [Fault(r"^(POST|PUT|DELETE) ", status=500, first=1),
                     Fault(r"", status=503, first=1)]
    start = time.monotonic()
    summary = run_caption(bucket, contract_model)
    assert (summary["captioned"], summary["failed"], summary["exit_code"]) == (4, 0, 0)
    assert sorted(r["uri"] for r in table(bucket, "catalog")) == uris
    assert table(bucket, "errors") == []
    failed = proxy.failed()
    assert any("alt=media" in path for _, path, _ in failed)           # media downloads
    assert any(m == "GET" and "/o?" in path for m, path, _ in failed)   # listing
    assert any(m in ("POST", "PUT") for m, _, _ in failed)             # catalog writes
    assert time.monotonic() - start < 60


def test_flaky_connection_drops_and_slow_answers(proxy, bucket_with_photos, contract_model):
    """Every 4th request has its connection dropped; every media download is slow."""
    bucket, uris = bucket_with_photos
    proxy.faults += [Fault(r"alt=media", status=None, delay=0.3, every=2),
                     Fault(r"", drop=True, every=4)]
    summary = run_caption(bucket, contract_model)
    assert (summary["captioned"], summary["failed"]) == (4, 0)
    assert sorted(r["uri"] for r in table(bucket, "catalog")) == uris
    assert proxy.faults[1].hits >= 3 and proxy.faults[0].hits >= 1


@pytest.mark.parametrize("status,error_type", [(404, "not_found"),
                                               (403, "permission_denied"),
                                               (500, "storage_unavailable")])
def test_permanent_failure_on_one_object_is_an_errors_row(
        proxy, bucket_with_photos, contract_model, monkeypatch, status, error_type):
    bucket, uris = bucket_with_photos
    broken = uris[1]
    name = broken.split("/", 3)[3]
    proxy.faults.append(Fault(rf"^GET .*/o/{name}\?.*alt=media", status=status))
    if status >= 500:
        # Beam retries a 5xx for 120 s before giving up; same Retry (predicate, back-off,
        # throttling counter), shorter deadline, so the test takes seconds, not minutes.
        from apache_beam.io.gcp import gcsio_retry

        monkeypatch.setattr(gcsio_retry, "DEFAULT_RETRY_WITH_THROTTLING_COUNTER",
                            gcsio_retry.DEFAULT_RETRY_WITH_THROTTLING_COUNTER.with_timeout(4))
    summary = run_caption(bucket, contract_model)
    assert (summary["captioned"], summary["failed"], summary["exit_code"]) == (3, 1, 0)
    assert sorted(r["uri"] for r in table(bucket, "catalog")) == [u for u in uris
                                                                   if u != broken]
    (err,) = table(bucket, "errors")
    assert (err["uri"], err["stage"], err["error_type"]) == (broken, "read", error_type)
    assert broken in err["message"]
    hits = proxy.faults[0].hits
    assert hits == 1 if status < 500 else hits >= 2     # 4xx not retried, 5xx retried
