"""The bundled default model honours the serving contract and captions sensibly."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model import DEFAULT_MODEL_DIR
from altbeam.pipelines.caption.decode import decode_image

MODEL = pathlib.Path(DEFAULT_MODEL_DIR)
pytestmark = pytest.mark.skipif(not (MODEL / "saved_model.pb").exists(),
                                reason=f"no bundled default model at {MODEL}")


@pytest.fixture(scope="module")
def card():
    return json.loads((MODEL / "model_card.json").read_text())


@pytest.fixture(scope="module")
def captions(sample_photos, card):
    fn = tf.saved_model.load(str(MODEL)).signatures["serving_default"]
    names = ["000000017029.jpg", "000000173350.jpg", "000000000785.jpg", "000000007511.jpg"]
    size = card["image_size"]
    pixels = np.stack([decode_image((sample_photos / n).read_bytes(), size, n).pixels
                       for n in names])
    out = fn(images=tf.constant(pixels))
    return dict(zip(names, out["captions"].numpy())), out["scores"].numpy()


def test_card_states_data_settings_and_scores(card):
    for key in ("version", "backbone", "image_size", "beam_width", "vocab_size",
                "training_data", "evaluation", "training_time_seconds", "size_bytes"):
        assert key in card, key
    assert card["image_size"] == 224 and card["backbone"] == "lite0"
    model = card["evaluation"]["model"]
    baselines = card["evaluation"]["baselines"]
    assert model["CIDEr"] > 1.5 * baselines["nearest-neighbour"]["CIDEr"]
    size = sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file())
    assert size < 60 * 2**20, f"bundled model is {size / 2**20:.1f} MiB"


def test_contract_shapes_and_sensible_captions(captions, card):
    by_name, scores = captions
    k = card["beam_width"]
    assert scores.shape == (4, k) and np.isfinite(scores).all() and (scores < 0).all()
    for name, beams in by_name.items():
        assert len(beams) == k
        for caption in beams:
            words = caption.decode().split()
            assert 2 <= len(words) <= card["max_length"] and "<unk>" not in words, name
    # Photos of dogs are captioned as dogs; the skier as snow/skiing.
    assert b"dog" in by_name["000000017029.jpg"][0]
    assert b"dog" in by_name["000000173350.jpg"][0]
    assert any(w in by_name["000000000785.jpg"][0] for w in (b"snow", b"ski"))


def test_card_states_grounding_targets_met_or_missed(card):
    """Issue 17's targets with what was measured: a miss is said, never rounded away."""
    grounding = card["evaluation"]["grounding"]
    assert {t["set"] for t in grounding["targets"]} == {"coco", "flickr8k_dev"}
    for t in grounding["targets"]:
        kind, value = t["target"].split(" ")
        measured = grounding["sets"][t["set"]][t["figure"]]
        assert measured == t["measured"]
        assert t["met"] == (measured <= float(value) if kind == "≤" else measured >= float(value))
    for figures in grounding["sets"].values():
        assert sum(figures["statuses"].values()) == figures["images"]
        assert 0 <= figures["CHAIR-s among ok"] <= 1 and 0 < figures["share ok"] <= 1
