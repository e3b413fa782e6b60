"""A built wheel installs into a clean virtualenv and captions the bundled samples.

This is what `pip install altbeam` gives a user: the three packages under one
`altbeam.` namespace (no top-level `model`/`pipelines`/`schemas` to collide with the
user's own folders), the bundled model and the exiftool config as package data, and
the `altbeam` command. The install uses constraints.txt, the tested set, from pip's
cache or the package registry.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv

import pytest

from tests.support.paths import REPO, SAMPLES

pytestmark = pytest.mark.slow


# A clean install of the tested set (TensorFlow, Beam, ...) takes about 3.3 GB, plus the
# downloads while pip works.
NEEDS_FREE_BYTES = 5 * 2**30


def run(cmd, **kw):
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done


@pytest.fixture(scope="module")
def clean_env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    free = shutil.disk_usage(tmp).free
    assert free >= NEEDS_FREE_BYTES, (
        f"the clean install needs {NEEDS_FREE_BYTES / 2**30:.0f} GB free under {tmp}; "
        f"{free / 2**30:.1f} GB is: free the disk (old venvs, clones) and run again")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", REPO],
        cwd=tmp)
    wheels = list((tmp / "dist").glob("altbeam-*.whl"))
    assert len(wheels) == 1
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    run([python, "-m", "pip", "install", "-q", "-c", REPO / "constraints.txt", wheels[0]],
        cwd=tmp, timeout=1200)
    yield tmp, env_dir
    # pytest keeps the last three runs' temp folders; a venv in each would hold ~10 GB.
    shutil.rmtree(env_dir, ignore_errors=True)


def test_wheel_has_one_namespace(clean_env):
    tmp, env_dir = clean_env
    python = env_dir / "bin" / "python"
    code = ("import importlib.util as u, json, altbeam.pipelines, altbeam.model, "
            "altbeam.schemas; from altbeam.model import DEFAULT_MODEL_DIR as d; "
            "print(json.dumps({n: u.find_spec(n) is not None for n in "
            "('model', 'pipelines', 'schemas')} | {'model_dir': d}))")
    # Run from a folder holding a user's own model/ package: ours must not be shadowed
    # and must not shadow it.
    (tmp / "model").mkdir()
    (tmp / "model" / "__init__.py").write_text("USER = True\n")
    out = json.loads(run([python, "-c", code], cwd=tmp).stdout)
    assert out["pipelines"] is False and out["schemas"] is False
    assert out["model"] is True                    # the user's own, found in the cwd
    assert out["model_dir"].startswith(str(env_dir))
    assert os.path.isfile(os.path.join(out["model_dir"], "model_card.json"))


def test_wheel_captions_the_samples(clean_env):
    tmp, env_dir = clean_env
    photos = sorted(SAMPLES.glob("*.jpg"))[:3]
    src = tmp / "photos"
    src.mkdir()
    for p in photos:
        (src / p.name).write_bytes(p.read_bytes())
    env = {**os.environ, "NO_GCE_CHECK": "true"}
    run([env_dir / "bin" / "altbeam", "caption", src, "--catalog", tmp / "cat"], cwd=tmp,
        env=env, timeout=600)
    rows = run([env_dir / "bin" / "altbeam", "query", tmp / "cat",
                "SELECT uri, caption FROM catalog ORDER BY uri", "--format", "json"],
               cwd=tmp, env=env).stdout
    got = json.loads(rows)
    assert [os.path.basename(r["uri"]) for r in got] == [p.name for p in photos]
    assert all(r["caption"] and len(r["caption"].split()) >= 3 for r in got)
