"""The speed levers of decoding (issue 21) change no caption: weights read once per call
instead of at every step, and the beam search compiled with XLA (`--jit-compile`)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.concepts import CONCEPTS
from altbeam.model.data.vocab import SPECIALS
from altbeam.model.nets.ensemble import DecoderEnsemble
from altbeam.model.serving.beam_search import beam_search
from altbeam.model.serving.captioner import Captioner
from altbeam.model.serving.concept_guide import ConceptGuide
from altbeam.model.serving.export import export, export_from_saved_model, main
from tests.model.serving.test_concept_export import photos, serve  # noqa: F401 (fixture)
from tests.support.fake_runs import fake_run, tiny_decoder
from tests.support.tiny import TINY_WORDS, TinyEncoder, tiny_config

WORDS = list(SPECIALS) + TINY_WORDS


def _features(n: int = 5, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(0, 1, (n, 16, 16)), tf.float32)


def _int8_ensemble(**overrides) -> DecoderEnsemble:
    return DecoderEnsemble([tiny_decoder(1, **overrides), tiny_decoder(2, **overrides)]).to_int8()


@pytest.mark.parametrize("storage", ["int8", "float16", "float32"])
@pytest.mark.parametrize("variant", ["attention", "show_and_tell", "merge"])
def test_weights_read_once_give_the_same_step_bit_for_bit(storage, variant):
    decoder = tiny_decoder(3, decoder=variant)
    if storage != "float32":
        getattr(decoder, f"to_{storage}")()
    view = decoder.with_weights_read()
    assert all(getattr(view, name).dtype == tf.float32
               for name in ("embedding", "lstm_kernel", "lstm_bias", "out_word"))
    features, projected = decoder.prepare(_features())
    h, c = decoder.init_state(features)
    words = tf.constant([4, 5, 6, 7, 8])
    for a, b in zip(decoder.step(words, h, c, features, projected),
                    view.step(words, h, c, features, projected)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_ensemble_view_reads_every_member_and_leaves_the_model_alone():
    ensemble = _int8_ensemble()
    view = ensemble.with_weights_read()
    assert len(view.members) == 2 and view.members[0] is not ensemble.members[0]
    assert all(m.lstm_kernel.dtype == tf.float32 for m in view.members)
    assert all(type(m.lstm_kernel).__name__ == "Int8Weight" for m in ensemble.members)


def _search(decoder, guide=None, scores=None, jit=False, n=5):
    def run(features, scores):
        return beam_search(decoder, features, 3, 8, 1.0, True, True, guide, scores)
    out = (tf.function(run, jit_compile=True) if jit else run)(_features(n), scores)
    return {k: v.numpy() for k, v in out.items()}


def _assert_same_search(plain, compiled):
    """Tokens and lengths exact; scores within float32 rounding (XLA orders sums its way)."""
    for key in ("tokens", "lengths"):
        np.testing.assert_array_equal(compiled[key], plain[key])
    for key in ("scores", "log_probs", "attention"):
        np.testing.assert_allclose(compiled[key], plain[key], atol=1e-5)


def test_xla_search_matches_with_int8_ensemble_trigram_blocking_and_unk_ban():
    decoder = _int8_ensemble()
    plain, compiled = _search(decoder), _search(decoder, jit=True)
    _assert_same_search(plain, compiled)
    assert (plain["lengths"] > 1).any(), "captions of several words, not a trivial search"


def test_xla_search_matches_with_a_transfer_guide():
    guide = ConceptGuide(WORDS, frozenset({"dog", "cat", "bear", "grass"}), mode="transfer",
                         alpha=1.0, boost=0.5, threshold=0.1,
                         templates=[("bear", "dog"), ("owl", "cat")])
    scores = np.full((5, len(CONCEPTS)), 0.02, np.float32)
    scores[:3, CONCEPTS.index("bear")] = 0.9
    decoder = tiny_decoder(4)
    plain = _search(decoder, guide, tf.constant(scores))
    compiled = _search(decoder, guide, tf.constant(scores), jit=True)
    _assert_same_search(plain, compiled)


def test_xla_search_matches_with_concept_reading_and_narrow_context_members():
    # The per-image concept terms folded across the grid cells and the projected context
    # both travel in `projected`: XLA must slice and unfold them as the plain graph does.
    T = len(CONCEPTS)
    decoder = DecoderEnsemble([tiny_decoder(5, concept_inputs=True, concept_count=T),
                               tiny_decoder(6, context_units=6, concept_inputs=True,
                                            concept_count=T)]).to_int8()
    scores = tf.constant(np.random.default_rng(2).uniform(0, 1, (5, T)), tf.float32)
    plain = _search(decoder, None, scores)
    _assert_same_search(plain, _search(decoder, None, scores, jit=True))
    assert (plain["lengths"] > 1).any()


def _captioner(jit_compile: bool, decoder) -> Captioner:
    config = tiny_config(block_repeated_trigrams=True, ban_unk=True, beam_width=3)
    return Captioner(TinyEncoder(config.feature_channels, config.seed), decoder, WORDS, config,
                     jit_compile=jit_compile)


def test_compiled_captioner_serves_the_same_captions_at_batch_1_and_batch_6(photos):  # noqa: F811
    decoder = _int8_ensemble(block_repeated_trigrams=True, ban_unk=True)
    plain, compiled = _captioner(False, decoder), _captioner(True, decoder)
    for batch in (photos[:1], photos):
        for name in ("serve", "serve_attention"):
            a = getattr(plain, name)(tf.constant(batch))
            b = getattr(compiled, name)(tf.constant(batch))
            np.testing.assert_array_equal(b["captions"].numpy(), a["captions"].numpy())
            np.testing.assert_allclose(b["scores"].numpy(), a["scores"].numpy(), atol=1e-5)
            if "words" in a:
                np.testing.assert_array_equal(b["words"].numpy(), a["words"].numpy())


def test_export_records_jit_compile_and_reexport_keeps_or_changes_it(tmp_path, photos):  # noqa: F811
    runs = [fake_run(tmp_path / f"run{s}", seed=s) for s in (1, 2)]
    plain = export(runs, str(tmp_path / "plain"), weights="int8", beam_width=3,
                   block_repeated_trigrams=True)
    compiled = export_from_saved_model(plain, str(tmp_path / "xla"), jit_compile=True)
    kept = export_from_saved_model(compiled, str(tmp_path / "kept"))
    assert main(["--from-saved-model", compiled, "--no-jit-compile",
                 "--out", str(tmp_path / "off")]) == 0
    card = lambda p: json.load(open(os.path.join(p, "model_card.json")))  # noqa: E731
    assert [card(p)["jit_compile"] for p in (plain, compiled, kept, str(tmp_path / "off"))] \
        == [False, True, True, False]
    before, after = serve(plain, photos), serve(compiled, photos)
    np.testing.assert_array_equal(after["captions"], before["captions"])
    np.testing.assert_allclose(after["scores"], before["scores"], atol=1e-5)


@pytest.mark.parametrize("variant", ["attention", "show_and_tell", "merge"])
def test_bfloat16_matmuls_round_the_step_matrices_and_move_the_logits_a_little(variant):
    decoder = tiny_decoder(3, decoder=variant).to_int8()
    plain, low = decoder.with_weights_read(), decoder.with_weights_read("bfloat16")
    assert low.lstm_kernel.dtype == tf.bfloat16 and low.out_word.dtype == tf.bfloat16
    assert low.embedding.dtype == tf.float32 and low.lstm_bias.dtype == tf.float32
    features, projected = decoder.prepare(_features())
    h, c = decoder.init_state(features)
    words = tf.constant([4, 5, 6, 7, 8])
    a, b = plain.step(words, h, c, features, projected), low.step(words, h, c, features, projected)
    assert b[0].dtype == tf.float32 and b[1].dtype == tf.float32
    gap = np.abs(a[0].numpy() - b[0].numpy())
    assert 0 < gap.max() < 0.05 * np.abs(a[0].numpy()).max()   # rounded, not broken


def test_a_bfloat16_ensemble_and_search_follow_the_models_config():
    ensemble = _int8_ensemble()
    ensemble.config = ensemble.config.replace(matmul_dtype="bfloat16")
    view = ensemble.with_weights_read()
    assert all(m.lstm_kernel.dtype == tf.bfloat16 for m in view.members)
    plain = _search(_int8_ensemble())
    low = _search(ensemble)
    assert low["tokens"].shape == plain["tokens"].shape
    assert 0 < np.abs(low["scores"] - plain["scores"]).max() < 0.05
    with pytest.raises(ValueError, match="matmul_dtype"):
        tiny_decoder(1, matmul_dtype="float8")


def test_export_records_the_matmul_dtype_in_card_and_version(tmp_path, photos):  # noqa: F811
    run = fake_run(tmp_path / "run", seed=1)
    plain = export(run, str(tmp_path / "plain"), weights="int8", beam_width=3)
    low, kept, back = (str(tmp_path / n) for n in ("low", "kept", "back"))
    assert main(["--from-saved-model", plain, "--out", low, "--matmul-dtype", "bfloat16",
                 "--block-repeated-words"]) == 0
    assert main(["--from-saved-model", low, "--out", kept]) == 0
    assert main(["--from-saved-model", kept, "--out", back, "--matmul-dtype", "float32"]) == 0
    cards = [json.load(open(os.path.join(p, "model_card.json"))) for p in (plain, low, kept, back)]
    assert [c["matmul_dtype"] for c in cards] == ["float32", "bfloat16", "bfloat16", "float32"]
    version = cards[0]["version"]
    assert [c["version"] for c in cards[1:]] == [version + "+norep+bf16"] * 2 + [version + "+norep"]
    a, b = serve(plain, photos), serve(low, photos)
    assert b["captions"].shape == a["captions"].shape
    assert not np.array_equal(a["scores"], b["scores"])   # the graph multiplies in bfloat16
