"""Local path or remote URI: the one rule every reader of inputs and catalogs follows.

A URI with a scheme other than ``file`` (``gs://``, ``s3://``, ...) is remote and read
through Beam's ``FileSystems``. Everything else is local: a plain path, or a
``file://`` URI (which Beam's filesystems do not accept, so it is turned into the
path it names before use).
"""
from __future__ import annotations

_FILE_SCHEME = "file://"


def is_remote(uri: str) -> bool:
    """True for URIs with a scheme other than file:// (gs://, s3://, ...)."""
    scheme, sep, _ = uri.partition("://")
    return bool(sep) and scheme.lower() != "file"


def local_path(uri: str) -> str:
    """The path a local URI names: ``file:///x/y`` -> ``/x/y``; a plain path as it is."""
    if uri[:len(_FILE_SCHEME)].lower() == _FILE_SCHEME:
        return uri[len(_FILE_SCHEME):]
    return uri
