"""Which device the model runs on is said once per worker; --require-gpu fails fast.

These run on a machine without a GPU (CI): the device line says CPU and
--require-gpu refuses to start.
"""
from __future__ import annotations

import logging
import shutil

import pytest

from altbeam.pipelines import cli
from altbeam.pipelines.caption import inference


@pytest.fixture(autouse=True)
def cpu_only_and_fresh_process_state():
    if inference.model_device() != "CPU":
        pytest.skip("TensorFlow sees a GPU here; these tests describe a CPU-only machine")
    inference._device_announced.clear()        # "once per worker process"
    yield
    inference._device_announced.clear()


def photos(sample_photos, dest, n=3):
    dest.mkdir()
    for path in sorted(sample_photos.glob("*.jpg"))[:n]:
        shutil.copy2(path, dest)
    return dest


def test_require_gpu_fails_before_captioning_anything(sample_photos, contract_model, tmp_path,
                                                      capsys):
    src, cat = photos(sample_photos, tmp_path / "in"), tmp_path / "cat"
    status = cli.main(["caption", str(src), "--catalog", str(cat), "--model",
                       str(contract_model), "--require-gpu"])
    err = capsys.readouterr().err
    assert status == 1, err
    assert "altbeam caption: --require-gpu: TensorFlow sees no GPU on this machine" in err
    assert "model runs on" not in err
    assert not list(cat.rglob("*.parquet")) and not (cat / "catalog").exists()


def test_require_gpu_fails_the_worker_when_it_loads_the_model(contract_model):
    """On a remote runner the launcher may have no GPU: the workers check, at setup."""
    info = inference.read_model_info(str(contract_model))
    handler = inference.SavedModelHandler(info, batch_size=2, require_gpu=True)
    with pytest.raises(inference.NoGpuError, match="--require-gpu: TensorFlow sees no GPU"):
        handler.load_model()
    plain = inference.SavedModelHandler(info, batch_size=2)
    assert plain.load_model().image_size == info.image_size      # without it: loads on CPU


def test_first_batch_says_the_model_runs_on_cpu_once(sample_photos, contract_model, tmp_path,
                                                     capsys, caplog):
    src, cat = photos(sample_photos, tmp_path / "in", n=6), tmp_path / "cat"
    with caplog.at_level(logging.INFO, logger="altbeam.pipelines.caption.inference"):
        # The command: a Beam flag before the inputs.
        status = cli.main(["caption", "--runner", "DirectRunner", "--catalog", str(cat),
                           str(src), "--model", str(contract_model), "--batch-size", "2",
                           "--progress-interval", "0.2"])
    err = capsys.readouterr().err
    assert status == 0, err
    assert err.count("altbeam: model runs on CPU\n") == 1, err      # 3 batches, one line
    assert [r.getMessage() for r in caplog.records
            if "model runs on" in r.getMessage()] == ["altbeam: model runs on CPU"]
    assert list((cat / "catalog").glob("run-*.parquet"))


def test_no_progress_run_logs_the_device_but_prints_nothing_extra(contract_model, capsys,
                                                                 caplog):
    import numpy as np

    info = inference.read_model_info(str(contract_model))
    handler = inference.SavedModelHandler(info, batch_size=2)      # no progress dir
    model = handler.load_model()
    batch = [np.zeros((info.image_size, info.image_size, 3), np.uint8)] * 2
    with caplog.at_level(logging.INFO, logger="altbeam.pipelines.caption.inference"):
        for _ in range(2):
            assert len(list(handler.run_inference(batch, model))) == 2
    assert "model runs on" not in capsys.readouterr().err
    assert sum("model runs on CPU" in r.getMessage() for r in caplog.records) == 1
