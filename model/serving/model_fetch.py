"""Copy a SavedModel folder from object storage (gs://, ...) to local disk.

Why: ``tf.saved_model.load`` reads ``gs://`` through TensorFlow's own GCS client,
which (in a Beam job) authenticates and retries differently from Beam, cannot be
pointed at a GCS emulator (its endpoint is fixed), and re-reads the variables over
the network in every worker process. Copying the folder once per machine and loading
the local copy is predictable and testable.

What reads the remote files is a `Storage` (exists / open / list_files). The model
package has no Beam (docs/architecture.md), so its default is `GfileStorage`
(TensorFlow's filesystems); the caption pipeline passes one over Beam's
``FileSystems`` (pipelines/caption/inference.py), so a job reads its model with the
same client, credentials and retries as its images.

The copy lands in ``<cache_dir>/<hash of the URI>/`` and is published with an atomic
rename, so several SDK processes on one VM can call `localize_model` at once: one
wins the rename, the others discard their copy and use the winner's.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from typing import BinaryIO, Protocol

DEFAULT_CACHE_DIR = os.path.join(tempfile.gettempdir(), "altbeam-models")
_COMPLETE = ".altbeam-complete"      # written last: a folder without it is not trusted


class Storage(Protocol):
    """The file operations the loader needs on a (possibly remote) model folder."""

    def exists(self, path: str) -> bool: ...

    def open(self, path: str) -> BinaryIO: ...

    def list_files(self, root: str) -> list[str]:
        """Every file under ``root`` (recursively), as full paths."""


class GfileStorage:
    """Local paths with plain ``open``, anything else through ``tf.io.gfile``."""

    def exists(self, path: str) -> bool:
        if not is_remote(path):
            return os.path.exists(local_path(path))
        import tensorflow as tf
        return tf.io.gfile.exists(path)

    def open(self, path: str) -> BinaryIO:
        if not is_remote(path):
            return open(local_path(path), "rb")
        import tensorflow as tf
        return tf.io.gfile.GFile(path, "rb")

    def list_files(self, root: str) -> list[str]:
        import tensorflow as tf
        return [f"{folder.rstrip('/')}/{name}" for folder, _, names in tf.io.gfile.walk(root)
                for name in names]


DEFAULT_STORAGE = GfileStorage()


def _complete(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, _COMPLETE))


def is_remote(uri: str) -> bool:
    """True for URIs with a scheme other than file:// (gs://, s3://, ...)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() != "file"


def local_path(uri: str) -> str:
    """A local path or ``file://`` URI as a path."""
    return uri[len("file://"):] if uri.startswith("file://") else uri


def localize_model(uri: str, cache_dir: str | None = None,
                   storage: Storage | None = None) -> str:
    """Local folder holding the SavedModel at ``uri``; remote folders are copied once.

    Local paths (and ``file://`` URIs) are returned as they are. A remote folder
    must hold ``saved_model.pb``; everything under it (variables/, assets/,
    model_card.json, ...) is copied. Raises FileNotFoundError naming the URI when
    there is no SavedModel there.
    """
    if not is_remote(uri):
        return local_path(uri)
    storage = storage or DEFAULT_STORAGE
    root = uri.rstrip("/")
    cache_dir = cache_dir or DEFAULT_CACHE_DIR
    dest = os.path.join(cache_dir, hashlib.sha256(root.encode("utf-8")).hexdigest()[:16])
    if _complete(dest):
        return dest

    files = storage.list_files(root)
    prefix = root + "/"
    rel_paths = sorted(p[len(prefix):] for p in files if p.startswith(prefix))
    if "saved_model.pb" not in rel_paths:
        raise FileNotFoundError(f"{uri}: no SavedModel here (saved_model.pb missing; "
                                f"found {len(rel_paths)} other file(s))")

    os.makedirs(cache_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".partial-", dir=cache_dir)
    try:
        for rel in rel_paths:
            if rel.endswith("/"):          # a "folder" placeholder object
                continue
            local = os.path.join(staging, *rel.split("/"))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            with storage.open(prefix + rel) as src, open(local, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        with open(os.path.join(staging, _COMPLETE), "w") as f:
            f.write(root + "\n")
        try:
            os.rename(staging, dest)
        except OSError:
            # Another process published it first (or a stale incomplete copy is in
            # the way): keep a complete one, replace an incomplete one.
            if not _complete(dest):
                shutil.rmtree(dest, ignore_errors=True)
                try:
                    os.rename(staging, dest)
                except OSError:
                    if not _complete(dest):
                        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
