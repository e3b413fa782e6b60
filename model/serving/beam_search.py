"""Batched beam search inside the graph: N images x K beams, one tf.while_loop.

Every step runs the decoder once on N*K rows; there is no Python loop per word, so
the whole search compiles into the exported SavedModel. Greedy decoding is K = 1.

Rows of finished beams only ever extend with <pad> at no cost, so (``drop_finished``,
the default) a step whose finished rows are many enough (`worth_dropping`) runs the
decoder, the bans and the log-softmax on the live rows alone: at batch 32 about half of
a search's row-steps belong to finished beams (the loop runs until the last beam of the
batch ends). XLA needs static shapes, so a compiled search (``drop_finished=False``)
computes every row; the captions are the same either way.

Scores: the search keeps raw summed log-probabilities; finished beams are ranked by
``log p / length ** alpha`` (alpha = 0: raw log-probability, 1: per-word mean), where
length counts the words plus <end>; beams cut off at max_length without <end> rank
after every finished beam. The returned ``scores`` are length-normalised
(``log p / length``, a per-word confidence comparable across captions of any length);
they are in ranking order, which is also descending order when alpha = 1.
"""
from __future__ import annotations

import tensorflow as tf

from altbeam.model.data.vocab import END_ID, PAD_ID, START_ID, UNK_ID
from altbeam.model.nets.decoder import step_reads_features

NEG_INF = -1e9
# drop_finished: gather the live rows only when it leaves out at least this many rows and
# a quarter of them (fewer cost more in gathers than they save: batch 1 has 5 rows).
MIN_DROPPED_ROWS = 16
CUT_OFF = -1e6   # ranking offset of beams that reached max_length without <end>


