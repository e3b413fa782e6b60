"""A real fake GCS for tests: `gcp-storage-emulator` on a free 127.0.0.1 port.

Use it from a test module with ``pytest_plugins = ["tests.support.gcs_emulator"]`` (or from
conftest). The ``gcs_emulator`` fixture (session scope) starts the emulator as a
subprocess, points ``STORAGE_EMULATOR_HOST`` at it for the whole session (so both
``google.cloud.storage`` and Beam's ``gs://`` filesystem talk to it), and yields a
:class:`GcsEmulator` with the host and a storage client. ``gcs_bucket`` gives each
test a fresh, empty bucket.

Why Beam honours it: Beam 2.77's ``gcsio`` builds a ``google.cloud.storage.Client``;
with no Google credentials on the machine it falls back to an anonymous client, and
the storage client library sends every request to ``STORAGE_EMULATOR_HOST`` when that
variable is set. ``NO_GCE_CHECK=true`` stops google-auth probing a metadata server.
Beam looks its credentials up once per process and caches the answer; without any
credentials, google-auth fails fast but Beam retries the lookup with exponential
back-off (about 25 s) before going anonymous. The fixture therefore primes that
cache with "no credentials" (Beam's private ``_Credentials`` cache, restored at
teardown), which is exactly the state Beam would reach by itself, minus the wait.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class GcsEmulator:
    host: str                 # "http://127.0.0.1:PORT", the STORAGE_EMULATOR_HOST value
    client: object            # google.cloud.storage.Client bound to the emulator

    def create_bucket(self, name: str | None = None):
        """Create a bucket with a unique name (or ``name``) and return it."""
        return self.client.create_bucket(name or f"test-{uuid.uuid4().hex[:12]}")

    def upload_dir(self, bucket, local_dir, prefix: str = "") -> list[str]:
        """Upload every file under ``local_dir`` to ``gs://bucket/prefix``; return the URIs."""
        uris = []
        for root, _dirs, files in os.walk(local_dir):
            for name in sorted(files):
                path = os.path.join(root, name)
                rel = os.path.relpath(path, local_dir).replace(os.sep, "/")
                blob_name = f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel
                bucket.blob(blob_name).upload_from_filename(path)
                uris.append(f"gs://{bucket.name}/{blob_name}")
        return uris


def _wait_until_up(host: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited early with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{host}/storage/v1/b", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gcp-storage-emulator did not answer on {host} within {timeout}s")


def _prime_beam_anonymous_credentials():
    """Tell Beam's credential cache there are none (skips ~25 s of retries)."""
    try:
        from apache_beam.internal.gcp.auth import _Credentials
    except ImportError:  # pragma: no cover - Beam layout changed: just wait instead
        return None, (False, None)
    saved = (_Credentials._credentials_init, _Credentials._credentials)
    with _Credentials._credentials_lock:
        _Credentials._credentials_init, _Credentials._credentials = True, None
    return _Credentials, saved


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory):
    """Start gcp-storage-emulator on 127.0.0.1 for the session; yield a GcsEmulator."""
    port = _free_port()
    host = f"http://127.0.0.1:{port}"
    data_dir = tmp_path_factory.mktemp("gcs-emulator")
    exe = os.path.join(os.path.dirname(sys.executable), "gcp-storage-emulator")
    cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "gcp_storage_emulator"]
    proc = subprocess.Popen(
        cmd + ["--data-dir", str(data_dir), "start", "--host", "127.0.0.1",
               "--port", str(port), "--quiet", "--in-memory"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "NO_GCE_CHECK")}
    beam_auth = None
    beam_auth_saved = (False, None)
    try:
        _wait_until_up(host, proc)
        os.environ["STORAGE_EMULATOR_HOST"] = host
        os.environ["NO_GCE_CHECK"] = "true"
        beam_auth, beam_auth_saved = _prime_beam_anonymous_credentials()
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="test", credentials=AnonymousCredentials())
        yield GcsEmulator(host=host, client=client)
    finally:
        if beam_auth is not None:
            beam_auth._credentials_init, beam_auth._credentials = beam_auth_saved
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def gcs_bucket(gcs_emulator):
    """A fresh, empty bucket on the emulator for one test."""
    return gcs_emulator.create_bucket()
