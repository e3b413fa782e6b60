"""`altbeam features --cut-at N`: the activation entering Lite0's MBConv block N, cached
float16, from which the encoder's top gives back the grid of the whole encoder."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from altbeam.model.data.feature_records import load_split
from altbeam.model.nets.encoder import build_encoder, lite_cut_shape, weights_path
from altbeam.model.nets.encoder_cut import build_top, cut_weights
from altbeam.pipelines.caption.decode import decode_image
from altbeam.pipelines.features.pipeline import build, encoder_spec, run
from tests.support.tiny import TINY_ENCODER

CUT = 15   # Lite0: 7x7x192 entering the last MBConv block


@pytest.fixture(scope="module")
def cut_features(tmp_path_factory, sample_photos):
    out = str(tmp_path_factory.mktemp("cut"))
    photos = sorted(p for p in sample_photos.iterdir() if p.suffix == ".jpg")[:3]
    items = [{"image_id": p.name, "path": str(p), "split": "train", "captions": ["a photo"]}
             for p in photos]
    with BeamTestPipeline() as p:
        build(p, items, out, ["train"], encoder="lite0", batch_size=2, num_shards=1,
              cut_at=CUT)
    return out, photos


def test_cut_records_hold_the_activation_entering_the_block(cut_features):
    out, photos = cut_features
    data = load_split(out, "train")
    assert data.cut_at == CUT and data.encoder == "lite0" and data.image_size == 224
    assert data.features.dtype == np.float16 and data.features.shape == (3, 49, 192)
    pixels = np.stack([decode_image(p.read_bytes(), 224, str(p)).pixels
                       for p in sorted(photos, key=lambda p: p.name)]).astype(np.float32)
    whole = build_encoder("lite0")(pixels).numpy()
    from_cut = build_top("lite0", CUT)(data.features.astype(np.float32).reshape(3, 7, 7, 192))
    # float16 storage of the cut is the only difference (grid values are 0..6).
    np.testing.assert_allclose(from_cut.numpy(), whole, atol=0.05)
    assert np.abs(whole).max() > 1.0


def test_cut_shapes_and_refusals():
    assert lite_cut_shape("lite0", 11) == (14, 112) and lite_cut_shape("lite2", 16) == (9, 208)
    assert encoder_spec("lite0", CUT) == (224, 7, 192)
    assert encoder_spec("lite0") == (224, 7, 1280)
    with pytest.raises(SystemExit, match="blocks 0..15, not 16"):
        encoder_spec("lite0", 16)
    with pytest.raises(SystemExit, match="only the Lite encoders"):
        encoder_spec(TINY_ENCODER, 1)


def test_the_command_records_the_cut(tmp_path, sample_photos, monkeypatch):
    photo = sorted(p for p in sample_photos.iterdir() if p.suffix == ".jpg")[0]
    dataset = tmp_path / "captions.jsonl"
    dataset.write_text(json.dumps({"image": str(photo), "caption": "a photo",
                                   "split": "train"}) + "\n")
    # The weights file named relatively: the record must still find it from elsewhere.
    (tmp_path / "w").mkdir()
    shutil.copy(weights_path("lite0"), tmp_path / "w" / "mine.pth")
    monkeypatch.chdir(tmp_path)
    summary = run([str(dataset), "--out", str(tmp_path / "f"), "--splits", "train",
                   "--cut-at", "11", "--num-shards", "1", "--weights", "w/mine.pth"])
    written = json.loads((tmp_path / "f" / "features.json").read_text())
    assert written == summary
    assert (written["cut_at"], written["grid"], written["channels"]) == (11, 14, 112)
    assert load_split(str(tmp_path / "f"), "train").features.shape == (1, 196, 112)
    monkeypatch.chdir(sample_photos)
    assert cut_weights(str(tmp_path / "f")) == str(tmp_path / "w" / "mine.pth")
    # `altbeam train --fine-tune` takes this as its default; a moved file is named.
    (tmp_path / "w" / "mine.pth").unlink()
    with pytest.raises(SystemExit, match=r"w/mine\.pth, are not there.*--encoder-weights"):
        cut_weights(str(tmp_path / "f"))
