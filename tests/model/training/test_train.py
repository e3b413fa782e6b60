"""Feature job -> training -> resume -> export, end to end on the tiny encoder."""
from __future__ import annotations

import json
import os

import apache_beam as beam
import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

from altbeam.model.data.feature_records import load_split
from altbeam.model.data.vocab import Vocabulary
from altbeam.model.serving.export import export
from altbeam.model.training.train import ModelConfig, load_glove, train
from altbeam.pipelines.features.pipeline import build as build_features
from tests.support.tiny import TINY_ENCODER

CAPTIONS = ["a dog runs on the grass", "a man rides a bike on the street",
            "two cats sit on a red sofa", "a boat on the blue water"]


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, sample_photos):
    out = str(tmp_path_factory.mktemp("features"))
    photos = sorted(p for p in sample_photos.iterdir() if p.suffix == ".jpg")
    items = [{"image_id": p.name, "path": str(p), "split": "train" if i < 14 else "dev",
              "captions": [CAPTIONS[i % 4], CAPTIONS[(i + 1) % 4] + " today"]}
             for i, p in enumerate(photos)]
    items.append({"image_id": "missing.jpg", "path": str(sample_photos / "missing.jpg"),
                  "split": "train", "captions": ["nothing"]})
    with BeamTestPipeline() as p:
        build_features(p, items, out, ["train", "dev"], encoder=TINY_ENCODER, batch_size=4,
                       num_shards=2)
    return out


def test_feature_shards_hold_float16_grids_and_captions(features_dir):
    train_set = load_split(features_dir, "train")
    dev = load_split(features_dir, "dev")
    assert len(train_set) == 14 and len(dev) == 4  # the missing file is skipped, not fatal
    assert train_set.features.dtype == np.float16 and train_set.features.shape[1:] == (16, 16)
    assert all(len(c) == 2 for c in train_set.captions)


def test_train_resume_and_export_honour_the_contract(features_dir, tmp_path):
    config = ModelConfig(embedding_dim=16, lstm_units=32, attention_units=16, dropout=0.0,
                         batch_size=8, epochs=2, min_word_count=1, max_length=8,
                         learning_rate=3e-3, patience=5)
    run = str(tmp_path / "run")
    first = train(config, features_dir, run, val_images=3)
    assert [h["epoch"] for h in first["history"]] == [1, 2]
    assert first["history"][1]["loss"] < first["history"][0]["loss"]
    assert os.path.exists(f"{run}/best/ckpt.index") and os.path.exists(f"{run}/vocab.json")
    resumed = train(config.replace(epochs=3), features_dir, run, val_images=3, resume=True)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]

    out = export(run, str(tmp_path / "model"), beam_width=2)
    card = json.load(open(f"{out}/model_card.json"))
    assert card["beam_width"] == 2 and card["backbone"] == "tiny"
    assert [h["epoch"] for h in card["training"]["history"]] == [1, 2, 3]
    fn = tf.saved_model.load(out).signatures["serving_default"]
    result = fn(images=tf.zeros([2, 32, 32, 3], tf.uint8))
    assert result["captions"].shape == (2, 2)
    vocab = set(Vocabulary.load(f"{run}/vocab.json").words)
    for caption in result["captions"].numpy().ravel():
        assert caption and set(caption.decode().split()) <= vocab


def test_glove_file_initialises_known_words(tmp_path):
    vocab = Vocabulary.build(["a dog", "a cat"], min_count=1)
    path = tmp_path / "glove.txt"
    path.write_text("dog 0.5 0.25\nzebra 1 1\n")
    matrix = load_glove(str(path), vocab, 2)
    np.testing.assert_allclose(matrix[vocab.index["dog"]], [0.5, 0.25])
    path.write_text("dog 0.5\n")
    with pytest.raises(ValueError, match="glove.txt:1: 1 values"):
        load_glove(str(path), vocab, 2)


def test_missing_features_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="altbeam features"):
        load_split(str(tmp_path), "train")


def test_feature_job_is_a_named_beam_graph(tmp_path):
    p = beam.Pipeline()
    build_features(p, [], str(tmp_path), ["train"], encoder=TINY_ENCODER)
    labels = {t.full_label for t in p._current_transform().parts}
    assert {"ListImages", "Decode", "Encode", "WriteTrain"} <= labels


@pytest.mark.shared
def test_short_real_training_run_on_flickr8k(shared_datasets, tmp_path, capsys):
    """The real path on real data: `altbeam features` (Lite0) on 240 Flickr8k images,
    one epoch of `altbeam train`, `altbeam export`, `altbeam evaluate` from pixels."""
    from altbeam.model.evaluation.evaluate import main as evaluate_main
    from altbeam.model.serving.export import main as export_main
    from altbeam.model.training.train import main as train_main
    from altbeam.pipelines.features.pipeline import run as features_run

    feats, run, model = (str(tmp_path / n) for n in ("feats", "run", "model"))
    summary = features_run([str(shared_datasets / "flickr8k"), "--out", feats,
                            "--splits", "train,dev", "--limit", "200", "--num-shards", "1"])
    assert summary["images"] == 400 and summary["encoder"] == "lite0"
    dev = load_split(feats, "dev")
    assert dev.features.shape == (200, 49, 1280)

    assert train_main(["--features", feats, "--out", run, "--epochs", "1", "--val-images", "40",
                       "--lstm-units", "128", "--attention-units", "64", "--batch-size", "50",
                       "--min-word-count", "2"]) == 0
    history = json.load(open(f"{run}/history.json"))
    assert len(history) == 1 and np.isfinite(history[0]["loss"])
    assert export_main([run, "--out", model, "--beam-width", "2"]) == 0
    assert evaluate_main(["--model", model, "--dataset", str(shared_datasets / "flickr8k"),
                          "--split", "dev", "--limit", "40", "--tokenizer", "simple",
                          "--no-baselines", "--out", str(tmp_path / "dev.json")]) == 0
    scores = json.load(open(tmp_path / "dev.json"))["scores"]
    (row,) = scores.values()
    assert 0 < row["BLEU-1"] <= 1
