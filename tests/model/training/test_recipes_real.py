"""The classic recipes (issue 20) on real photos: the merge decoder and Lite0 fine-tuning,
each trained briefly on a few hundred Flickr8k captions from real pixels, exported, and
served through the SavedModel contract on dev photos (the default attention recipe:
test_train.py's real run)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from altbeam.model.data.datasets import load_dataset
from altbeam.model.serving.export import main as export_main
from altbeam.model.serving.saved_model import LoadedModel, read_model_info
from altbeam.model.training.train import main as train_main
from altbeam.pipelines.caption.decode import decode_image
from altbeam.pipelines.features.pipeline import run as features_run

RECIPES = {
    "merge": ([], ["--decoder", "merge"], "-merge"),
    "fine_tune": (["--cut-at", "15"], ["--fine-tune"], "-ft15"),
}


@pytest.mark.shared
@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_trains_on_real_flickr8k_and_serves_through_the_contract(
        recipe, shared_datasets, tmp_path):
    cut, train_flags, version_end = RECIPES[recipe]
    flickr8k = str(shared_datasets / "flickr8k")
    feats, run, model = (str(tmp_path / n) for n in ("feats", "run", "model"))
    summary = features_run([flickr8k, "--out", feats, "--splits", "train", "--limit", "100",
                            "--num-shards", "1", *cut])
    assert summary["images"] == 100 and summary.get("cut_at") == (15 if cut else None)

    assert train_main(["--features", feats, "--out", run, "--epochs", "1",
                       "--val-images", "20", "--lstm-units", "64", "--embedding-dim", "64",
                       "--attention-units", "32", "--batch-size", "50",
                       "--min-word-count", "2", *train_flags]) == 0
    (epoch,) = json.load(open(f"{run}/history.json"))
    assert np.isfinite(epoch["loss"]) and epoch["loss"] > 0

    assert export_main([run, "--out", model, "--beam-width", "2"]) == 0
    info = read_model_info(model)
    assert info.version.endswith(version_end) and info.beam_width == 2
    dev = [i for i in load_dataset(flickr8k, "dev") if i.path][:4]
    pixels = np.stack([decode_image(open(i.path, "rb").read(), info.image_size,
                                    str(i.path)).pixels for i in dev])
    out = LoadedModel(model, info.image_size).predict(pixels)
    assert out.captions.shape == (4, 2) and out.scores.shape == (4, 2)
    assert all(c.decode().strip() for c in out.captions[:, 0])     # a caption per photo
    assert np.all(np.isfinite(out.scores)) and np.all(out.scores <= 0)  # log-probabilities
