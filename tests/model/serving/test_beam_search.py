"""Beam search: exact on an exhaustively searchable model, greedy at K=1, batched."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import tensorflow as tf

from altbeam.model.data.vocab import END_ID, PAD_ID, START_ID
from altbeam.model.nets.decoder import CaptionDecoder
from altbeam.model.serving.beam_search import beam_search, tokens_to_text
from tests.support.tiny import tiny_config

WORD_IDS = [3, 4, 5, 6]  # <unk> and three words: what a live beam may emit besides <end>


def _decoder(decoder="attention", vocab=7, seed=3, scale=2.0):
    config = tiny_config(vocab_size=vocab, decoder=decoder, seed=seed)
    dec = CaptionDecoder(config)
    # Sharpen the output layer so sequences differ clearly in probability.
    dec.out_word.assign(dec.out_word * scale)
    return dec


def _features(n=2, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(n, 16, 16)).astype(np.float32))


def _sequence_logprob(dec, feats, seq):
    """Log-probability of one token sequence under the decoder (same masking as search)."""
    f, proj = dec.prepare(feats)
    h, c = dec.init_state(f)
    last, total = tf.constant([START_ID]), 0.0
    for tok in seq:
        logits, h, c, _ = dec.step(last, h, c, f, proj)
        total += float(tf.nn.log_softmax(logits)[0, tok])
        last = tf.constant([tok])
    return total


def _all_sequences(max_len):
    """Every caption: n words then <end> (n < max_len), or max_len words cut off."""
    for n in range(1, max_len + 1):
        for words in itertools.product(WORD_IDS, repeat=n):
            yield list(words) + ([END_ID] if n < max_len else [])


@pytest.mark.parametrize("decoder", ["attention", "show_and_tell"])
def test_beam_search_is_exact_when_the_beam_covers_every_sequence(decoder):
    dec = _decoder(decoder)
    T, K = 3, 80  # 4 + 16 + 64 live prefixes at most: a beam of 80 never prunes
    feats = _features(1)
    seqs = {tuple(s) for s in _all_sequences(T)}
    # Finished captions first (a beam cut off at max_length ranks after them), then by
    # log-probability.
    brute = sorted(((_sequence_logprob(dec, feats[:1], s), s) for s in seqs),
                   key=lambda x: (x[1][-1] == END_ID, x[0]), reverse=True)[:3]
    out = beam_search(dec, feats, beam_width=K, max_length=T)
    for rank, (lp, seq) in enumerate(brute):
        got = [int(t) for t in out["tokens"][0, rank].numpy() if t != PAD_ID]
        assert tuple(got) == seq, f"rank {rank}: beam {got} != exhaustive {seq}"
        assert out["log_probs"][0, rank].numpy() == pytest.approx(lp, abs=1e-3)


def test_small_beam_finds_a_sequence_at_least_as_likely_as_greedy():
    dec = _decoder(seed=11)
    feats = _features(4, seed=5)
    greedy = beam_search(dec, feats, beam_width=1, max_length=6)["log_probs"][:, 0]
    beam = beam_search(dec, feats, beam_width=4, max_length=6)["log_probs"][:, 0]
    assert np.all(beam.numpy() >= greedy.numpy() - 1e-4)


def _greedy_reference(dec, feats, T):
    f, proj = dec.prepare(feats)
    h, c = dec.init_state(f)
    last, out = tf.fill([feats.shape[0]], START_ID), []
    done = np.zeros(feats.shape[0], bool)
    for t in range(T):
        logits, h, c, _ = dec.step(last, h, c, f, proj)
        lp = tf.nn.log_softmax(logits).numpy()
        lp[:, [PAD_ID, START_ID]] = -np.inf
        if t == 0:
            lp[:, END_ID] = -np.inf
        tok = lp.argmax(-1)
        tok[done] = PAD_ID
        out.append(tok)
        done |= tok == END_ID
        last = tf.constant(tok.astype(np.int32))
    return np.stack(out, 1)


@pytest.mark.parametrize("decoder", ["attention", "show_and_tell"])
def test_beam_of_one_is_greedy(decoder):
    dec = _decoder(decoder, vocab=24, seed=5)
    feats = _features(5, seed=2)
    out = beam_search(dec, feats, beam_width=1, max_length=7)
    np.testing.assert_array_equal(out["tokens"][:, 0].numpy(), _greedy_reference(dec, feats, 7))


def test_batched_search_equals_one_image_at_a_time():
    dec = _decoder(vocab=24, seed=8)
    feats = _features(4, seed=9)
    batched = beam_search(dec, feats, beam_width=3, max_length=6)
    for i in range(4):
        single = beam_search(dec, feats[i:i + 1], beam_width=3, max_length=6)
        np.testing.assert_array_equal(single["tokens"][0].numpy(), batched["tokens"][i].numpy())
        np.testing.assert_allclose(single["scores"][0], batched["scores"][i], atol=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 0.7, 1.0])
def test_ranking_uses_alpha_and_scores_are_length_normalised(alpha):
    dec = _decoder(vocab=24, seed=4)
    feats = _features(3, seed=4)
    out = beam_search(dec, feats, beam_width=4, max_length=6, length_alpha=alpha)
    lengths = np.maximum(out["lengths"].numpy(), 1)
    rank = out["rank_scores"].numpy()
    finished = (out["tokens"].numpy() == END_ID).any(axis=-1)
    for r, f in zip(rank, finished):  # finished beams first, best first within each kind
        assert list(f) == sorted(f, reverse=True)
        assert np.all(np.diff(r[f]) <= 1e-6) and np.all(np.diff(r[~f]) <= 1e-6)
    np.testing.assert_allclose(rank, out["log_probs"].numpy() / lengths ** alpha, rtol=1e-5)
    np.testing.assert_allclose(out["scores"].numpy(), out["log_probs"].numpy() / lengths,
                               rtol=1e-5)


def test_a_beam_cut_off_at_max_length_never_outranks_a_finished_caption():
    dec = _decoder(vocab=24, seed=6)
    bias = np.zeros(24, np.float32)
    bias[4], bias[END_ID] = 20.0, 17.0   # word 4 again and again; <end> 20x less likely
    dec.out_bias.assign(bias)
    out = beam_search(dec, _features(2), beam_width=3, max_length=3, length_alpha=1.0)
    tokens, rank = out["tokens"].numpy(), out["rank_scores"].numpy()
    for beams, ranks in zip(tokens, rank):
        cut = [k for k, b in enumerate(beams) if END_ID not in b]
        assert cut and list(beams[cut[0]]) == [4, 4, 4]   # the per-word best, cut off …
        assert END_ID in beams[0] and ranks[cut[0]] > ranks[0]   # … ranks after <end>
        assert cut == list(range(len(beams) - len(cut), len(beams)))


def test_banned_unk_is_never_emitted_even_when_most_likely():
    dec = _decoder(vocab=24, seed=6)
    bias = np.zeros(24, np.float32)
    bias[3] = 50.0  # <unk> would win every step
    dec.out_bias.assign(bias)
    feats = _features(3, seed=1)
    free = beam_search(dec, feats, beam_width=3, max_length=5)["tokens"].numpy()
    banned = beam_search(dec, feats, beam_width=3, max_length=5, ban_unk=True)["tokens"].numpy()
    assert (free == 3).any() and not (banned == 3).any()


def test_tokens_to_text_stops_at_end_and_drops_specials():
    words = tf.constant(["<pad>", "<start>", "<end>", "<unk>", "a", "dog"])
    tokens = tf.constant([[4, 5, 2, 4, 0], [4, 3, 5, 0, 0]])
    assert [t.decode() for t in tokens_to_text(words, tokens).numpy()] == ["a dog", "a <unk> dog"]


def _trigrams(seq):
    return [tuple(seq[i:i + 3]) for i in range(len(seq) - 2)]


@pytest.mark.parametrize("k", [1, 3])
def test_blocked_trigrams_never_repeat_within_a_beam(k):
    dec = _decoder(vocab=7, seed=5)
    # A decoder that wants the same word forever: "w w w w ..." repeats trigram (w, w, w).
    bias = np.zeros(7, np.float32)
    bias[4] = 8.0
    dec.out_bias.assign(bias)
    feats = _features(n=3)
    free = beam_search(dec, feats, k, 8, ban_unk=True)["tokens"].numpy()
    assert any(len(set(_trigrams(list(s)))) < len(_trigrams(list(s))) for s in free[:, 0])
    blocked = beam_search(dec, feats, k, 8, ban_unk=True, block_repeated_trigrams=True)
    for seq in blocked["tokens"].numpy().reshape(-1, 8):
        words = [int(t) for t in seq if t not in (PAD_ID, END_ID)]
        assert len(set(_trigrams(words))) == len(_trigrams(words)), words
        assert 4 in words  # still the favourite word, just never three-in-a-row twice


@pytest.mark.parametrize("k", [1, 3])
def test_blocked_word_repeats_never_say_a_word_twice_in_a_row(k):
    dec = _decoder(vocab=7, seed=5)
    bias = np.zeros(7, np.float32)
    bias[4] = 8.0            # a decoder that wants "w w w w ..."
    dec.out_bias.assign(bias)
    feats = _features(n=3)
    free = beam_search(dec, feats, k, 8, ban_unk=True, block_repeated_trigrams=True)
    assert any(_has_adjacent_repeat(list(s)) for s in free["tokens"].numpy()[:, 0])
    blocked = beam_search(dec, feats, k, 8, ban_unk=True, block_repeated_trigrams=True,
                          block_repeated_words=True)
    for seq in blocked["tokens"].numpy().reshape(-1, 8):
        words = [int(t) for t in seq if t not in (PAD_ID, END_ID)]
        assert not _has_adjacent_repeat(words), words
        assert 4 in words    # still the favourite word, never twice in a row


def _has_adjacent_repeat(tokens) -> bool:
    words = [int(t) for t in tokens if t not in (PAD_ID, END_ID)]
    return any(a == b for a, b in zip(words, words[1:]))


def test_exported_model_records_and_applies_the_word_repeat_ban(tmp_path):
    """export --block-repeated-words: in the card, kept by --from-saved-model, and off by
    default (a re-export without it keeps the source's captions)."""
    import json

    from altbeam.model.serving.export import main as export_main
    from altbeam.model.serving.saved_model import LoadedModel
    from tests.support.fake_runs import fake_run

    run = fake_run(tmp_path / "run", seed=4)
    plain, blocked, again = (str(tmp_path / n) for n in ("plain", "blocked", "again"))
    assert export_main([run, "--out", plain]) == 0
    assert export_main(["--from-saved-model", plain, "--out", blocked,
                        "--block-repeated-words"]) == 0
    assert export_main(["--from-saved-model", blocked, "--out", again]) == 0
    cards = [json.load(open(f"{m}/model_card.json")) for m in (plain, blocked, again)]
    assert [c["block_repeated_words"] for c in cards] == [False, True, True]
    # Different captions, different version (catalog rows carry it); no suffix piles up.
    assert not cards[0]["version"].endswith("+norep")
    assert cards[1]["version"] == cards[2]["version"] == cards[0]["version"] + "+norep"
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for model in (blocked, again):
        for caption in LoadedModel(model).predict(pixels).captions.reshape(-1):
            words = caption.decode().split()
            assert all(a != b for a, b in zip(words, words[1:])), words


def test_trigram_ban_marks_only_words_completing_a_seen_trigram():
    from altbeam.model.serving.beam_search import repeated_trigram_ban
    tokens = tf.constant([[5, 6, 7, 5, 6, 0, 0], [5, 6, 5, 6, 0, 0, 0]], tf.int32)
    ban = repeated_trigram_ban(tokens, tf.constant(5), 9).numpy()
    assert ban[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 0]  # "5 6" was followed by 7
    # Row 2 at t=5 reads position 4 (a pad), so its last two words are "6 <pad>": no ban.
    assert ban[1].sum() == 0
    ban = repeated_trigram_ban(tokens, tf.constant(4), 9).numpy()
    assert ban[1].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 0]  # "5 6" was followed by 5
    assert repeated_trigram_ban(tokens, tf.constant(1), 9).numpy().sum() == 0
