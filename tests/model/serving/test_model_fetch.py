"""altbeam.model.serving.model_fetch: a gs:// SavedModel copied to local disk on gcp-storage-emulator.

TensorFlow's own gs:// client cannot be pointed at an emulator, so this is the path
that makes ``--model gs://...`` testable: copy through Beam's FileSystems (the
pipeline's `BEAM_STORAGE`), then load the local copy with the one SavedModel loader
and check it captions like the original.
"""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from altbeam.model.serving import model_fetch
from altbeam.model.serving.model_fetch import is_remote
from altbeam.model.serving.saved_model import LoadedModel
from altbeam.pipelines.caption.inference import BEAM_STORAGE, read_model_info

pytest_plugins = ["tests.support.gcs_emulator"]


def localize_model(uri: str, cache_dir: str | None = None) -> str:
    """As the caption pipeline calls it: remote files read through Beam."""
    return model_fetch.localize_model(uri, cache_dir, BEAM_STORAGE)


def _tree(root) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def test_local_paths_pass_through(contract_model):
    assert localize_model(str(contract_model)) == str(contract_model)
    assert localize_model(f"file://{contract_model}") == str(contract_model)
    assert not is_remote("/m") and not is_remote("file:///m") and is_remote("gs://b/m")


def test_gcs_model_copied_loads_and_captions_like_the_original(
        gcs_emulator, gcs_bucket, contract_model, tmp_path):
    gcs_emulator.upload_dir(gcs_bucket, contract_model, "models/v1")
    uri = f"gs://{gcs_bucket.name}/models/v1/"
    cache = tmp_path / "cache"

    local = localize_model(uri, str(cache))
    original = _tree(contract_model)
    copied = {k: v for k, v in _tree(local).items() if not k.startswith(".altbeam")}
    assert copied == original            # every file, byte for byte (variables/ included)

    info = read_model_info(uri)          # model card read from gs:// by Beam
    assert (info.version, info.image_size, info.beam_width) == ("fixture-0", 32, 3)
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    want = LoadedModel(str(contract_model), 32).caption(images)
    got = LoadedModel(local, 32).caption(images)
    assert (got[0] == want[0]).all() and np.allclose(got[1], want[1])

    # Second call: the cached copy, not a new download (a deleted source proves it).
    for blob in gcs_bucket.list_blobs(prefix="models/v1/"):
        blob.delete()
    assert localize_model(uri, str(cache)) == local


def test_concurrent_callers_share_one_copy(gcs_emulator, gcs_bucket, contract_model, tmp_path):
    gcs_emulator.upload_dir(gcs_bucket, contract_model, "m")
    uri, cache = f"gs://{gcs_bucket.name}/m", str(tmp_path / "cache")
    results, errors = [], []

    def fetch():
        try:
            results.append(localize_model(uri, cache))
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert os.listdir(cache) == [os.path.basename(results[0])]   # no partial copies left
    assert os.path.exists(os.path.join(results[0], "saved_model.pb"))


def test_missing_model_names_the_uri(gcs_emulator, gcs_bucket, tmp_path):
    gcs_bucket.blob("empty/readme.txt").upload_from_string("not a model")
    uri = f"gs://{gcs_bucket.name}/empty"
    with pytest.raises(FileNotFoundError, match=f"{uri}: no SavedModel here"):
        localize_model(uri, str(tmp_path / "cache"))
    assert not os.path.exists(tmp_path / "cache") or not os.listdir(tmp_path / "cache")


def test_caption_with_a_gcs_model_end_to_end(gcs_emulator, gcs_bucket, contract_model,
                                             sample_photos, tmp_path, monkeypatch, capsys):
    """`altbeam caption --model gs://…`: the card is read and the model loaded through
    Beam's FileSystems (a local copy), never through TensorFlow's own gs:// reader."""
    from altbeam.pipelines import cli
    from altbeam.pipelines.catalog.beam_io import read_table_rows
    cache = tmp_path / "cache"
    monkeypatch.setattr(model_fetch, "DEFAULT_CACHE_DIR", str(cache))
    gcs_emulator.upload_dir(gcs_bucket, contract_model, "models/v1")
    photos = tmp_path / "photos"
    photos.mkdir()
    chosen = sorted(sample_photos.glob("*.jpg"))[:2]
    for p in chosen:
        (photos / p.name).write_bytes(p.read_bytes())
    cat = tmp_path / "cat"

    status = cli.main(["caption", str(photos), "--catalog", str(cat), "--model",
                       f"gs://{gcs_bucket.name}/models/v1", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 0, err
    rows = read_table_rows(str(cat), "catalog")
    assert sorted(r["uri"] for r in rows) == sorted(str(photos / p.name) for p in chosen)
    assert all(r["model_version"] == "fixture-0" and len(r["captions"]) == 3 for r in rows)
    (copy,) = os.listdir(cache)                 # the workers loaded the local copy
    assert os.path.exists(os.path.join(cache, copy, "saved_model.pb"))


def test_gcs_model_without_card_reads_its_signature(gcs_emulator, gcs_bucket, contract_model,
                                                    tmp_path, monkeypatch):
    monkeypatch.setattr(model_fetch, "DEFAULT_CACHE_DIR", str(tmp_path / "cache"))
    gcs_emulator.upload_dir(gcs_bucket, contract_model, "bare")
    gcs_bucket.blob("bare/model_card.json").delete()
    info = read_model_info(f"gs://{gcs_bucket.name}/bare")
    assert (info.image_size, info.beam_width, info.version) == (32, 3, "unknown")
