"""`altbeam train --fine-tune` on Lite0 cut features (block 15 + head conv trained with
the decoder, BatchNorm frozen) and its export as one encoder, end to end."""
from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from altbeam.model.data.feature_records import load_split
from altbeam.model.data.vocab import Vocabulary
from altbeam.model.nets.encoder import build_encoder, weights_path
from altbeam.model.nets.encoder_cut import (
    build_bottom,
    build_top,
    fine_tuned_encoder,
    load_trained_top,
    refuse_fine_tuned,
    run_encoder_weights,
    weights_name,
)
from altbeam.model.serving.export import export
from altbeam.model.serving.export import main as export_main
from altbeam.model.serving.rebuild import rebuild_captioner
from altbeam.model.training.common import decode_features, load_decoder
from altbeam.model.training.fine_tune import FineTuning, write_settings
from altbeam.model.training.train import ModelConfig, train
from altbeam.pipelines.features.pipeline import build as build_features

CUT = 15
CAPTIONS = ["a dog runs on the grass", "a man rides a bike on the street",
            "two cats sit on a red sofa", "a boat on the blue water"]
CONFIG = ModelConfig(embedding_dim=16, lstm_units=32, attention_units=16, dropout=0.0,
                     batch_size=8, epochs=1, min_word_count=1, max_length=8,
                     learning_rate=3e-3, patience=5)


@pytest.fixture(scope="module")
def cut_features(tmp_path_factory, sample_photos):
    out = str(tmp_path_factory.mktemp("cut"))
    photos = sorted(p for p in sample_photos.iterdir() if p.suffix == ".jpg")[:10]
    items = [{"image_id": p.name, "path": str(p), "split": "train",
              "captions": [CAPTIONS[i % 4], CAPTIONS[(i + 1) % 4]]} for i, p in enumerate(photos)]
    with BeamTestPipeline() as p:
        build_features(p, items, out, ["train"], encoder="lite0", batch_size=5, num_shards=1,
                       cut_at=CUT)
    return out


def weights_by_kind(top) -> tuple[dict, dict]:
    """(convolution kernels, BatchNorm weights incl. moving statistics), by layer name."""
    convs, norms = {}, {}
    for layer in top.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            norms[layer.name] = [w.copy() for w in layer.get_weights()]
        elif layer.get_weights():
            convs[layer.name] = [w.copy() for w in layer.get_weights()]
    return convs, norms


def test_a_step_trains_the_top_convolutions_but_not_batchnorm(cut_features):
    data = load_split(cut_features, "train")
    vocab = Vocabulary.build((c for caps in data.captions for c in caps), 1)
    config = CONFIG.replace(encoder="lite0", grid=7, feature_channels=1280,
                            vocab_size=len(vocab))
    objective = FineTuning(config, None, CUT)
    assert objective.encoder_lr == pytest.approx(3e-4)   # a tenth of the decoder's
    objective.use_data(data, vocab)
    convs, norms = weights_by_kind(objective.encoder_top)
    assert len(convs) == 4 and len(norms) == 4   # expand, depthwise, project, head
    decoder_before = [v.numpy().copy() for v in objective.decoder.trainable_variables]
    _, batches = objective.begin_epoch(1, np.random.default_rng(0))
    loss = objective.step(next(iter(batches)))["loss"]
    assert np.isfinite(loss)
    convs_after, norms_after = weights_by_kind(objective.encoder_top)
    for name, values in convs.items():
        assert not np.array_equal(values[0], convs_after[name][0]), name
    for name, values in norms.items():
        for before, after in zip(values, norms_after[name]):
            np.testing.assert_array_equal(before, after)
    assert any(not np.array_equal(b, a.numpy()) for b, a in
               zip(decoder_before, objective.decoder.trainable_variables))


def test_features_and_objective_must_agree(cut_features, tmp_path):
    with pytest.raises(SystemExit, match="cut at block 15.*--fine-tune"):
        train(CONFIG, cut_features, str(tmp_path / "frozen"), val_images=2)


