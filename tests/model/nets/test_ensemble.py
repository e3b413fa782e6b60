"""Decoder ensembles: averaged word distributions, same search, same export contract."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.vocab import SPECIALS, START_ID
from altbeam.model.evaluation.evaluate import main as evaluate_main
from altbeam.model.nets.ensemble import DecoderEnsemble, load_runs
from altbeam.model.serving.beam_search import beam_search
from altbeam.model.serving.export import build_encoder_for, export
from tests.support.fake_runs import fake_run, tiny_decoder, write_feature_shard
from tests.support.tiny import TINY_WORDS


def _features(n=3, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(n, 16, 16)).astype(np.float32))


def _run_member(dec, feats, words):
    f, proj = dec.prepare(feats)
    h, c = dec.init_state(f)
    out = []
    for w in words:
        logits, h, c, alpha = dec.step(tf.constant(w), h, c, f, proj)
        out.append((tf.nn.softmax(logits).numpy(), alpha.numpy()))
    return out


def test_each_step_is_the_mean_of_the_members_distributions():
    # Different sizes and variants: the packed state must split back exactly.
    members = [tiny_decoder(1), tiny_decoder(2, lstm_units=40, attention_units=8),
               tiny_decoder(3, decoder="show_and_tell")]
    ens = DecoderEnsemble(members)
    feats = _features()
    words = [[START_ID] * 3, [5, 6, 7], [8, 8, 9]]
    per_member = [_run_member(m, feats, words) for m in members]
    f, proj = ens.prepare(feats)
    h, c = ens.init_state(f)
    for t, w in enumerate(words):
        log_mix, h, c, alpha = ens.step(tf.constant(w), h, c, f, proj)
        expected = np.mean([pm[t][0] for pm in per_member], axis=0)
        np.testing.assert_allclose(np.exp(log_mix.numpy()), expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(alpha.numpy(), np.mean([pm[t][1] for pm in per_member], 0),
                                   rtol=1e-5, atol=1e-7)
    # The mixture is a real distribution, and differs from every member alone.
    np.testing.assert_allclose(np.exp(log_mix.numpy()).sum(-1), 1.0, rtol=1e-5)
    assert all(not np.allclose(np.exp(log_mix.numpy()), pm[-1][0], atol=1e-3)
               for pm in per_member)


def test_one_member_or_two_copies_search_exactly_like_the_decoder_alone():
    dec, feats = tiny_decoder(4), _features(seed=1)
    alone = beam_search(dec, feats, 3, 8, 1.0, ban_unk=True)
    for ens in (DecoderEnsemble([dec]), DecoderEnsemble([dec, dec])):
        out = beam_search(ens, feats, 3, 8, 1.0, ban_unk=True)
        np.testing.assert_array_equal(out["tokens"].numpy(), alone["tokens"].numpy())
        np.testing.assert_allclose(out["scores"].numpy(), alone["scores"].numpy(), rtol=1e-5)


def test_members_must_share_vocabulary_and_features():
    with pytest.raises(ValueError, match="member 2 has vocab_size=30"):
        DecoderEnsemble([tiny_decoder(1), tiny_decoder(2, vocab_size=30)])
    with pytest.raises(ValueError, match="feature_channels"):
        DecoderEnsemble([tiny_decoder(1), tiny_decoder(2, feature_channels=8)])
    with pytest.raises(ValueError, match="at least one"):
        DecoderEnsemble([])


@pytest.mark.parametrize("weights", ["float16", "int8"])
def test_two_runs_export_as_one_ensemble_model(tmp_path, weights):
    runs = [fake_run(tmp_path / "a", 1), fake_run(tmp_path / "b", 2, lstm_units=40)]
    out = export(runs, str(tmp_path / "model"), beam_width=2, block_repeated_trigrams=True,
                 weights=weights)
    card = json.load(open(f"{out}/model_card.json"))
    assert card["weights_dtype"].startswith(weights)
    assert card["ensemble"] == 2 and card["version"].endswith("-attention-x2")
    assert card["block_repeated_trigrams"] is True
    assert set(card["training"]["runs"]) == {"a", "b"}
    loaded = tf.saved_model.load(out)
    images = tf.constant(np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)), tf.uint8)
    result = loaded.signatures["serving_default"](images=images)
    assert result["captions"].shape == (2, 2)
    for caption in result["captions"].numpy().ravel():
        assert caption and set(caption.decode().split()) <= set(TINY_WORDS)
    att = loaded.signatures["caption_with_attention"](images=images)["attention"].numpy()
    live = att.sum(axis=(2, 3)) > 0
    np.testing.assert_allclose(att.sum(axis=(2, 3))[live], 1.0, rtol=1e-4)

    # The exported graph searches exactly as the ensemble does in Python (same storage).
    ens, _, config = load_runs(runs)
    ens.to_int8() if weights == "int8" else ens.to_float16()
    encoder_out = build_encoder_for(config)(tf.cast(images, tf.float32))
    feats = tf.reshape(encoder_out, [2, 16, 16])
    expected = beam_search(ens, feats, 2, 8, card["length_alpha"], ban_unk=True,
                           block_repeated_trigrams=True)
    np.testing.assert_allclose(result["scores"].numpy(), expected["scores"].numpy(), rtol=1e-4)


def test_runs_with_different_vocabularies_are_refused_with_the_fix(tmp_path):
    a = fake_run(tmp_path / "a", 1)
    b = fake_run(tmp_path / "b", 2, words=list(SPECIALS) + TINY_WORDS[::-1])
    with pytest.raises(ValueError, match="different vocabulary.*--vocab"):
        load_runs([a, b])


def test_evaluate_scores_an_ensemble_of_runs_on_cached_features(tmp_path, capsys):
    runs = [fake_run(tmp_path / "a", 1), fake_run(tmp_path / "b", 2)]
    write_feature_shard(str(tmp_path / "features"), "dev",
                        [["a dog on the grass", "a dog runs"]] * 4)
    assert evaluate_main(["--run", *runs, "--features", str(tmp_path / "features"),
                          "--split", "dev", "--no-baselines", "--tokenizer", "simple",
                          "--out", str(tmp_path / "s.json")]) == 0
    report = json.load(open(tmp_path / "s.json"))
    (name,) = report["scores"]
    assert name.startswith("ensemble of 2") and report["images"] == 4
    assert 0.0 <= report["scores"][name]["BLEU-1"] <= 1.0
    assert "ensemble of 2" in capsys.readouterr().out
