"""Several trained decoders decoding as one: the word distribution at each step is the
mean of the members' distributions (log of the averaged probabilities).

``DecoderEnsemble`` has the decoder interface beam search uses (``embedding``,
``config``, ``prepare``, ``init_state``, ``step``), so the in-graph search, the
exported SavedModel and ``altbeam evaluate --run`` treat it like one decoder. Members
must share the vocabulary and read the same encoder features; their sizes and
variants (attention / Show-and-Tell / merge) may differ.

Per-member state travels packed along the last axis (h, c: [B, sum U_i]; projected
features: [B, L, sum A_i], each member's broadcast along L) so beam search can reorder it
as one tensor.
"""
from __future__ import annotations

import math

import tensorflow as tf


class DecoderEnsemble(tf.Module):
    def __init__(self, members, name: str = "ensemble"):
        super().__init__(name=name)
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one decoder")
        first = members[0].config
        for k, m in enumerate(members[1:], 2):
            for field in ("vocab_size", "feature_channels", "grid", "encoder", "image_size"):
                if getattr(m.config, field) != getattr(first, field):
                    raise ValueError(f"ensemble member {k} has {field}="
                                     f"{getattr(m.config, field)!r}, member 1 has "
                                     f"{getattr(first, field)!r}: members must share it")
        self.members = members
        self.config = first
        self._units = [m.config.lstm_units for m in members]
        self._proj = [m.projected_width for m in members]
        self._log_m = math.log(len(members))

    @property
    def embedding(self):  # beam search reads the vocabulary size from it
        return self.members[0].embedding

    def with_weights_read(self, matmul_dtype: str | None = None) -> DecoderEnsemble:
        """The ensemble of its members' ``with_weights_read`` views (decoder.py), all with
        the ensemble's matmul dtype (its config is the model's decoding settings)."""
        view = object.__new__(type(self))
        view.__dict__.update(vars(self))
        dtype = matmul_dtype or self.config.matmul_dtype
        view.__dict__["members"] = [m.with_weights_read(dtype) for m in self.members]
        return view

    def to_float16(self) -> DecoderEnsemble:
        for m in self.members:
            m.to_float16()
        return self

    def to_int8(self) -> DecoderEnsemble:
        for m in self.members:
            m.to_int8()
        return self

    def prepare(self, features, training: bool = False, concepts=None):
        parts = [m.prepare(features, training, concepts) for m in self.members]
        cells = tf.shape(parts[0][0])[1]
        # A member may project per image ([B, 1, P], merge) rather than per cell.
        packed = [tf.broadcast_to(p, tf.concat([tf.shape(p)[:1], [cells], tf.shape(p)[2:]], 0))
                  for _, p in parts]
        return parts[0][0], tf.concat(packed, axis=-1)

    def unpack(self, projected):
        """The packed ``projected`` -> a tuple of the members' `unpack` parts (split once
        per search, not at every step); `step` takes either form."""
        return tuple(m.unpack(p) for m, p in zip(self.members, tf.split(projected, self._proj, -1)))

    def init_state(self, features, training: bool = False):
        states = [m.init_state(features, training) for m in self.members]
        return tf.concat([h for h, _ in states], -1), tf.concat([c for _, c in states], -1)

    def step(self, words, h, c, features, projected, training: bool = False):
        hs, cs = tf.split(h, self._units, -1), tf.split(c, self._units, -1)
        projs = projected if isinstance(projected, tuple) else tf.split(projected, self._proj, -1)
        log_probs, new_h, new_c, alphas = [], [], [], []
        for m, hi, ci, pi in zip(self.members, hs, cs, projs):
            logits, hi, ci, alpha = m.step(words, hi, ci, features, pi, training)
            log_probs.append(tf.nn.log_softmax(logits))
            new_h.append(hi)
            new_c.append(ci)
            alphas.append(alpha)
        # log(mean_i p_i): already normalised, so the search's log_softmax leaves it as is.
        mixed = tf.reduce_logsumexp(tf.stack(log_probs), axis=0) - self._log_m
        return (mixed, tf.concat(new_h, -1), tf.concat(new_c, -1),
                tf.add_n(alphas) / len(alphas))


def load_runs(run_dirs: list[str], which: str = "best"):
    """One run folder -> its decoder; several -> their ensemble. Returns
    (decoder, vocab, config of the first run)."""
    from altbeam.model.training.common import load_decoder
    loaded = [load_decoder(d, which) for d in run_dirs]
    decoder, vocab, config = loaded[0]
    for d, (_, v, _) in zip(run_dirs[1:], loaded[1:]):
        if v.words != vocab.words:
            raise ValueError(f"{d} has a different vocabulary from {run_dirs[0]}: train the "
                             f"runs of an ensemble with `altbeam train --vocab "
                             f"{run_dirs[0]}/vocab.json`")
    if len(loaded) == 1:
        return decoder, vocab, config
    return DecoderEnsemble([m for m, _, _ in loaded]), vocab, config
