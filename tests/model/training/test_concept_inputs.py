"""A decoder that reads concept scores (ModelConfig.concept_inputs): text-only captions'
concepts, the decoder's concept path, `altbeam train --concept-inputs` end to end, and
export with the head it was trained on."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.data.vocab import Vocabulary
from altbeam.model.nets.concept_head import ConceptHead, Detectors
from altbeam.model.nets.decoder import CaptionDecoder, reads_concepts
from altbeam.model.nets.ensemble import DecoderEnsemble
from altbeam.model.serving.beam_search import beam_search, tokens_to_text
from altbeam.model.serving.caption_status import covered_concepts
from altbeam.model.serving.export import export, export_from_saved_model
from altbeam.model.serving.saved_model import LoadedModel
from altbeam.model.training.concept_inputs import (
    ABSENT,
    COPY_INIT,
    PRESENT,
    copy_table,
    noisy_concept_scores,
    text_concept_ids,
)
from altbeam.model.training.train import train
from tests.support.fake_runs import write_feature_shard
from tests.support.tiny import tiny_config

COLUMN = {c: t for t, c in enumerate(CONCEPTS)}
T = len(CONCEPTS)


def tiny_head(detectors: Detectors | None = None) -> ConceptHead:
    rng = np.random.default_rng(5)
    return ConceptHead(rng.normal(0, 1, (16, 1000)), rng.normal(0, 1, 1000), detectors, 6)


def one_hot(*concepts: str, score: float = 0.9) -> np.ndarray:
    row = np.zeros((1, T), np.float32)
    for c in concepts:
        row[0, COLUMN[c]] = score
    return row


def test_a_caption_sets_the_judgeable_concepts_it_names_and_person_for_a_man():
    covered = covered_concepts()
    ids = text_concept_ids("A man and a brown bear near two zebras on the grass", covered)
    named = {CONCEPTS[i] for i in ids}
    # "man" is judged as person (the head has no "man" score); bear, zebra, grass are covered.
    assert named == {"person", "bear", "zebra", "grass"}
    assert text_concept_ids("a zebra", frozenset({"horse"})).size == 0  # not judgeable


def test_text_concept_scores_are_noisy_but_never_set_what_the_head_cannot_score():
    covered_ids = np.array([COLUMN[c] for c in ("bear", "dog", "cat", "grass", "person")])
    named = [np.array([COLUMN["bear"]]), np.array([], np.int32)] * 200
    rng = np.random.default_rng(0)
    scores = noisy_concept_scores(named, covered_ids, drop=0.25, rng=rng)
    assert scores.shape == (400, T)
    assert not scores[:, np.setdiff1d(np.arange(T), covered_ids)].any()
    bear = scores[::2, COLUMN["bear"]]
    seen = bear >= PRESENT[0]
    assert 0.6 < seen.mean() < 0.9                       # about a quarter missed
    assert (bear[~seen] <= ABSENT[1]).all()
    # A caption naming nothing still gets a few weak spurious scores, never a strong one.
    assert (scores[1::2] > 0).sum(axis=1).max() <= 2 and scores[1::2].max() <= ABSENT[1]
    always_missed = noisy_concept_scores(named[:2], covered_ids, 1.0, rng)
    assert always_missed[0, COLUMN["bear"]] <= ABSENT[1]


def test_the_decoder_reads_concepts_and_refuses_to_decode_without_them():
    config = tiny_config(concept_inputs=True, concept_count=T)
    dec = CaptionDecoder(config)
    assert reads_concepts(dec) and not reads_concepts(CaptionDecoder(tiny_config()))
    assert reads_concepts(DecoderEnsemble([CaptionDecoder(tiny_config()), dec]))
    features = tf.random.normal([2, 16, 16])
    tokens = tf.constant([[1, 4, 5, 2], [1, 6, 2, 0]])
    with pytest.raises(ValueError, match="pass concepts"):
        dec.teacher_forced(features, tokens)
    with_bear, _ = dec.teacher_forced(features, tokens, concepts=np.repeat(one_hot("bear"), 2, 0))
    with_cat, _ = dec.teacher_forced(features, tokens, concepts=np.repeat(one_hot("cat"), 2, 0))
    assert with_bear.shape == (2, 3, config.vocab_size)
    assert not np.allclose(with_bear, with_cat)
    for stored in (dec.to_float16(), CaptionDecoder(config).to_int8()):  # export storages
        out = beam_search(stored, features, 2, 5, concept_scores=np.repeat(one_hot("cat"), 2, 0))
        assert out["tokens"].shape == (2, 2, 5)
    with pytest.raises(ValueError, match="attention decoder"):
        CaptionDecoder(tiny_config(decoder="merge", concept_inputs=True, concept_count=T))


def test_the_concept_terms_made_once_per_image_are_the_ones_each_step_would_make():
    # prepare() multiplies the scores by concept_in / concept_out / concept_copy once per
    # image and folds the result across the grid cells; a step must then produce exactly
    # the logits of the per-step formula (Yao et al.'s copy path, the added inputs).
    config = tiny_config(concept_inputs=True, concept_count=T, vocab_size=23)  # 2E+V: not a multiple of L
    dec = CaptionDecoder(config)
    rng = np.random.default_rng(3)
    for w in (dec.concept_in, dec.concept_out, dec.concept_copy):
        w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    features = tf.random.normal([3, config.grid_cells, config.feature_channels], seed=1)
    scores = rng.uniform(0, 1, (3, T)).astype(np.float32)
    feats, projected = dec.prepare(features, concepts=scores)
    assert projected.shape[-1] == dec.projected_width
    h, c = dec.init_state(feats)
    words = tf.constant([1, 4, 5])
    logits, *_ = dec.step(words, h, c, feats, projected)

    x = tf.gather(dec.embedding, words)
    att = tf.einsum("blc,ca->bla", features, dec.att_feat)
    e = tf.tanh(att + (h @ dec.att_hidden)[:, None, :] + dec.att_bias)
    alpha = tf.nn.softmax(tf.squeeze(tf.einsum("bla,ak->blk", e, dec.att_score), -1))
    context = tf.sigmoid(h @ dec.gate + dec.gate_bias) * tf.einsum("bl,blc->bc", alpha, features)
    h2, _ = dec._lstm(tf.concat([x + scores @ dec.concept_in, context], -1), h, c)
    deep = x + h2 @ dec.out_hidden + context @ dec.out_context + scores @ dec.concept_out
    expected = tf.tanh(deep) @ dec.out_word + dec.out_bias + tf.sigmoid(
        h2 @ dec.copy_gate + dec.copy_gate_bias) * (scores @ dec.concept_copy)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def test_the_copy_path_starts_from_the_words_that_name_each_concept():
    words = ["<pad>", "a", "bear", "bears", "man", "red", "toilet"]
    table = copy_table(words)
    assert table.shape == (T, len(words))
    named = {w: {CONCEPTS[t] for t in np.flatnonzero(table[:, v])} for v, w in enumerate(words)}
    assert named == {"<pad>": set(), "a": set(), "bear": {"bear"}, "bears": {"bear"},
                     "man": {"man", "person"}, "red": set(), "toilet": {"toilet"}}
    assert set(table[table > 0]) == {COPY_INIT}
    # Through the decoder: the copy path raises the words of the concepts that score.
    config = tiny_config(concept_inputs=True, concept_count=T, vocab_size=len(words))
    dec = CaptionDecoder(config)
    features, tokens = tf.zeros([1, 16, 16]), tf.constant([[1, 5, 2]])
    before, _ = dec.teacher_forced(features, tokens, concepts=one_hot("bear"))
    dec.concept_copy.assign(table)
    after, _ = dec.teacher_forced(features, tokens, concepts=one_hot("bear"))
    rise = (after - before).numpy()[0, 0]
    assert rise[words.index("bear")] > 0.5 and rise[words.index("bears")] > 0.5
    assert rise[words.index("toilet")] == rise[words.index("a")] == 0


def test_text_per_image_draws_a_fresh_share_of_the_text_captions_each_epoch(tmp_path):
    from altbeam.model.data.feature_records import load_split
    from altbeam.model.training.concept_inputs import ConceptTeacherForcing
    feats = str(tmp_path / "features")
    write_feature_shard(feats, "train", [["a dog on the grass", "a dog"]] * 10)  # 20 captions
    data = load_split(feats, "train")
    vocab = Vocabulary.build(["a dog on the grass", "a bear"], min_count=1)
    text = [f"a bear {k}" for k in range(100)]

    def epoch_rows(share, epoch, rng):
        config = tiny_config(concept_inputs=True, concept_count=T, text_per_image=share,
                             vocab_size=len(vocab))
        trainer = ConceptTeacherForcing(config, tiny_head(), text)
        trainer.use_data(data, vocab)
        _, batches = trainer.begin_epoch(epoch, rng)
        return [i for batch in batches for i, _ in batch]

    rng = np.random.default_rng(0)
    first, second = epoch_rows(0.5, 1, rng), epoch_rows(0.5, 2, rng)
    for rows in (first, second):   # all 20 image captions, 10 text captions (0.5 each)
        assert sorted(r for r in rows if r >= 0) == sorted(list(range(10)) * 2)
        assert sum(r < 0 for r in rows) == 10 and len(set(rows) - set(range(10))) == 10
    assert {r for r in first if r < 0} != {r for r in second if r < 0}   # a fresh draw
    assert sum(r < 0 for r in epoch_rows(0.0, 1, rng)) == 100            # 0: all of them
    assert sum(r < 0 for r in epoch_rows(50.0, 1, rng)) == 100           # never repeated


@pytest.fixture(scope="module")
def concept_run(tmp_path_factory):
    """`train` with concept inputs: images whose captions never name a zebra or a bear,
    and text-only captions that do (their concepts from the text)."""
    tmp = tmp_path_factory.mktemp("concept_run")
    feats = str(tmp / "features")
    write_feature_shard(feats, "train", [["a dog on the grass", "a dog in the grass"],
                                         ["a man with a ball", "a man on the street"]] * 6)
    text = tmp / "text.json"
    text.write_text(json.dumps({f"{k}.jpg": ["a zebra on the grass", "a bear in the water"]
                                for k in range(40)} | {"eval.jpg": ["a cat on the grass"]}))
    held_back = tmp / "held_back.txt"
    held_back.write_text("eval.jpg\n")
    detectors = Detectors(np.random.default_rng(1).normal(0, 0.1, (16, 2)).astype(np.float32),
                          np.zeros(2, np.float32), ("person", "grass"), None, "test.npz")
    head = tiny_head(detectors)
    config = tiny_config(concept_inputs=True, epochs=12, batch_size=8, learning_rate=1e-2,
                         min_word_count=1, attention_penalty=0.0, max_length=6)
    run = str(tmp / "run")
    result = train(config, feats, run, val_images=2, concept_head=head,
                   concept_text=[str(text)], concept_text_exclude=[str(held_back)])
    return run, head, result, tmp


def test_training_learns_words_only_text_captions_have_and_says_them_from_concepts(concept_run):
    run, head, result, _ = concept_run
    record = json.load(open(f"{run}/concept_inputs.json"))
    assert record["text_captions"] == 80 and record["images_dropped"] == 1
    assert record["detectors"] == "test.npz" and record["imagenet_weights"] == "imagenet"
    vocab = Vocabulary.load(f"{run}/vocab.json")
    assert {"zebra", "bear"} <= set(vocab.words) and "cat" not in vocab.words
    assert result["config"]["concept_inputs"] and result["config"]["concept_count"] == T
    from altbeam.model.training.common import load_decoder
    decoder, vocab, _ = load_decoder(run)
    blank = tf.zeros([2, 16, 16])  # concepts alone: what the text-only captions taught
    scores = np.concatenate([one_hot("zebra", "grass"), one_hot("bear")])
    out = beam_search(decoder, blank, 1, 6, ban_unk=True, concept_scores=scores)
    said = [t.decode() for t in tokens_to_text(tf.constant(vocab.words), out["tokens"][:, 0]).numpy()]
    assert "zebra" in said[0].split() and "bear" in said[1].split(), said


def test_the_run_head_is_rebuilt_from_the_weights_its_record_names(concept_run, tmp_path):
    import shutil

    from altbeam.model.training.concept_inputs import RECORD_FILE, run_concept_head
    run = shutil.copytree(concept_run[0], tmp_path / "run")
    record = json.load(open(run / RECORD_FILE))
    json.dump({**record, "imagenet_weights": str(tmp_path / "gone.pth")},
              open(run / RECORD_FILE, "w"))
    with pytest.raises(FileNotFoundError, match="gone.pth"):
        run_concept_head(str(run), "lite0")
    # Runs recorded before the field existed: the package's layer (here without the
    # tiny run's 16-channel detectors, which a Lite0 head refuses).
    del record["imagenet_weights"]
    json.dump(record, open(run / RECORD_FILE, "w"))
    (run / "concept_detectors.npz").unlink()
    head = run_concept_head(str(run), "lite0")
    assert head.detectors is None and "efficientnet-lite0" in head.imagenet_source


def test_export_attaches_the_head_the_run_was_trained_with(concept_run, tmp_path):
    run, head, _, _ = concept_run
    with pytest.raises(SystemExit, match="--concepts"):
        export(run, str(tmp_path / "no_head"))
    with pytest.raises(SystemExit, match="concept_detectors.npz; the head given has none"):
        export(run, str(tmp_path / "other_head"), concept_head=tiny_head())
    path = export(run, str(tmp_path / "model"), concept_head=head, weights="int8")
    card = json.load(open(f"{path}/model_card.json"))
    assert card["training"]["concept_inputs"]["run"]["text_captions"] == 80
    assert card["config"]["concept_inputs"]
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = LoadedModel(path).predict(images)
    assert out.captions.shape == (3, 3) and out.concepts.shape == (3, 6)
    # Re-exported from the SavedModel alone (runs gone): the same captions.
    again = export_from_saved_model(path, str(tmp_path / "again"), concept_head=head)
    np.testing.assert_array_equal(LoadedModel(again).predict(images).captions, out.captions)


def test_concept_text_without_concept_inputs_is_a_clear_error(tmp_path):
    from altbeam.model.training.train import main as train_main
    feats = str(tmp_path / "features")
    write_feature_shard(feats, "train", [["a dog"], ["a cat"]] * 5)
    text = tmp_path / "text.json"
    text.write_text(json.dumps({"1.jpg": ["a bear"]}))
    with pytest.raises(SystemExit, match="--concept-text needs --concept-inputs"):
        train_main(["--features", feats, "--out", str(tmp_path / "run"), "--epochs", "1",
                    "--val-images", "2", "--concept-text", str(text)])
    with pytest.raises(SystemExit, match="needs the attention decoder"):
        train(tiny_config(concept_inputs=True, decoder="merge"), feats,
              str(tmp_path / "run2"), val_images=2, concept_head=tiny_head())
