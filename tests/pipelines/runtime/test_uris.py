"""Local or remote: file:// is local (and means its path); any other scheme is remote."""
from __future__ import annotations

import pytest

from altbeam.pipelines.runtime.uris import is_remote, local_path


@pytest.mark.parametrize("uri,remote,path", [
    ("/data/a.jpg", False, "/data/a.jpg"),
    ("relative/a.jpg", False, "relative/a.jpg"),
    ("file:///data/a.jpg", False, "/data/a.jpg"),
    ("FILE:///data/a.jpg", False, "/data/a.jpg"),
    ("gs://bucket/a.jpg", True, None),
    ("s3://bucket/a.jpg", True, None),
    ("GS://bucket/a.jpg", True, None),
    ("weird:name.jpg", False, "weird:name.jpg"),         # no "://": a local file name
])
def test_local_or_remote(uri, remote, path):
    assert is_remote(uri) is remote
    if path is not None:
        assert local_path(uri) == path
