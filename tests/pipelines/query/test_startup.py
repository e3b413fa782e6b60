"""`altbeam query`, `search` and `report` start without TensorFlow or Beam.

They never run a model (the report's --attention heatmaps excepted, which import the
model only when asked), so importing TensorFlow (seconds) or Beam would be start-up
time for nothing. Each command runs in a fresh interpreter over a tiny catalog; the
driver prints which heavy packages were imported by the time the command returned.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.pipelines.query.test_query import make_catalog
from tests.support.paths import REPO

HEAVY = ("tensorflow", "keras", "apache_beam")
DRIVER = f"""
import json, sys
from altbeam.pipelines import cli
status = cli.main(sys.argv[1:])
print(json.dumps({{"status": status,
                  "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}),
      file=sys.__stderr__)
"""


def run_fresh(*argv) -> dict:
    proc = subprocess.run([sys.executable, "-c", DRIVER, *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def catalog(tmp_path_factory, sample_photos):
    root = tmp_path_factory.mktemp("startup")
    return make_catalog(root / "cat", sorted(sample_photos.glob("*.jpg")))


@pytest.mark.parametrize("argv", [
    ["query", "{cat}", "SELECT 1"],
    ["query", "{cat}", "SELECT uri, caption FROM catalog", "--format", "json"],
    ["search", "{cat}", "dog"],
    ["report", "{cat}", "--out", "{out}/x.html"],
], ids=["query", "query-json", "search", "report"])
def test_catalog_commands_do_not_import_tensorflow_or_beam(argv, catalog, tmp_path):
    argv = [a.format(cat=catalog, out=tmp_path) for a in argv]
    result = run_fresh(*argv)
    assert result == {"status": 0, "heavy": []}, argv


def test_the_driver_sees_an_import_when_there_is_one(catalog, tmp_path):
    """The check can fail: the same driver over `altbeam caption` sees TensorFlow and Beam."""
    result = run_fresh("caption", tmp_path, "--catalog", tmp_path / "c", "--no_such_flag")
    assert result["status"] == 2 and "apache_beam" in result["heavy"]
