"""Decoder ensembles: averaged word distributions, same search, same export contract."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from model.beam_search import beam_search
from model.decoder import CaptionDecoder
from model.ensemble import DecoderEnsemble, load_runs
from model.evaluate import main as evaluate_main
from model.export import build_encoder_for, export
from model.tiny import TINY_WORDS, tiny_config
from model.vocab import SPECIALS, START_ID, Vocabulary


def _decoder(seed, **overrides):
    dec = CaptionDecoder(tiny_config(seed=seed, **overrides))
    dec.out_word.assign(dec.out_word * 3.0)  # distinct, confident members
    return dec


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
    members = [_decoder(1), _decoder(2, lstm_units=40, attention_units=8),
               _decoder(3, decoder="show_and_tell")]
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
    dec, feats = _decoder(4), _features(seed=1)
    alone = beam_search(dec, feats, 3, 8, 1.0, ban_unk=True)
    for ens in (DecoderEnsemble([dec]), DecoderEnsemble([dec, dec])):
        out = beam_search(ens, feats, 3, 8, 1.0, ban_unk=True)
        np.testing.assert_array_equal(out["tokens"].numpy(), alone["tokens"].numpy())
        np.testing.assert_allclose(out["scores"].numpy(), alone["scores"].numpy(), rtol=1e-5)


def test_members_must_share_vocabulary_and_features():
    with pytest.raises(ValueError, match="member 2 has vocab_size=30"):
        DecoderEnsemble([_decoder(1), _decoder(2, vocab_size=30)])
    with pytest.raises(ValueError, match="feature_channels"):
        DecoderEnsemble([_decoder(1), _decoder(2, feature_channels=8)])
    with pytest.raises(ValueError, match="at least one"):
        DecoderEnsemble([])


def _fake_run(path, seed, words=None, **overrides):
    """A run folder as `altbeam train` leaves it: config, vocab, best checkpoint."""
    dec = _decoder(seed, **overrides)
    os.makedirs(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        f.write(dec.config.to_json())
    Vocabulary(words or list(SPECIALS) + TINY_WORDS).save(os.path.join(path, "vocab.json"))
    json.dump([{"epoch": 1, "loss": 3.0, "val_cider": 0.1}],
              open(os.path.join(path, "history.json"), "w"))
    tf.train.Checkpoint(decoder=dec).write(os.path.join(path, "best", "ckpt"))
    return str(path)


def test_two_runs_export_as_one_ensemble_model(tmp_path):
    runs = [_fake_run(tmp_path / "a", 1), _fake_run(tmp_path / "b", 2, lstm_units=40)]
    out = export(runs, str(tmp_path / "model"), beam_width=2)
    card = json.load(open(f"{out}/model_card.json"))
    assert card["ensemble"] == 2 and card["version"].endswith("-attention-x2")
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

    # The exported graph searches exactly as the ensemble does in Python (float16 storage).
    ens, _, config = load_runs(runs)
    ens.to_float16()
    encoder_out = build_encoder_for(config)(tf.cast(images, tf.float32))
    feats = tf.reshape(encoder_out, [2, 16, 16])
    expected = beam_search(ens, feats, 2, 8, card["length_alpha"], ban_unk=True)
    np.testing.assert_allclose(result["scores"].numpy(), expected["scores"].numpy(), rtol=1e-4)


def test_runs_with_different_vocabularies_are_refused_with_the_fix(tmp_path):
    a = _fake_run(tmp_path / "a", 1)
    b = _fake_run(tmp_path / "b", 2, words=list(SPECIALS) + TINY_WORDS[::-1])
    with pytest.raises(ValueError, match="different vocabulary.*--vocab"):
        load_runs([a, b])


def _write_dev_shard(folder, n=4, grid=4, channels=16):
    """A feature shard in the format `altbeam features` writes (random features)."""
    os.makedirs(os.path.join(folder, "dev"))
    rng = np.random.default_rng(0)
    b = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=v))  # noqa: E731
    i = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=v))  # noqa: E731
    with tf.io.TFRecordWriter(os.path.join(folder, "dev", "features-00000-of-00001.tfrecord")) as w:
        for k in range(n):
            feats = rng.normal(size=(grid * grid, channels)).astype("<f2")
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "image_id": b([f"img{k}".encode()]), "features": b([feats.tobytes()]),
                "grid": i([grid]), "channels": i([channels]),
                "captions": b([b"a dog on the grass", b"a dog runs"])})).SerializeToString())


def test_evaluate_scores_an_ensemble_of_runs_on_cached_features(tmp_path, capsys):
    runs = [_fake_run(tmp_path / "a", 1), _fake_run(tmp_path / "b", 2)]
    _write_dev_shard(str(tmp_path / "features"))
    assert evaluate_main(["--run", *runs, "--features", str(tmp_path / "features"),
                          "--split", "dev", "--no-baselines", "--tokenizer", "simple",
                          "--out", str(tmp_path / "s.json")]) == 0
    report = json.load(open(tmp_path / "s.json"))
    (name,) = report["scores"]
    assert name.startswith("ensemble of 2") and report["images"] == 4
    assert 0.0 <= report["scores"][name]["BLEU-1"] <= 1.0
    assert "ensemble of 2" in capsys.readouterr().out
