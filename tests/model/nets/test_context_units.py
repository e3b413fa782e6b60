"""A narrower attention context (ModelConfig.context_units, issue 21): the grid projected
once per image, a smaller LSTM kernel at every step; trained, ensembled, exported and
rebuilt like the full-width decoder."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.nets.decoder import CaptionDecoder
from altbeam.model.nets.ensemble import DecoderEnsemble
from altbeam.model.serving.beam_search import beam_search
from altbeam.model.serving.export import export, export_from_saved_model
from altbeam.model.training.train import ModelConfig, train
from tests.model.serving.test_concept_export import photos, serve  # noqa: F401 (fixture)
from tests.model.training.test_train import features_dir  # noqa: F401 (fixture)
from tests.support.fake_runs import fake_run
from tests.support.tiny import tiny_config


def _features(n: int = 3, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(0, 1, (n, 16, 16)), tf.float32)


def test_the_lstm_reads_the_projected_context_and_attention_reads_the_projection():
    wide, narrow = CaptionDecoder(tiny_config()), CaptionDecoder(tiny_config(context_units=6))
    E, U, C = 16, 24, 16
    assert wide.lstm_kernel.shape == (E + C + U, 4 * U)
    assert narrow.lstm_kernel.shape == (E + 6 + U, 4 * U)
    assert narrow.context_proj.shape == (C, 6) and narrow.out_context.shape == (6, E)
    assert not hasattr(wide, "context_proj")
    # Drawn last: without context_units the weights are as they always were.
    np.testing.assert_array_equal(CaptionDecoder(tiny_config()).att_feat, wide.att_feat)

    features = _features()
    feats, projected = narrow.prepare(features)
    assert projected.shape == (3, 16, narrow.projected_width) and narrow.projected_width == 12 + 6
    h, c = narrow.init_state(feats)
    logits, h2, _, alpha = narrow.step(tf.constant([1, 1, 1]), h, c, feats, projected)
    # The context is the attention-weighted projected grid: changing the projection
    # changes the next word's logits, the raw grid passed alongside is not read again.
    narrow.context_proj.assign(narrow.context_proj * 2.0)
    again, *_ = narrow.step(tf.constant([1, 1, 1]), h, c, feats, narrow.prepare(features)[1])
    assert not np.allclose(logits, again)
    same, *_ = narrow.step(tf.constant([1, 1, 1]), h, c, tf.zeros_like(feats),
                           narrow.prepare(features)[1])
    np.testing.assert_allclose(same, again, atol=1e-6)
    np.testing.assert_allclose(tf.reduce_sum(alpha, -1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="context_units needs the attention decoder"):
        CaptionDecoder(tiny_config(decoder="merge", context_units=6))


def test_narrow_wide_and_concept_reading_members_ensemble_and_search():
    T = len(CONCEPTS)
    members = [CaptionDecoder(tiny_config(seed=1, context_units=6)),
               CaptionDecoder(tiny_config(seed=2)),
               CaptionDecoder(tiny_config(seed=3, context_units=8, concept_inputs=True,
                                          concept_count=T))]
    ensemble = DecoderEnsemble(members)
    scores = np.random.default_rng(1).uniform(0, 1, (3, T)).astype(np.float32)
    out = beam_search(ensemble, _features(), 2, 6, concept_scores=scores)
    assert out["tokens"].shape == (3, 2, 6)
    assert np.isfinite(out["scores"]).all()
    # Each member reads its own slice of the packed per-image tensor: the ensemble's
    # first step equals the mean of its members' probabilities.
    feats, projected = ensemble.prepare(_features(), concepts=scores)
    h, c = ensemble.init_state(feats)
    words = tf.constant([1, 1, 1])
    mixed, *_ = ensemble.step(words, h, c, feats, projected)
    probs = []
    for m in members:
        f, p = m.prepare(_features(), concepts=scores)
        mh, mc = m.init_state(f)
        probs.append(tf.nn.softmax(m.step(words, mh, mc, f, p)[0]))
    np.testing.assert_allclose(tf.exp(mixed), tf.add_n(probs) / 3, rtol=1e-4, atol=1e-6)


def test_a_narrow_context_trains_exports_and_rebuilds(features_dir, tmp_path, photos):  # noqa: F811
    config = ModelConfig(context_units=8, embedding_dim=16, lstm_units=32, attention_units=16,
                         dropout=0.0, batch_size=8, epochs=2, min_word_count=1, max_length=8,
                         learning_rate=3e-3, patience=5)
    run = str(tmp_path / "run")
    result = train(config, features_dir, run, val_images=3)
    assert result["config"]["context_units"] == 8
    assert result["history"][1]["loss"] < result["history"][0]["loss"]

    runs = [run, fake_run(tmp_path / "fake", seed=2, context_units=4)]
    model = export(runs[1], str(tmp_path / "model"), weights="int8", beam_width=2)
    rebuilt = export_from_saved_model(model, str(tmp_path / "rebuilt"))
    card = json.load(open(os.path.join(rebuilt, "model_card.json")))
    assert card["config"]["context_units"] == 4
    before, after = serve(model, photos), serve(rebuilt, photos)
    np.testing.assert_array_equal(after["captions"], before["captions"])
    np.testing.assert_allclose(after["scores"], before["scores"], atol=1e-5)
    trained = export(run, str(tmp_path / "trained"), beam_width=2)
    assert json.load(open(os.path.join(trained, "model_card.json")))["config"]["context_units"] == 8
