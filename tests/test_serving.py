"""The exported SavedModel honours the serving contract and matches the in-memory model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from model.tiny import build_tiny_captioner


@pytest.fixture(scope="module")
def images():
    return tf.constant(np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = build_tiny_captioner(decoder="attention", beam_width=3)
    path = str(tmp_path_factory.mktemp("tiny") / "model")
    model.save(path, {"version": "test-1"})
    return model, path


def test_contract_signature_shapes_and_types(exported, images):
    _, path = exported
    loaded = tf.saved_model.load(path)  # no project code needed to serve
    fn = loaded.signatures["serving_default"]
    spec = fn.structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    out = fn(images=images)
    assert out["captions"].dtype == tf.string and out["captions"].shape == (3, 3)
    assert out["scores"].dtype == tf.float32 and out["scores"].shape == (3, 3)
    scores = out["scores"].numpy()
    assert np.isfinite(scores).all() and (scores <= 0).all(), "per-word log-probabilities"
    card = json.load(open(f"{path}/model_card.json"))
    assert card["image_size"] == 32 and card["beam_width"] == 3 and card["version"] == "test-1"


def test_reloaded_model_gives_identical_outputs(exported, images):
    model, path = exported
    loaded = tf.saved_model.load(path).signatures["serving_default"](images=images)
    direct = model.serve(images)
    np.testing.assert_array_equal(loaded["captions"].numpy(), direct["captions"].numpy())
    np.testing.assert_allclose(loaded["scores"].numpy(), direct["scores"].numpy(), atol=1e-5)


def test_attention_signature_weights_sum_to_one_per_word(exported, images):
    _, path = exported
    out = tf.saved_model.load(path).signatures["caption_with_attention"](images=images)
    att, words = out["attention"].numpy(), out["words"].numpy()
    assert att.shape[:2] == words.shape and att.shape[2:] == (4, 4)
    spoken = words != b""
    assert spoken.any()
    np.testing.assert_allclose(att.sum(axis=(2, 3))[spoken], 1.0, atol=1e-5)
    joined = [b" ".join(w for w in row if w) for row in words]
    assert joined == list(out["captions"].numpy()[:, 0])


def test_float16_weights_halve_size_and_keep_captions(tmp_path, images):
    model = build_tiny_captioner(vocab_size=24)
    before = model.serve(images)
    model.decoder.to_float16()
    after = model.serve(images)
    np.testing.assert_allclose(before["scores"], after["scores"], atol=0.05)
    model.save(str(tmp_path / "f16"))
    again = tf.saved_model.load(str(tmp_path / "f16")).signatures["serving_default"](images=images)
    np.testing.assert_array_equal(after["captions"].numpy(), again["captions"].numpy())


def test_show_and_tell_variant_exports(tmp_path, images):
    model = build_tiny_captioner(decoder="show_and_tell")
    model.save(str(tmp_path / "sat"))
    out = tf.saved_model.load(str(tmp_path / "sat")).signatures["serving_default"](images=images)
    assert out["captions"].shape == (3, 3)
