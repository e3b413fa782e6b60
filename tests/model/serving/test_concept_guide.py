"""Concept-guided decoding (model/serving/concept_guide.py): the bias suppresses words the
concept scores contradict, transferred novel words win only where their concept scores
high, and exporting with it (or without) keeps the serving contract."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.data.vocab import SPECIALS
from altbeam.model.serving.beam_search import beam_search, tokens_to_text
from altbeam.model.serving.concept_guide import ConceptGuide, read_templates, transfer_pairs
from altbeam.model.serving.export import export_from_saved_model, main
from tests.model.serving.test_concept_export import _source, serve, tiny_head
from tests.support.fake_runs import tiny_decoder
from tests.support.tiny import TINY_WORDS

WORDS = list(SPECIALS) + TINY_WORDS
COVERED = frozenset({"dog", "cat", "person", "bear", "owl", "grass", "water", "ball", "street"})
JUDGED = {"dog", "cat", "man", "woman", "grass", "water", "ball", "street"}


def concept_scores(n: int, **scores: float) -> tf.Tensor:
    """[n, T] scores: ``default`` everywhere, the named concepts as given."""
    rows = np.full((n, len(CONCEPTS)), scores.pop("default", 0.0), np.float32)
    for concept, value in scores.items():
        rows[:, CONCEPTS.index(concept)] = value
    return tf.constant(rows)


def decode(decoder, guide=None, scores=None, n: int = 6, seed: int = 0) -> list[list[str]]:
    """Best caption of n random feature grids, as words."""
    features = tf.constant(np.random.default_rng(seed).normal(0, 1, (n, 16, 16)), tf.float32)
    out = beam_search(decoder, features, 3, 8, 1.0, True, False, guide, scores)
    words = guide.words(tf.constant(WORDS)) if guide else tf.constant(WORDS)
    text = tokens_to_text(words, out["tokens"][:, 0])
    return [t.decode().split() for t in text.numpy()]


def test_words_are_judged_by_their_concept_and_person_words_as_person():
    guide = ConceptGuide(WORDS, COVERED, alpha=1.0, threshold=0.1)
    bias = guide.bias(concept_scores(1, dog=0.9, person=0.001, cat=0.1))[0].numpy()
    by_word = dict(zip(WORDS, bias))
    assert by_word["dog"] == 0.0 and by_word["cat"] == pytest.approx(0.0, abs=1e-6)
    assert by_word["man"] == by_word["woman"] == pytest.approx(np.log(0.01), rel=1e-5)
    assert by_word["grass"] == pytest.approx(np.log(1e-4 / 0.1), rel=1e-5)  # eps floor
    assert all(by_word[w] == 0.0 for w in WORDS if w not in JUDGED)
    boosted = ConceptGuide(WORDS, COVERED, boost=0.5, threshold=0.1)
    assert dict(zip(WORDS, boosted.bias(concept_scores(1, dog=0.9))[0].numpy()))["dog"] == \
        pytest.approx(0.5 * np.log(9.0), rel=1e-5)


def test_a_contradicted_word_is_suppressed_and_unjudged_captions_unchanged():
    decoder = tiny_decoder(1)
    plain = decode(decoder)
    guide = ConceptGuide(WORDS, COVERED, alpha=5.0, threshold=0.1)
    # Every judged concept confidently there: no bias at all, the captions are the same.
    assert decode(decoder, guide, concept_scores(6, default=0.9)) == plain
    named = {w for caption in plain for w in caption} & JUDGED
    assert named, "the tiny decoder should name some judged word"
    contradicted = decode(decoder, guide, concept_scores(6, default=0.9, **{
        ("person" if w in ("man", "woman") else w): 0.0 for w in named}))
    assert not {w for caption in contradicted for w in caption} & named


def test_step_probability_of_a_contradicted_word_drops():
    decoder = tiny_decoder(2)
    decoder.out_bias.assign(decoder.out_bias + 4.0 * tf.one_hot(WORDS.index("dog"), len(WORDS)))
    guide = ConceptGuide(WORDS, COVERED, alpha=1.0, threshold=0.5)
    features = tf.constant(np.random.default_rng(0).normal(0, 1, (2, 16, 16)), tf.float32)
    feats, projected = decoder.prepare(features)
    h, c = decoder.init_state(feats)
    logits = decoder.step(tf.constant([1, 1]), h, c, feats, projected)[0]
    there = tf.nn.softmax(logits + guide.bias(concept_scores(2, dog=0.9)))
    absent = tf.nn.softmax(logits + guide.bias(concept_scores(2, dog=0.005)))
    dog = WORDS.index("dog")
    assert (absent[:, dog].numpy() < 0.1 * there[:, dog].numpy()).all()


def test_transferred_word_is_said_only_where_its_concept_scores_high():
    decoder = tiny_decoder(3)
    dog = WORDS.index("dog")
    decoder.out_bias.assign(decoder.out_bias + 6.0 * tf.one_hot(dog, len(WORDS)))
    guide = ConceptGuide(WORDS, COVERED, "transfer", alpha=2.0, boost=1.0, threshold=0.1,
                         templates=[("bear", "dog"), ("owl", "dog")])
    assert guide.novel == ["bear", "owl"] and guide.extended_size == len(WORDS) + 2
    said = lambda captions: {w for c in captions for w in c}  # noqa: E731
    assert "dog" in said(decode(decoder)) and not {"bear", "owl"} & said(decode(decoder))
    bear_photo = said(decode(decoder, guide, concept_scores(6, bear=0.95, dog=0.01)))
    assert "bear" in bear_photo and not {"dog", "owl"} & bear_photo
    dog_photo = said(decode(decoder, guide, concept_scores(6, dog=0.95, bear=0.01)))
    assert "dog" in dog_photo and not {"bear", "owl"} & dog_photo
    # Neither judged there: the twins tie and the template (the lower id) is said.
    unsure = said(decode(decoder, guide, concept_scores(6, dog=0.01, bear=0.01, owl=0.01)))
    assert not {"bear", "owl"} & unsure


def test_transfer_pairs_plurals_and_articles():
    words = WORDS + ["dogs", "cats"]
    covered = COVERED | {"zebra"}
    pairs = transfer_pairs(words, [("bear", "dog"), ("owl", "dog"), ("zebra", "horse"),
                                   ("cat", "dog"), ("eagle", "dog")], covered)
    index = {w: i for i, w in enumerate(words)}
    # zebra: template not known; cat: already known; eagle: concept not covered here.
    assert pairs == [("bear", index["dog"]), ("bears", index["dogs"]), ("owl", index["dog"]),
                     ("owls", index["dogs"])]
    guide = ConceptGuide(words, COVERED, "transfer", templates=[("owl", "dog")])
    assert guide.an_words() == ["owl", "owls"]
    text = tokens_to_text(guide.words(tf.constant(words)),
                          tf.constant([[4, len(words), 9, 2], [4, 5, 2, 0]]),
                          guide.an_words())
    assert [t.decode() for t in text.numpy()] == ["an owl on", "a dog"]
    rows = read_templates()
    assert ("bear", "dog") in rows and ("broccoli", "food") in rows
    assert len({n for n, _ in rows}) == len(rows), "one template per novel word"


def test_export_none_keeps_captions_and_contract_and_reexport_keeps_the_guide(tmp_path):
    photos = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    source = _source(tmp_path, "float16", 2)
    none = export_from_saved_model(source, str(tmp_path / "none"), concept_head=tiny_head(),
                                   concept_decoding={"mode": "none"})
    guided = export_from_saved_model(source, str(tmp_path / "transfer"),
                                     concept_head=tiny_head(),
                                     concept_decoding={"mode": "transfer", "alpha": 2.0})
    base, plain, steered = serve(source, photos), serve(none, photos), serve(guided, photos)
    np.testing.assert_array_equal(plain["captions"], base["captions"])
    np.testing.assert_array_equal(plain["scores"], base["scores"])
    for signature in ("serving_default", "caption_with_attention"):
        a, b = serve(none, photos, signature), serve(guided, photos, signature)
        assert {k: (v.shape, v.dtype) for k, v in a.items()} == \
            {k: (v.shape, v.dtype) for k, v in b.items()}
    np.testing.assert_array_equal(steered["concepts"], plain["concepts"])
    card = json.load(open(os.path.join(guided, "model_card.json")))["concept_decoding"]
    assert card["mode"] == "transfer" and card["alpha"] == 2.0
    assert json.load(open(os.path.join(none, "model_card.json")))["concept_decoding"] == \
        {"mode": "none"}
    # Re-export without naming a decoding keeps the model's (from its card).
    again = export_from_saved_model(guided, str(tmp_path / "again"), concept_head=tiny_head())
    np.testing.assert_array_equal(serve(again, photos)["captions"], steered["captions"])
    assert json.load(open(os.path.join(again, "model_card.json")))["concept_decoding"] == card


def test_cli_needs_a_head_and_a_mode(tmp_path):
    source = _source(tmp_path, "float16", 1)
    with pytest.raises(SystemExit, match="need --concept-decoding"):
        main(["--from-saved-model", source, "--out", str(tmp_path / "a"),
              "--concept-alpha", "2"])
    with pytest.raises(ValueError, match="needs a concept head"):
        main(["--from-saved-model", source, "--out", str(tmp_path / "b"),
              "--concept-decoding", "bias"])


def test_version_names_the_concept_decoding():
    """Guided captions differ from unguided ones: the model version (in every catalog
    row, read by incremental runs) must differ too, by the effective settings."""
    import types

    from altbeam.model.serving.export import concepts_version

    head = types.SimpleNamespace(detectors=None)

    def guide(**settings):
        full = {"mode": "bias", "alpha": 0.5, "boost": 0.0, "threshold": 0.02, "eps": 1e-4,
                **settings}
        return types.SimpleNamespace(mode=full["mode"], settings=lambda: full)

    plain = concepts_version("2026.01.01-lite0-attention", head)
    biased = concepts_version("2026.01.01-lite0-attention", head, guide())
    assert plain == "2026.01.01-lite0-attention+concepts"
    assert biased.startswith(plain + "+bias-") and biased != plain
    assert concepts_version(biased, head, guide()) == biased          # re-export: stable
    assert concepts_version(biased, head, guide(alpha=1.0)) != biased
    assert concepts_version(biased, head) == plain                    # guide removed
