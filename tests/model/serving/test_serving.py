"""The exported SavedModel honours the serving contract and matches the in-memory model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.nets.decoder import Int8Weight
from altbeam.model.serving.captioner import Captioner
from tests.support.tiny import build_tiny_captioner


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


def _serve_converted(model: Captioner, images, before, path: str):
    """Serve with the decoder's converted weights, check they are really in use and close
    to ``before``, save, reload: returns (served, reloaded) outputs, same captions."""
    # A rebuilt Captioner: a traced tf.function keeps the variables it captured.
    model = Captioner(model.encoder, model.decoder, [w.decode() for w in model.words.numpy()],
                      model.config)
    after = model.serve(images)
    assert not np.array_equal(before["scores"], after["scores"]), "converted weights not in use"
    np.testing.assert_allclose(before["scores"], after["scores"], atol=0.05)
    model.save(path)
    again = tf.saved_model.load(path).signatures["serving_default"](images=images)
    np.testing.assert_array_equal(after["captions"].numpy(), again["captions"].numpy())
    return after, again


def test_float16_weights_halve_size_and_keep_captions(tmp_path, images):
    model = build_tiny_captioner(vocab_size=24)
    before = model.serve(images)
    model.decoder.to_float16()
    _serve_converted(model, images, before, str(tmp_path / "f16"))


def test_int8_weight_round_trips_within_half_a_step():
    w = np.random.default_rng(2).normal(size=(40, 7)).astype(np.float32)
    w[:, 3] = 0.0  # an all-zero column must not divide by zero
    for per_row, axis in ((False, 0), (True, 1)):
        stored = Int8Weight(w, per_row=per_row)
        assert stored.q.dtype == tf.int8 and stored.shape == (40, 7)
        step = np.abs(w).max(axis=axis, keepdims=True) / 127
        step[step == 0] = 1.0
        assert (np.abs(stored.dequantize().numpy() - w) <= step / 2 + 1e-7).all()
        # The peak of each column (row) uses the full int8 range.
        peaks = np.abs(stored.q.numpy()).max(axis=axis)
        assert set(peaks.tolist()) == ({127, 0} if not per_row else {127})


def test_int8_weights_quarter_the_decoder_and_keep_scores(tmp_path, images):
    model = build_tiny_captioner(vocab_size=24)
    before = model.serve(images)
    float32_bytes = sum(v.numpy().nbytes for v in model.decoder.variables
                        if v.shape.rank == 2 and v.shape[0] > 2)
    model.decoder.to_int8()
    stored = {v.dtype: [] for v in model.decoder.variables}
    for v in model.decoder.variables:
        stored[v.dtype].append(v)
    assert sum(v.numpy().nbytes for v in stored[tf.int8]) == float32_bytes // 4
    # What stays float32 is one scale per column (per row for the embedding).
    assert all(1 in v.shape for v in stored[tf.float32])
    assert set(stored) == {tf.int8, tf.float32, tf.float16}
    after, again = _serve_converted(model, images, before, str(tmp_path / "int8"))
    np.testing.assert_allclose(after["scores"].numpy(), again["scores"].numpy(), atol=1e-6)


def test_show_and_tell_variant_exports(tmp_path, images):
    model = build_tiny_captioner(decoder="show_and_tell")
    model.save(str(tmp_path / "sat"))
    out = tf.saved_model.load(str(tmp_path / "sat")).signatures["serving_default"](images=images)
    assert out["captions"].shape == (3, 3)
