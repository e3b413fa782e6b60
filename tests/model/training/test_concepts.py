"""`altbeam train-concepts` end to end on a small synthetic feature set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.feature_records import feature_example, shard_prefix
from altbeam.model.nets.concept_head import load_detectors
from altbeam.model.training.concepts import (
    average_precision,
    caption_counts,
    keep_over_imagenet,
    targets,
)
from altbeam.pipelines.cli import main as cli_main

CHANNELS = 1280   # the concept head's width: the file must fit it


def _write_split(root, split, rng, n):
    """Images where channel 7 decides 'grass' (2+ captions say it) and 11 decides 'snow'
    for one caption only (below the 2-caption rule: never a positive)."""
    with tf.io.TFRecordWriter(f"{shard_prefix(str(root), split)}-00000-of-00001.tfrecord") as w:
        for i in range(n):
            # like real pooled grids, most channels carry little: noise in 64 of them
            grid = np.zeros((2, 2, CHANNELS), np.float32)
            grid[..., :64] = rng.uniform(0, 1, (2, 2, 64))
            grass = i % 3 == 0
            grid[..., 7] += 3.0 if grass else 0.0
            captions = ["a man runs", "a person is outside", "a woman walks", "someone stands",
                        "a boy in the snow"]
            if grass:
                captions[:3] = ["a man on the grass", "a person in the grass", "grass and a man"]
            w.write(feature_example(f"img{i:04d}.jpg", split, grid, "tiny", 16, captions))


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    root = tmp_path_factory.mktemp("feats")
    rng = np.random.default_rng(0)
    for split, n in (("train", 300), ("dev", 60)):
        (root / split).mkdir()
        _write_split(root, split, rng, n)
    return root


def test_cli_trains_detectors_in_the_concept_head_format(features, tmp_path):
    out = tmp_path / "det.npz"
    rc = cli_main(["train-concepts", "--features", str(features), "--out", str(out),
                   "--min-positives", "20", "--val-images", "60", "--epochs", "30",
                   "--batch-size", "16", "--no-compare-imagenet"])
    assert rc == 0
    with np.load(out, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["bias", "concepts", "encoder", "kernel"]
        kernel, bias, concepts = npz["kernel"], npz["bias"], [str(c) for c in npz["concepts"]]
    assert load_detectors(str(out)).encoder == "tiny"   # the concept head's reader takes it
    # grass is named by 3 captions of a third of the images; snow by one caption only (no
    # detector); person by all, but without an ImageNet head to beat, a concept ImageNet
    # maps (person: scuba diver, groom, ballplayer) keeps no detector
    assert concepts == ["grass"]
    assert kernel.dtype == np.float32 and kernel.shape == (CHANNELS, 1)
    assert bias.dtype == np.float32 and bias.shape == (1,)
    report = json.loads(out.with_suffix(".json").read_text())
    grass = report["dev"]["concepts"]["grass"]
    assert grass["positives"] == 20 and grass["AP"] > 0.95
    assert grass["precision"] > 0.9 and grass["recall"] > 0.9
    assert report["recipe"]["min_captions"] == 2 and report["train_images"] == 240

    # the file alone reproduces the scores: sigmoid(mean over the grid @ kernel + bias)
    pooled = np.zeros((2, CHANNELS), np.float32)
    pooled[:, :64] = 0.5
    pooled[0, 7] += 3.0
    scores = 1 / (1 + np.exp(-(pooled @ kernel + bias)))
    assert scores[0, 0] > 0.5 > 0.2 > scores[1, 0]


def test_targets_need_two_captions_and_fold_person_kinds():
    captions = [["a man on the grass", "a girl on the grass", "a dog"],
                ["a crowd in the snow", "a dog runs", "a dog on the beach"]]
    concepts = ["person", "grass", "snow", "dog"]
    assert caption_counts(captions, concepts).tolist() == [[2, 2, 0, 1], [1, 0, 1, 2]]
    assert targets(captions, concepts, 2).tolist() == [[1, 1, 0, 0], [0, 0, 0, 1]]


def test_imagenet_mapped_detectors_are_kept_only_where_they_beat_the_head():
    from altbeam.model.data.concepts import CONCEPTS
    y = np.array([[1, 1, 1], [0, 0, 0], [1, 1, 0], [0, 0, 1]], np.float32)
    det = np.array([[.9, .9, .1], [.1, .1, .9], [.8, .8, .2], [.2, .2, .8]])
    head = np.zeros((4, len(CONCEPTS)), np.float32)
    head[:, CONCEPTS.index("dog")] = [.9, .1, .9, .1]      # ImageNet knows dogs: perfect
    head[:, CONCEPTS.index("beach")] = [.1, .9, .1, .9]    # and beaches badly
    keep, comparison = keep_over_imagenet(y, det, head, ["dog", "beach", "grass"], 0.05)
    assert keep == [1, 2]          # beach beats the head, grass has no ImageNet class
    assert comparison["dog"]["imagenet_AP"] == 1.0
    assert keep_over_imagenet(y, det, None, ["dog", "grass"], 0.05)[0] == [1]


def test_average_precision():
    assert average_precision(np.array([1, 0, 1, 0.]), np.array([.9, .8, .7, .1])) == \
        pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision(np.zeros(3), np.ones(3)))
