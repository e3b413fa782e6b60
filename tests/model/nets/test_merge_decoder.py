"""The merge decoder (`--decoder merge`): the Keras tutorials' architecture, step by step,
trained, ensembled, exported and rebuilt through the same contract as the others."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.vocab import END_ID, SPECIALS, START_ID, Vocabulary
from altbeam.model.nets.ensemble import DecoderEnsemble
from altbeam.model.serving.beam_search import beam_search
from altbeam.model.serving.export import export, export_from_saved_model
from altbeam.model.serving.saved_model import LoadedModel
from altbeam.model.training.train import ModelConfig, parse_args, train
from tests.support.fake_runs import fake_run, tiny_decoder, write_feature_shard
from tests.support.tiny import TINY_WORDS, tiny_config

WORDS = list(SPECIALS) + TINY_WORDS


def _features(n=3, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(n, 16, 16)).astype(np.float32))


def _keras_merge_model(dec, prefix_length: int):
    """Brownlee's define_model (inference: no dropout) with ``dec``'s weights."""
    import keras
    c = dec.config
    E, U = c.embedding_dim, c.lstm_units
    image = keras.Input((c.feature_channels,))
    fe2 = keras.layers.Dense(U, activation="relu")
    words = keras.Input((prefix_length,), dtype="int32")
    se1 = keras.layers.Embedding(c.vocab_size, E)
    se3 = keras.layers.LSTM(U)
    decoder2 = keras.layers.Dense(U, activation="relu")
    outputs = keras.layers.Dense(c.vocab_size)  # logits: the softmax is the loss's
    merged = keras.layers.add([fe2(image), se3(se1(words))])
    model = keras.Model([image, words], outputs(decoder2(merged)))
    kernel = dec.lstm_kernel.numpy()
    fe2.set_weights([dec.merge_image.numpy(), dec.merge_image_bias.numpy()])
    se1.set_weights([dec.embedding.numpy()])
    # Keras LSTM: kernel [E, 4U] and recurrent kernel [U, 4U], gates i, f, c, o as ours.
    se3.set_weights([kernel[:E], kernel[E:], dec.lstm_bias.numpy()])
    decoder2.set_weights([dec.merge_hidden.numpy(), dec.merge_hidden_bias.numpy()])
    outputs.set_weights([dec.out_word.numpy(), dec.out_bias.numpy()])
    return model


def test_steps_equal_teacher_forcing_and_the_keras_merge_model():
    dec = tiny_decoder(1, decoder="merge")
    feats = _features()
    tokens = tf.constant([[START_ID, 5, 6, 7, END_ID], [START_ID, 8, 9, END_ID, 0],
                          [START_ID, 5, 5, 5, 5]])
    forced, alpha = dec.teacher_forced(feats, tokens)
    f, proj = dec.prepare(feats)
    h, c = dec.init_state(f)
    assert not np.any(h.numpy()) and not np.any(c.numpy()), "a Keras LSTM starts from zeros"
    pooled = tf.reduce_mean(feats, axis=1).numpy()
    for t in range(tokens.shape[1] - 1):
        logits, h, c, step_alpha = dec.step(tokens[:, t], h, c, f, proj)
        np.testing.assert_allclose(logits.numpy(), forced[:, t].numpy(), rtol=1e-5, atol=1e-5)
        keras_logits = _keras_merge_model(dec, t + 1)([pooled, tokens[:, :t + 1].numpy()])
        np.testing.assert_allclose(logits.numpy(), np.asarray(keras_logits), rtol=1e-4,
                                   atol=1e-4)
    np.testing.assert_allclose(alpha.numpy(), 1.0 / 16)  # no attention: uniform weights
    assert not hasattr(dec, "init_h"), "no unused initial-state weights"


def _tiny_features(tmp_path) -> str:
    folder = str(tmp_path / "features")
    captions = [["a dog on the grass", "a dog running on the grass"],
                ["a man in the water", "two man in the water"],
                ["a red ball on the street", "a red ball in the street"]]
    write_feature_shard(folder, "train", captions * 6)
    return folder


def test_merge_trains_with_glove_rows_and_exports_through_the_contract(tmp_path):
    glove = tmp_path / "glove.txt"
    glove.write_text("dog " + " ".join(["0.5"] * 8) + "\nzebra " + " ".join(["1"] * 8) + "\n")
    config = ModelConfig(decoder="merge", embedding_dim=8, lstm_units=16, dropout=0.5,
                         batch_size=8, epochs=3, min_word_count=1, max_length=8,
                         learning_rate=1e-2, patience=5)
    run = str(tmp_path / "run")
    result = train(config, _tiny_features(tmp_path), run, val_images=3, glove=str(glove))
    losses = [h["loss"] for h in result["history"]]
    assert losses[-1] < losses[0]
    saved = json.load(open(f"{run}/config.json"))
    assert saved["decoder"] == "merge"

    from altbeam.model.training.common import load_decoder
    dec, vocab, _ = load_decoder(run)
    # The GloVe row was the starting point: training moved it, but not far from 0.5.
    row = dec.embedding.numpy()[vocab.index["dog"]]
    assert np.abs(row - 0.5).max() < 0.2 and "zebra" not in vocab.index

    out = export(run, str(tmp_path / "model"), beam_width=2, weights="int8")
    card = json.load(open(f"{out}/model_card.json"))
    assert card["version"].endswith("-merge") and card["weights_dtype"].startswith("int8")
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    model = LoadedModel(out)
    outputs = model.predict(images)
    assert outputs.captions.shape == (3, 2) and outputs.scores.shape == (3, 2)
    assert (outputs.scores <= 0).all() and np.isfinite(outputs.scores).all()
    for caption in outputs.captions.ravel():
        assert caption and set(caption.decode().split()) <= set(vocab.words)

    # Rebuilt from the SavedModel alone (runs gone): the same captions and scores.
    again = LoadedModel(export_from_saved_model(out, str(tmp_path / "again"))).predict(images)
    np.testing.assert_array_equal(again.captions, outputs.captions)
    np.testing.assert_allclose(again.scores, outputs.scores, atol=1e-6)


def test_glove_initialises_the_merge_embedding_rows():
    from altbeam.model.nets.decoder import CaptionDecoder
    vocab = Vocabulary(WORDS)
    matrix = np.zeros((len(WORDS), 16), np.float32)
    matrix[vocab.index["dog"]] = 0.25
    dec = CaptionDecoder(tiny_config(decoder="merge"), matrix)
    np.testing.assert_array_equal(dec.embedding.numpy()[vocab.index["dog"]], 0.25)


def test_merge_mixes_with_attention_in_an_ensemble(tmp_path):
    merge, attention = tiny_decoder(1, decoder="merge"), tiny_decoder(2)
    ens = DecoderEnsemble([merge, attention])
    feats = _features(seed=3)
    f, proj = ens.prepare(feats)
    h, c = ens.init_state(f)
    fm, pm = merge.prepare(feats)
    hm, cm = merge.init_state(fm)
    fa, pa = attention.prepare(feats)
    ha, ca = attention.init_state(fa)
    for w in ([START_ID] * 3, [5, 6, 7]):
        mixed, h, c, _ = ens.step(tf.constant(w), h, c, f, proj)
        lm, hm, cm, _ = merge.step(tf.constant(w), hm, cm, fm, pm)
        la, ha, ca, _ = attention.step(tf.constant(w), ha, ca, fa, pa)
        expected = (tf.nn.softmax(lm) + tf.nn.softmax(la)).numpy() / 2
        np.testing.assert_allclose(np.exp(mixed.numpy()), expected, rtol=1e-5, atol=1e-7)
    out = beam_search(ens, feats, 3, 8, 1.0, ban_unk=True)
    assert out["tokens"].shape == (3, 3, 8)

    runs = [fake_run(tmp_path / "m", 1, decoder="merge"), fake_run(tmp_path / "a", 2)]
    model = LoadedModel(export(runs, str(tmp_path / "model"), beam_width=2))
    images = np.zeros((2, 32, 32, 3), np.uint8)
    assert model.predict(images).captions.shape == (2, 2)


def test_train_cli_takes_merge_and_refuses_an_unknown_decoder(capsys):
    args = parse_args(["--features", "f", "--out", "o", "--decoder", "merge"])
    assert args.decoder == "merge"
    with pytest.raises(SystemExit):
        parse_args(["--features", "f", "--out", "o", "--decoder", "mrege"])
    assert "invalid choice: 'mrege'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown decoder 'mrege'"):
        tiny_decoder(1, decoder="mrege")
