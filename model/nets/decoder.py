"""LSTM caption decoders over an encoder's spatial feature grid.

Three variants share one step interface so training, beam search and export treat
them alike:

* ``attention`` -- Show, Attend and Tell (Xu et al. 2015): soft attention over the
  L = grid*grid feature vectors at every word, a sigmoid gate on the context vector,
  initial LSTM state from the mean feature, deep output layer. Optionally the context
  is read from the grid projected to ``context_units`` channels (a narrower LSTM).
* ``show_and_tell`` -- Vinyals et al. 2015: the pooled image vector is fed once as the
  first LSTM input; no attention (the returned attention weights are uniform).
* ``merge`` -- the "merge" captioner of the Keras tutorials (Tanti et al. 2017; Brownlee's
  ``define_model``): the LSTM reads only the words (from a zero state); the pooled image
  vector -> Dropout -> Dense(U, relu) is *added* to the LSTM output, then Dense(U, relu)
  -> Dense(V). No attention (uniform weights, as Show-and-Tell).

Written with plain ``tf.Variable``s inside a ``tf.Module`` so the exported SavedModel
needs nothing but TensorFlow to serve.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig

DECODERS = ("attention", "show_and_tell", "merge")
MATMUL_DTYPES = ("float32", "bfloat16")
# The matrices every decoding step multiplies by (ModelConfig.matmul_dtype applies to
# them); the per-image ones (init_*, att_feat, merge_image) and the embedding lookup stay
# float32.
STEP_MATRICES = ("lstm_kernel", "att_hidden", "gate", "out_hidden", "out_context",
                 "out_word", "concept_in", "concept_out", "concept_copy", "copy_gate",
                 "merge_hidden")
# The variable only that variant has: how a checkpoint tells which variant it holds
# (model/serving/rebuild.py).
VARIANT_MARKERS = {"attention": "att_feat", "show_and_tell": "image_embed",
                   "merge": "merge_image"}


def _glorot(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in, fan_out = shape[0], shape[-1]
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(np.float32)


class Int8Weight(tf.Module):
    """A weight matrix stored as int8 with one float32 scale per output column (per row
    for the embedding, which is read by row): a quarter of float32's size. Symmetric,
    round-to-nearest; ``dequantize`` gives the float32 matrix back to within scale/2."""

    def __init__(self, value, per_row: bool = False, name: str | None = None):
        super().__init__(name=name)
        value = tf.cast(value, tf.float32)
        peak = tf.reduce_max(tf.abs(value), axis=1 if per_row else 0, keepdims=True)
        scale = tf.where(peak > 0, peak / 127.0, tf.ones_like(peak))
        self.q = tf.Variable(tf.cast(tf.round(value / scale), tf.int8), name="q")
        self.scale = tf.Variable(scale, name="scale")

    @property
    def shape(self):
        return self.q.shape

    def dequantize(self):
        return tf.cast(self.q, tf.float32) * self.scale


class CaptionDecoder(tf.Module):
    """Decoder weights plus the two functions beam search needs: init_state and step."""

    def __init__(self, config: ModelConfig, embeddings: np.ndarray | None = None,
                 name: str = "decoder"):
        super().__init__(name=name)
        if config.vocab_size <= 4:
            raise ValueError("config.vocab_size must be set from the vocabulary")
        self.config = config
        c, rng = config, np.random.default_rng(config.seed)
        V, E, U, A, C = (c.vocab_size, c.embedding_dim, c.lstm_units, c.attention_units,
                         c.feature_channels)
        if embeddings is not None and embeddings.shape != (V, E):
            raise ValueError(f"embedding matrix shape {embeddings.shape} != {(V, E)}")
        emb = embeddings if embeddings is not None else rng.normal(0, 0.1, (V, E))
        var = tf.Variable
        self.embedding = var(emb.astype(np.float32), name="embedding")
        if c.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {c.decoder!r}: use one of {', '.join(DECODERS)}")
        if c.matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"matmul_dtype {c.matmul_dtype!r}: use one of "
                             f"{', '.join(MATMUL_DTYPES)}")
        if c.concept_inputs and (c.decoder != "attention" or c.concept_count <= 0):
            raise ValueError("concept_inputs needs the attention decoder and concept_count > 0")
        if c.context_units and c.decoder != "attention":
            raise ValueError("context_units needs the attention decoder")
        P = c.context_units or C   # the context vector the LSTM reads
        lstm_in = E + (P if c.decoder == "attention" else 0)
        self.lstm_kernel = var(_glorot(rng, (lstm_in + U, 4 * U)), name="lstm_kernel")
        bias = np.zeros(4 * U, np.float32)
        bias[U:2 * U] = 1.0  # forget-gate bias 1: remembers by default early in training
        self.lstm_bias = var(bias, name="lstm_bias")
        if c.decoder == "merge":
            self._build_merge(rng)
            return
        self.init_h = var(_glorot(rng, (C, U)), name="init_h")
        self.init_c = var(_glorot(rng, (C, U)), name="init_c")
        self.init_b = var(np.zeros((2, U), np.float32), name="init_b")
        if c.decoder == "attention":
            self.att_feat = var(_glorot(rng, (C, A)), name="att_feat")
            self.att_hidden = var(_glorot(rng, (U, A)), name="att_hidden")
            self.att_bias = var(np.zeros(A, np.float32), name="att_bias")
            self.att_score = var(_glorot(rng, (A, 1)), name="att_score")
            self.gate = var(_glorot(rng, (U, P)), name="gate")
            self.gate_bias = var(np.zeros(P, np.float32), name="gate_bias")
            self.out_context = var(_glorot(rng, (P, E)), name="out_context")
        else:
            self.image_embed = var(_glorot(rng, (C, E)), name="image_embed")
        if c.concept_inputs:
            # Two views of the concept scores, one added to the LSTM's word input, one to
            # the deep output; and a copy path (LSTM-C, Yao et al. 2017): scores -> word
            # logits through concept_copy [T, V], scaled by a gate on the LSTM state that
            # learns where a noun goes. The copy path is what lets "the CNN sees a bear"
            # reach "bear" when the grid alone would say "dog".
            T = c.concept_count
            self.concept_in = var(_glorot(rng, (T, E)), name="concept_in")
            self.concept_out = var(_glorot(rng, (T, E)), name="concept_out")
            self.concept_copy = var(np.zeros((T, V), np.float32), name="concept_copy")
            self.copy_gate = var(_glorot(rng, (U, 1)), name="copy_gate")
            self.copy_gate_bias = var(np.zeros(1, np.float32), name="copy_gate_bias")
        self.out_hidden = var(_glorot(rng, (U, E)), name="out_hidden")
        self.out_word = var(_glorot(rng, (E, V)), name="out_word")
        self.out_bias = var(np.zeros(V, np.float32), name="out_bias")
        if c.context_units:   # drawn last: the other weights start as without it
            self.context_proj = var(_glorot(rng, (C, P)), name="context_proj")

    def _build_merge(self, rng: np.random.Generator) -> None:
        # No initial-state weights: the merge LSTM starts from zeros and never sees the image.
        U, V, C, var = self.config.lstm_units, self.config.vocab_size, \
            self.config.feature_channels, tf.Variable
        self.merge_image = var(_glorot(rng, (C, U)), name="merge_image")
        self.merge_image_bias = var(np.zeros(U, np.float32), name="merge_image_bias")
        self.merge_hidden = var(_glorot(rng, (U, U)), name="merge_hidden")
        self.merge_hidden_bias = var(np.zeros(U, np.float32), name="merge_hidden_bias")
        self.out_word = var(_glorot(rng, (U, V)), name="out_word")
        self.out_bias = var(np.zeros(V, np.float32), name="out_bias")

    @property
    def projected_width(self) -> int:
        """Size of the last axis of what ``prepare`` returns as ``projected`` (an ensemble
        packs its members' along it)."""
        c = self.config
        return {"attention": c.attention_units + c.context_units
                + (self._per_image_rows if c.concept_inputs else 0),
                "merge": c.lstm_units}.get(c.decoder, 1)

    @property
    def _per_image_width(self) -> int:
        """Length of a concept decoder's per-image vector: [concept_in E | concept_out E |
        copy logits V] (`_per_image`)."""
        return 2 * self.config.embedding_dim + self.config.vocab_size

    @property
    def _per_image_rows(self) -> int:
        """Columns the per-image vector takes when folded across the L grid cells."""
        return -(-self._per_image_width // self.config.grid_cells)

    def _v(self, variable):
        # Weights may be stored as float16 or int8 in an exported model (half / a quarter
        # of the size); compute always runs in float32.
        if isinstance(variable, Int8Weight):
            return variable.dequantize()
        # (A bfloat16 tensor is a `with_weights_read` view's step matrix: kept as it is.)
        if variable.dtype in (tf.float32, tf.bfloat16):
            return variable
        return tf.cast(variable, tf.float32)

    def with_weights_read(self, matmul_dtype: str | None = None) -> CaptionDecoder:
        """A view of this decoder whose weights are float32 tensors, converted from their
        storage (int8, float16) once here rather than at every ``step``: a decode loop
        calls this before it starts (the same values, so the same results). With
        ``matmul_dtype`` "bfloat16" (default: the config's) the step matrices are
        bfloat16 instead and `_mm` multiplies in bfloat16. In a graph the view holds
        tensors, so it is for inference only, not training."""
        low = (matmul_dtype or self.config.matmul_dtype) == "bfloat16"
        view = object.__new__(type(self))
        view.__dict__.update({name: self._read(name, value, low)
                              if isinstance(value, (tf.Variable, Int8Weight)) else value
                              for name, value in vars(self).items()})
        return view

    def _read(self, name: str, value, low: bool):
        value = self._v(value)
        return tf.cast(value, tf.bfloat16) if low and name in STEP_MATRICES else value

    @staticmethod
    def _mm(x, w):
        """x @ w; a bfloat16 ``w`` (a `with_weights_read` view) multiplies in bfloat16
        and returns float32."""
        if w.dtype == tf.bfloat16:
            return tf.cast(tf.matmul(tf.cast(x, tf.bfloat16), w), tf.float32)
        return tf.matmul(x, w)

    def to_float16(self) -> CaptionDecoder:
        """Store every weight as float16 (for export); computation stays float32."""
        for name, value in list(vars(self).items()):
            if isinstance(value, tf.Variable) and value.dtype == tf.float32:
                setattr(self, name, tf.Variable(tf.cast(value, tf.float16), name=name))
        return self

    def to_int8(self) -> CaptionDecoder:
        """Store every weight matrix as int8 with per-column scales (for export); vectors
        (biases) as float16. Computation stays float32."""
        for name, value in list(vars(self).items()):
            if isinstance(value, tf.Variable) and value.shape.rank == 2 and value.shape[0] > 2:
                setattr(self, name, Int8Weight(value, per_row=name == "embedding", name=name))
        return self.to_float16()  # what is left: the bias vectors (and init_b's two rows)

    # -- pieces -------------------------------------------------------------------------
    def _lstm(self, x, h, c):
        z = self._mm(tf.concat([x, h], axis=-1), self._v(self.lstm_kernel)) + self._v(self.lstm_bias)
        i, f, g, o = tf.split(z, 4, axis=-1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        h = tf.sigmoid(o) * tf.tanh(c)
        return h, c

    def prepare(self, features, training: bool = False, concepts=None):
        """Per-image work done once: features [B, L, C] -> (features, projected [B, L, A]);
        for merge, projected is the image's Dense(U, relu) vector [B, 1, U]. An attention
        decoder packs after the A attention keys, along the last axis (so the search tiles
        and an ensemble packs them with the rest): the grid projected to P context values
        (``context_units``), then with concept inputs the per-image concept terms folded
        across the L cells (`_fold`); ``concepts`` [B, T], the head's scores, are then
        required."""
        features = tf.cast(features, tf.float32)
        if self.config.decoder == "attention":
            projected = tf.einsum("blc,ca->bla", features, self._v(self.att_feat))
            if self.config.context_units:   # the narrower values attention reads
                projected = tf.concat([projected, tf.einsum(
                    "blc,cp->blp", features, self._v(self.context_proj))], -1)
            if self.config.concept_inputs:
                if concepts is None:
                    raise ValueError("this decoder reads concept scores: pass concepts")
                projected = tf.concat([projected, self._fold(self._per_image(concepts))], -1)
        elif self.config.decoder == "merge":
            pooled = self._dropout(tf.reduce_mean(features, axis=1), training)
            projected = tf.nn.relu(tf.matmul(pooled, self._v(self.merge_image))
                                   + self._v(self.merge_image_bias))[:, None, :]
        else:
            projected = tf.zeros(tf.shape(features)[:2])[..., None]
        return features, projected

    def _per_image(self, concepts):
        """[B, T] concept scores -> [B, 2E + V]: the three terms they add at every step
        (to the word input, the deep output, the copy logits). The scores do not change
        from word to word, so these are products made once per image here rather than at
        each step (the copy path alone, T x V, was ~14 % of a step's multiplies)."""
        scores = tf.cast(concepts, tf.float32)
        return tf.concat([self._mm(scores, self._v(self.concept_in)),
                          self._mm(scores, self._v(self.concept_out)),
                          self._mm(scores, self._v(self.concept_copy))], -1)

    def _fold(self, per_image):
        """[B, D] -> [B, L, ceil(D / L)], zero-padded: the per-image vector travels in
        ``projected`` (which beam search tiles and an ensemble packs along its last axis)
        without being copied to every one of the L cells."""
        cells, rows = self.config.grid_cells, self._per_image_rows
        padded = tf.pad(per_image, [[0, 0], [0, cells * rows - self._per_image_width]])
        return tf.reshape(padded, [-1, cells, rows])

    def _unfold(self, folded):
        """`_fold`'s inverse: [B, L, rows] -> [B, D]."""
        flat = tf.reshape(folded, [tf.shape(folded)[0], -1])
        return flat[:, :self._per_image_width]

    def unpack(self, projected):
        """`prepare`'s packed ``projected`` -> its parts, a dict `step` also takes: "keys"
        [B, L, A]; "values" [B, L, P] (``context_units``); with concept inputs
        "concept_in", "concept_out" and "copy_logits" (`_per_image`'s three terms); for
        merge and Show-and-Tell "packed", as it is. A decode loop splits once per search:
        slicing the packed last axis at every step copied [rows, L, width] each time."""
        c = self.config
        if c.decoder != "attention":
            return {"packed": projected}
        A, P = c.attention_units, c.context_units
        if not (P or c.concept_inputs):
            return {"keys": projected}
        parts = {"keys": projected[..., :A]}
        if P:
            parts["values"] = projected[..., A:A + P]
        if c.concept_inputs:
            E, per_image = c.embedding_dim, self._unfold(projected[..., A + P:])
            parts.update(concept_in=per_image[:, :E], concept_out=per_image[:, E:2 * E],
                         copy_logits=per_image[:, 2 * E:])
        return parts

    def init_state(self, features, training: bool = False):
        """Initial (h, c) from the mean feature; Show-and-Tell also consumes the image;
        merge starts from zeros, as a Keras LSTM does."""
        if self.config.decoder == "merge":
            zeros = tf.zeros(tf.stack([tf.shape(features)[0], self.config.lstm_units]))
            return zeros, zeros
        mean = tf.reduce_mean(tf.cast(features, tf.float32), axis=1)
        h = tf.tanh(tf.matmul(mean, self._v(self.init_h)) + self._v(self.init_b)[0])
        c = tf.tanh(tf.matmul(mean, self._v(self.init_c)) + self._v(self.init_b)[1])
        if self.config.decoder == "show_and_tell":
            x = tf.matmul(mean, self._v(self.image_embed))
            x = self._dropout(x, training)
            h, c = self._lstm(x, h, c)
        return h, c

    def _dropout(self, x, training: bool):
        if training and self.config.dropout > 0:
            return tf.nn.dropout(x, rate=self.config.dropout)
        return x

    def step(self, words, h, c, features, projected, training: bool = False):
        """One word: ids [B] -> (logits [B, V], h, c, attention weights [B, L])."""
        x = tf.gather(self._v(self.embedding), words)
        parts = projected if isinstance(projected, dict) else self.unpack(projected)
        if self.config.decoder == "merge":
            return self._merge_step(x, h, c, features, parts["packed"], training)
        if self.config.decoder == "attention":
            keys, values = parts["keys"], parts.get("values", features)
            concept_in, concept_out = parts.get("concept_in", 0.0), parts.get("concept_out", 0.0)
            e = tf.tanh(keys + self._mm(h, self._v(self.att_hidden))[:, None, :] + self._v(self.att_bias))
            alpha = tf.nn.softmax(tf.squeeze(tf.einsum("bla,ak->blk", e, self._v(self.att_score)), -1))
            context = tf.einsum("bl,blc->bc", alpha, values)
            context = tf.sigmoid(self._mm(h, self._v(self.gate)) + self._v(self.gate_bias)) * context
            h, c = self._lstm(tf.concat([x + concept_in, context], axis=-1), h, c)
            deep = x + self._mm(self._dropout(h, training), self._v(self.out_hidden)) + self._mm(
                context, self._v(self.out_context)) + concept_out
        else:
            alpha = _uniform_attention(x, features)
            h, c = self._lstm(x, h, c)
            deep = x + self._mm(self._dropout(h, training), self._v(self.out_hidden))
        logits = self._mm(self._dropout(tf.tanh(deep), training), self._v(self.out_word)) + self._v(self.out_bias)
        if self.config.concept_inputs:  # attention only (__init__), scores read above
            gate = tf.sigmoid(self._mm(h, self._v(self.copy_gate)) + self._v(self.copy_gate_bias))
            logits += gate * parts["copy_logits"]
        return logits, h, c, alpha

    def _merge_step(self, x, h, c, features, projected, training: bool):
        h, c = self._lstm(self._dropout(x, training), h, c)
        # projected may come broadcast along L (an ensemble packs members alike).
        merged = projected[:, 0, :] + h
        hidden = tf.nn.relu(self._mm(merged, self._v(self.merge_hidden))
                            + self._v(self.merge_hidden_bias))
        logits = self._mm(hidden, self._v(self.out_word)) + self._v(self.out_bias)
        return logits, h, c, _uniform_attention(x, features)

    # -- teacher forcing ----------------------------------------------------------------
    def teacher_forced(self, features, tokens, training: bool = False, concepts=None):
        """features [B, L, C], tokens [B, T+1] (<start> .. <end> <pad>..) ->
        logits [B, T, V] predicting tokens[:, 1:], attention [B, T, L]."""
        features, projected = self.prepare(features, training, concepts)
        projected = self.unpack(projected)     # split once, not at every step
        h, c = self.init_state(features, training)
        inputs = tf.transpose(tokens[:, :-1])  # [T, B]
        steps = tf.shape(inputs)[0]
        logits_ta = tf.TensorArray(tf.float32, size=steps)
        alpha_ta = tf.TensorArray(tf.float32, size=steps)
        for t in tf.range(steps):
            logits, h, c, alpha = self.step(inputs[t], h, c, features, projected, training)
            logits_ta = logits_ta.write(t, logits)
            alpha_ta = alpha_ta.write(t, alpha)
        return (tf.transpose(logits_ta.stack(), [1, 0, 2]),
                tf.transpose(alpha_ta.stack(), [1, 0, 2]))


def reads_concepts(decoder) -> bool:
    """Whether a decoder (or any member of an ensemble) needs concept scores to decode."""
    return any(m.config.concept_inputs for m in getattr(decoder, "members", [decoder]))


def step_reads_features(decoder) -> bool:
    """Whether ``step`` reads the values of its ``features`` argument (an attention
    decoder without ``context_units`` attends over them), not just their grid size (L):
    a beam search then need not gather them per row."""
    return any(m.config.decoder == "attention" and not m.config.context_units
               for m in getattr(decoder, "members", [decoder]))


def _uniform_attention(rows, features):
    """[B, L] of 1/L: the weights of a decoder that does not attend (one row per ``rows``)."""
    n = tf.shape(features)[1]
    return tf.fill(tf.stack([tf.shape(rows)[0], n]), 1.0 / tf.cast(n, tf.float32))