def test_fine_tuned_run_exports_bottom_plus_trained_top(cut_features, tmp_path):
    run = str(tmp_path / "run")
    result = train(CONFIG, cut_features, run, val_images=2, fine_tune=True)
    assert result["config"]["grid"] == 7 and result["config"]["feature_channels"] == 1280
    settings = json.load(open(os.path.join(run, "fine_tune.json")))
    assert settings["cut_at"] == CUT and settings["batchnorm"] == "frozen"
    assert settings["encoder_weights"] == "imagenet"
    assert result["history"][0]["encoder_lr"] == pytest.approx(3e-4)
    resumed = train(CONFIG.replace(epochs=2), cut_features, run, val_images=2, resume=True,
                    fine_tune=True)   # restores the top and both optimisers
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]

    trained_top = load_trained_top(run)
    imagenet_top = build_top("lite0", CUT)
    assert not np.array_equal(trained_top.get_layer("conv_head").get_weights()[0],
                              imagenet_top.get_layer("conv_head").get_weights()[0])
    encoder = fine_tuned_encoder(run)
    imagenet = build_encoder("lite0")
    for name in ("conv_head", "blocks_15_expand_conv", "blocks_15_bn1"):
        np.testing.assert_array_equal(encoder.get_layer(name).get_weights()[0],
                                      trained_top.get_layer(name).get_weights()[0])
    np.testing.assert_array_equal(encoder.get_layer("blocks_14_expand_conv").get_weights()[0],
                                  imagenet.get_layer("blocks_14_expand_conv").get_weights()[0])

    out = export(run, str(tmp_path / "model"), weights="float32")
    card = json.load(open(f"{out}/model_card.json"))
    assert card["encoder_fine_tuned"]["cut_at"] == CUT and card["version"].endswith("-ft15")
    pixels = np.random.default_rng(3).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    served = tf.saved_model.load(out).signatures["serving_default"](images=tf.constant(pixels))
    # The training graph on the same pixels: frozen bottom, the run's top, its decoder.
    grid = trained_top(build_bottom("lite0", CUT)(pixels.astype(np.float32)))
    decoder, vocab, config = load_decoder(run)
    expected = decode_features(decoder, tf.reshape(grid, [3, 49, 1280]).numpy(),
                               config.beam_width, config.max_length, config.length_alpha,
                               vocab.words)
    assert [c.decode() for c in served["captions"].numpy()[:, 0]] == expected
    # The SavedModel holds the trained top (read back as --from-saved-model does).
    rebuilt, _ = rebuild_captioner(out)
    for name in ("conv_head", "blocks_15_project_conv", "blocks_14_project_conv"):
        np.testing.assert_array_equal(rebuilt.encoder.get_layer(name).get_weights()[0],
                                      encoder.get_layer(name).get_weights()[0])


def test_cached_grids_do_not_score_a_fine_tuned_run(tmp_path):
    (tmp_path / "fine_tune.json").write_text(json.dumps({"encoder": "lite0", "cut_at": 15}))
    with pytest.raises(SystemExit, match="fine-tuned its encoder"):
        refuse_fine_tuned([str(tmp_path)], "altbeam evaluate --run")
    refuse_fine_tuned([str(tmp_path / "frozen-run")], "altbeam evaluate --run")   # no file


def test_export_builds_the_bottom_the_run_was_cut_with(tmp_path, monkeypatch):
    """A run cut with its own .pth exports on that file unless told otherwise: the
    installed ImageNet bottom under its top would caption from the wrong features."""
    weights = tmp_path / "mine.pth"
    shutil.copy(weights_path("lite0"), weights)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(CONFIG.to_json())
    monkeypatch.chdir(tmp_path)
    write_settings(str(run), SimpleNamespace(encoder="lite0", cut_at=CUT), "mine.pth",
                   CONFIG, 3e-4)
    monkeypatch.chdir(run)
    assert json.load(open(run / "fine_tune.json"))["encoder_weights"] == str(weights)
    assert run_encoder_weights(str(run)) == str(weights)
    assert run_encoder_weights(str(tmp_path)) == "imagenet"       # a frozen run
    assert weights_name("gs://bucket/mine.pth") == "gs://bucket/mine.pth"
    assert weights_name(None) == weights_name("imagenet") == "imagenet"
    weights.unlink()
    with pytest.raises(SystemExit, match=r"mine\.pth, are not there.*--encoder-weights"):
        export_main([str(run), "--out", str(tmp_path / "model")])
    assert not (tmp_path / "model").exists()
