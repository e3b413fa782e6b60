"""Two decoding levers of issue 21 that change no caption: the beam search steps only the
rows of live beams once enough have finished (`drop_finished`), and the decoder's packed
per-image projection is split into its parts once per search (`unpack`) rather than
sliced at every step."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.data.vocab import END_ID, SPECIALS
from altbeam.model.nets.ensemble import DecoderEnsemble
from altbeam.model.serving import beam_search as search_module
from altbeam.model.serving.beam_search import RowCounting, beam_search
from altbeam.model.serving.concept_guide import ConceptGuide
from tests.support.fake_runs import tiny_decoder
from tests.support.tiny import TINY_WORDS

WORDS = list(SPECIALS) + TINY_WORDS
T = len(CONCEPTS)


def _features(n: int, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(0, 1, (n, 16, 16)), tf.float32)


def _scores(n: int, seed: int = 2) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(0, 1, (n, T)), tf.float32)


def ending(seed: int, **overrides):
    """A tiny decoder whose captions end after a few words, at different steps."""
    decoder = tiny_decoder(seed, **overrides)
    decoder.out_bias.assign(decoder.out_bias + END_BOOST * tf.one_hot(END_ID, WORDS_N))
    return decoder


END_BOOST, WORDS_N = 0.6, len(WORDS)
CASES = {
    "int8 attention ensemble": lambda: (DecoderEnsemble(
        [ending(1), ending(2)]).to_int8(), None, False),
    "show and tell": lambda: (ending(3, decoder="show_and_tell"), None, False),
    "merge": lambda: (ending(3, decoder="merge"), None, False),
    "narrow concept-input ensemble": lambda: (DecoderEnsemble(
        [ending(5, concept_inputs=True, concept_count=T),
         ending(6, context_units=6, concept_inputs=True, concept_count=T)]).to_int8(),
        None, True),
    "transfer guide": lambda: (ending(4), ConceptGuide(
        WORDS, frozenset({"dog", "cat", "bear", "grass"}), mode="transfer", alpha=1.0,
        boost=0.5, threshold=0.1, templates=[("bear", "dog"), ("owl", "cat")]), True),
}


def _search(decoder, guide, scores, n, drop_finished):
    out = beam_search(decoder, _features(n), 3, 8, 1.0, True, True, guide, scores,
                      block_repeated_words=True, drop_finished=drop_finished)
    return {k: v.numpy() for k, v in out.items()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_stepping_only_live_rows_gives_the_same_search(case, monkeypatch):
    monkeypatch.setattr(search_module, "MIN_DROPPED_ROWS", 1)   # drop from the first one
    decoder, guide, needs_scores = CASES[case]()
    n = 6
    scores = _scores(n) if needs_scores else None
    every_row = _search(decoder, guide, scores, n, drop_finished=False)
    counting = RowCounting(decoder)
    live = _search(counting, guide, scores, n, drop_finished=True)
    for key in ("tokens", "lengths"):
        np.testing.assert_array_equal(live[key], every_row[key])
    for key in ("scores", "log_probs", "rank_scores", "attention"):
        np.testing.assert_allclose(live[key], every_row[key], atol=1e-6)
    # The lever was exercised: some steps ran on fewer rows than the N x K beams.
    assert min(counting.rows) < n * 3 == max(counting.rows)
    assert len(set(every_row["lengths"].ravel())) > 1, "beams of several lengths"


def test_small_batches_keep_every_row_under_the_default_threshold():
    decoder = RowCounting(tiny_decoder(1))
    _search(decoder, None, None, 2, drop_finished=True)          # 6 rows < 16
    assert set(decoder.rows) == {6}


@pytest.mark.parametrize("overrides", [
    {}, {"context_units": 6}, {"concept_inputs": True, "concept_count": T},
    {"context_units": 6, "concept_inputs": True, "concept_count": T},
    {"decoder": "merge"}, {"decoder": "show_and_tell"}])
def test_a_step_on_the_unpacked_projection_equals_one_on_the_packed(overrides):
    decoder = tiny_decoder(7, **overrides).to_int8().with_weights_read()
    concepts = _scores(4) if overrides.get("concept_inputs") else None
    features, projected = decoder.prepare(_features(4), concepts=concepts)
    h, c = decoder.init_state(features)
    words = tf.constant([4, 5, 6, 7])
    packed = decoder.step(words, h, c, features, projected)
    parts = decoder.unpack(projected)
    unpacked = decoder.step(words, h, c, features, parts)
    for a, b in zip(packed, unpacked):
        np.testing.assert_array_equal(b.numpy(), a.numpy())


def test_an_ensemble_unpacks_each_member_once():
    ensemble = DecoderEnsemble([tiny_decoder(1, context_units=6),
                                tiny_decoder(2, decoder="merge")])
    features, projected = ensemble.prepare(_features(3))
    parts = ensemble.unpack(projected)
    assert isinstance(parts, tuple) and set(parts[0]) == {"keys", "values"} \
        and set(parts[1]) == {"packed"}
    h, c = ensemble.init_state(features)
    words = tf.constant([4, 5, 6])
    for a, b in zip(ensemble.step(words, h, c, features, projected),
                    ensemble.step(words, h, c, features, parts)):
        np.testing.assert_array_equal(b.numpy(), a.numpy())