def worth_dropping(finished_rows, rows):
    """Whether a step should gather its live rows: enough finished ones to pay for it."""
    return finished_rows >= tf.maximum(MIN_DROPPED_ROWS, rows // 4)


def _gather_beams(x, beam_idx):
    """x [N, K, ...], beam_idx [N, K] -> x reordered along K (per image)."""
    return tf.gather(x, beam_idx, axis=1, batch_dims=1)


def words_banned_at(t, vocab, ban_unk: bool):
    """[V] 1.0 on the words a live caption may not emit at step t: <pad> and <start>
    always, <unk> when banned, <end> at t = 0 (a caption has at least one word)."""
    banned = tf.one_hot(PAD_ID, vocab) + tf.one_hot(START_ID, vocab)
    if ban_unk:
        banned += tf.one_hot(UNK_ID, vocab)
    return banned + tf.cast(tf.equal(t, 0), tf.float32) * tf.one_hot(END_ID, vocab)


def repeated_trigram_ban(tokens, t, vocab):
    """tokens [R, T] written up to step t (exclusive) -> [R, V] 1.0 where the word would
    complete a trigram already in the row (the last two words followed it before)."""
    R, T = tf.shape(tokens)[0], tf.shape(tokens)[1]
    prev2 = tf.gather(tokens, tf.maximum(t - 2, 0), axis=1)[:, None]
    prev1 = tf.gather(tokens, tf.maximum(t - 1, 0), axis=1)[:, None]
    first, second, follow = tokens[:, :-2], tokens[:, 1:-1], tokens[:, 2:]
    complete = tf.range(T - 2)[None] + 2 < t           # trigram j..j+2 already written
    match = complete & tf.equal(first, prev2) & tf.equal(second, prev1) & (t >= 2)
    rows = tf.broadcast_to(tf.range(R)[:, None], tf.shape(follow))
    index = tf.stack([rows, follow], axis=-1)
    return tf.tensor_scatter_nd_max(tf.zeros(tf.stack([R, vocab])), index,
                                    tf.cast(match, tf.float32))


def beam_search(decoder, features, beam_width: int, max_length: int, length_alpha: float = 0.0,
                ban_unk: bool = False, block_repeated_trigrams: bool = False,
                guide=None, concept_scores=None, block_repeated_words: bool = False,
                drop_finished: bool = True):
    """features [N, L, C] -> dict(tokens [N, K, T] int32, scores [N, K], lengths [N, K],
    log_probs [N, K], attention [N, K, T, L]); beams sorted best first.

    ban_unk: never emit <unk> (served captions must not contain it).
    block_repeated_trigrams: never emit a word that repeats a trigram of the same beam.
    block_repeated_words: never emit the word the beam emitted last ("large large").
    drop_finished: step only the rows of live beams (module docstring); off under XLA.
    guide, concept_scores: a ConceptGuide (model/serving/concept_guide.py) and the
    images' scores of every concept [N, T]: each step's logits are extended with the
    guide's novel words and biased by the scores; tokens then index the extended
    vocabulary (``guide.words``). A decoder with concept inputs reads concept_scores
    too (guide or not).

    Tokens after a beam's <end> are <pad>; ``lengths`` counts words including <end>.
    """
    K, T = int(beam_width), int(max_length)
    features = tf.convert_to_tensor(features)
    N, L = tf.shape(features)[0], tf.shape(features)[1]
    # Weights stored as int8 or float16 are converted to float32 once, not at every step
    # (at batch 1 the conversion cost as much as the step's matrix products).
    decoder = decoder.with_weights_read()
    vocab = decoder.embedding.shape[0]
    if guide is not None:
        vocab = guide.extended_size
        word_bias = tf.repeat(guide.bias(concept_scores), K, axis=0)  # [N*K, V+X]

    feats, projected = decoder.prepare(features, concepts=concept_scores)
    h, c = decoder.init_state(feats)
    # Tile per-image tensors to N*K rows (beam-major within each image); features only
    # where a step reads them (else their grid size is all it needs).
    tile = lambda x: tf.repeat(x, K, axis=0)  # noqa: E731
    # The packed projection split into its parts once here, not sliced at every step.
    projected = tf.nest.map_structure(tile, decoder.unpack(projected))
    h, c = tile(h), tile(c)
    reads_features = step_reads_features(decoder)
    if reads_features:
        feats = tile(feats)
    units = tf.shape(h)[-1]

    # Only beam 0 is live at the start, so the first expansion has no duplicates.
    log_probs = tf.tile(tf.concat([[0.0], tf.fill([K - 1], NEG_INF)], 0)[None], [N, 1])
    tokens = tf.fill([N, K, T], PAD_ID)
    attention = tf.zeros([N, K, T, L])
    finished = tf.zeros([N, K], tf.bool)
    lengths = tf.zeros([N, K], tf.int32)
    last = tf.fill([N * K], START_ID)
    pad_row = tf.one_hot(PAD_ID, vocab, on_value=0.0, off_value=NEG_INF)

    def rows_step(t, last, h, c, tokens, rows=None):
        """Next-word log-probabilities [R, V], new h, c and attention [R, L] of ``rows``
        (indices into the N*K rows; None: all of them)."""
        def take(x):
            return x if rows is None else tf.nest.map_structure(lambda y: tf.gather(y, rows), x)

        last, step_feats = take(last), take(feats) if reads_features else feats
        fed = last if guide is None else guide.fed(last)
        logits, h, c, alpha = decoder.step(fed, take(h), take(c), step_feats, take(projected))
        if guide is not None:
            logits = guide.extend(logits) + take(word_bias)
        ban = words_banned_at(t, vocab, ban_unk)
        if block_repeated_trigrams:
            ban = ban + repeated_trigram_ban(take(tf.reshape(tokens, [N * K, T])), t, vocab)
        if block_repeated_words:   # last is <start> at t = 0, banned anyway
            ban = ban + tf.one_hot(last, vocab)
        return tf.nn.log_softmax(logits) + ban * NEG_INF, h, c, alpha

    def all_rows(t, last, h, c, tokens, finished):
        step_lp, h, c, alpha = rows_step(t, last, h, c, tokens)
        # A finished beam may only extend itself with <pad>, at no cost.
        return tf.where(tf.reshape(finished, [-1, 1]), pad_row[None], step_lp), h, c, alpha

    def live_rows(t, last, h, c, tokens, finished):
        rows = tf.cast(tf.where(~tf.reshape(finished, [-1]))[:, 0], tf.int32)
        step_lp, h_live, c_live, alpha_live = rows_step(t, last, h, c, tokens, rows)
        at = rows[:, None]   # a finished row's state is never read again: left as it is
        return (tf.tensor_scatter_nd_update(
                    tf.broadcast_to(pad_row, tf.stack([N * K, vocab])), at, step_lp),
                tf.tensor_scatter_nd_update(h, at, h_live),
                tf.tensor_scatter_nd_update(c, at, c_live),
                tf.scatter_nd(at, alpha_live, tf.stack([N * K, L])))

    def body(t, last, h, c, log_probs, tokens, attention, finished, lengths):
        args = (t, last, h, c, tokens, finished)
        if drop_finished:
            dropped = tf.reduce_sum(tf.cast(finished, tf.int32))
            step_lp, h, c, alpha = tf.cond(worth_dropping(dropped, N * K),
                                           lambda: live_rows(*args), lambda: all_rows(*args))
        else:
            step_lp, h, c, alpha = all_rows(*args)
        step_lp = tf.reshape(step_lp, [N, K, vocab])
        total = tf.reshape(log_probs[..., None] + step_lp, [N, K * vocab])
        top_lp, top_idx = tf.math.top_k(total, k=K)
        beam_idx, word = top_idx // vocab, tf.cast(top_idx % vocab, tf.int32)

        tokens = _gather_beams(tokens, beam_idx)
        attention = _gather_beams(attention, beam_idx)
        was_finished = _gather_beams(finished, beam_idx)
        lengths = _gather_beams(lengths, beam_idx) + tf.cast(~was_finished, tf.int32)
        finished = was_finished | tf.equal(word, END_ID)
        h = tf.reshape(_gather_beams(tf.reshape(h, [N, K, units]), beam_idx), [N * K, units])
        c = tf.reshape(_gather_beams(tf.reshape(c, [N, K, units]), beam_idx), [N * K, units])
        alpha = _gather_beams(tf.reshape(alpha, [N, K, L]), beam_idx)

        onehot_t = tf.one_hot(t, T, dtype=tf.int32)[None, None]  # [1, 1, T]
        tokens = tokens * (1 - onehot_t) + word[..., None] * onehot_t
        attention += tf.cast(onehot_t, tf.float32)[..., None] * alpha[:, :, None, :] * \
            tf.cast(~was_finished, tf.float32)[..., None, None]
        return t + 1, tf.reshape(word, [-1]), h, c, top_lp, tokens, attention, finished, lengths

    def cond(t, last, h, c, log_probs, tokens, attention, finished, lengths):
        return (t < T) & ~tf.reduce_all(finished)

    _, _, _, _, log_probs, tokens, attention, finished, lengths = tf.while_loop(
        cond, body, [tf.constant(0), last, h, c, log_probs, tokens, attention, finished,
                     lengths],
        shape_invariants=[tf.TensorShape([]), tf.TensorShape([None]),
                          tf.TensorShape([None, None]), tf.TensorShape([None, None]),
                          tf.TensorShape([None, K]), tf.TensorShape([None, K, T]),
                          tf.TensorShape([None, K, T, None]), tf.TensorShape([None, K]),
                          tf.TensorShape([None, K])])

    length_f = tf.cast(tf.maximum(lengths, 1), tf.float32)
    rank = log_probs / tf.pow(length_f, length_alpha) if length_alpha else log_probs
    # A beam cut off at max_length ("… standing in the middle of a") comes after every
    # finished one, whatever its score: a caption must be a whole sentence.
    order = tf.argsort(tf.where(finished, rank, rank + CUT_OFF), axis=1,
                       direction="DESCENDING", stable=True)
    return {
        "tokens": _gather_beams(tokens, order),
        "scores": _gather_beams(log_probs / length_f, order),
        "rank_scores": _gather_beams(rank, order),
        "log_probs": _gather_beams(log_probs, order),
        "lengths": _gather_beams(lengths, order),
        "attention": _gather_beams(attention, order),
    }


def tokens_to_text(words, tokens, an_words=()):
    """words: string [V] lookup table; tokens [..., T] -> string [...] (stops at <end>).
    an_words: words after which the decoder's "a" is written "an" (transferred words
    that start with a vowel: the decoder learned the article of their template)."""
    ended = tf.cumsum(tf.cast(tf.equal(tokens, END_ID), tf.int32), axis=-1, exclusive=True) > 0
    keep = ~ended & (tokens > END_ID)  # drop <pad> <start> <end>, keep <unk> and words
    text = tf.where(keep, tf.gather(words, tokens), "")
    joined = tf.strings.reduce_join(text, axis=-1, separator=" ")
    text = tf.strings.strip(tf.strings.regex_replace(joined, " +", " "))
    if an_words:
        pattern = r"(^|\s)a ((?:" + "|".join(sorted(an_words)) + r")(?:\s|$))"
        text = tf.strings.regex_replace(text, pattern, r"\1an \2")
    return text


class RowCounting:
    """A decoder (or ensemble) that records how many rows each `step` was given: what
    `drop_finished` saves (tools/search_profile.py, the tests). Eager searches only."""

    def __init__(self, decoder):
        self.decoder, self.rows = decoder, []

    def with_weights_read(self):
        self.decoder = self.decoder.with_weights_read()
        return self

    def step(self, words, *args, **kwargs):
        self.rows.append(int(words.shape[0]))
        return self.decoder.step(words, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.decoder, name)
