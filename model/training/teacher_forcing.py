"""The cross-entropy objective of `altbeam train` (teacher forcing on cached features),
as an objective of the one training loop (model/training/loop.py).

`FineTuning` (model/training/fine_tune.py) extends it with the encoder's top blocks;
the hooks it overrides are `checkpointed`, `best_weights` and `validation_set`.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.feature_records import FeatureSet
from altbeam.model.data.vocab import Vocabulary
from altbeam.model.nets.decoder import CaptionDecoder
from altbeam.model.training.common import batches, caption_xent, encode_pairs, pad, word_mask


def learning_rate_at(base: float, epoch: int) -> float:
    """The schedule: ``base`` for three epochs, then 0.8x per epoch."""
    return base * (0.8 ** max(0, epoch - 3))


class TeacherForcing:
    """Owns the decoder, the optimiser and the compiled train step."""

    label, unit, progress_every = "epoch", "step", 100
    shown, seconds_key = ("loss", "loss"), "train_seconds"

    def __init__(self, config: ModelConfig, embeddings: np.ndarray | None = None):
        import keras
        self.config = config
        self.decoder = CaptionDecoder(config, embeddings)
        self.optimizer = keras.optimizers.Adam(config.learning_rate, clipnorm=5.0)
        L, C = config.grid_cells, config.feature_channels
        self.train_step = tf.function(self._train_step, input_signature=[
            tf.TensorSpec([None, L, C], tf.float16), tf.TensorSpec([None, None], tf.int32)])
        self.data: FeatureSet | None = None
        self.pairs: list = []
        self.lr = config.learning_rate

    def use_data(self, data: FeatureSet, vocab: Vocabulary) -> None:
        self.data, self.pairs = data, encode_pairs(data, vocab, self.config.max_length)

    def loss(self, features, tokens, concepts=None):
        """(loss to minimise, caption cross-entropy) of the decoder on features [B, L, C]
        (and concept scores [B, T] for a decoder with concept inputs)."""
        c = self.config
        logits, alpha = self.decoder.teacher_forced(features, tokens, training=True,
                                                    concepts=concepts)
        mask = word_mask(tokens)
        caption_loss = caption_xent(logits, tokens, c, mask)
        loss = caption_loss
        if c.decoder == "attention" and c.attention_penalty:
            # Doubly stochastic attention: each cell attended ~once over the caption.
            coverage = tf.reduce_sum(alpha * mask[..., None], axis=1)
            loss += c.attention_penalty * tf.reduce_mean(tf.reduce_sum(
                tf.square(1.0 - coverage), axis=-1)) / tf.cast(tf.shape(alpha)[-1], tf.float32)
        return loss, caption_loss

    def _train_step(self, features, tokens):
        with tf.GradientTape() as tape:
            loss, caption_loss = self.loss(features, tokens)
        variables = self.decoder.trainable_variables
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        return caption_loss

    def checkpointed(self) -> dict:
        """What the resumable checkpoint holds (besides the loop's epoch and best)."""
        return {"decoder": self.decoder, "optimizer": self.optimizer}

    def best_weights(self) -> dict:
        """What the best checkpoint (RUN/best/ckpt) holds."""
        return {"decoder": self.decoder}

    def validation_set(self, data: FeatureSet) -> FeatureSet:
        """``data`` as the decoder sees it now (cached grids: as they are)."""
        return data

    def concepts_of(self, data: FeatureSet):
        """Concept scores of a split for decoding (None: this decoder reads none)."""
        return None

    def begin_epoch(self, epoch: int, rng):
        self.lr = learning_rate_at(self.config.learning_rate, epoch)
        self.optimizer.learning_rate.assign(self.lr)
        size = self.config.batch_size
        return (len(self.pairs) + size - 1) // size, batches(self.pairs, size, rng)

    def step(self, batch) -> dict[str, float]:
        idx = [i for i, _ in batch]
        loss = self.train_step(tf.constant(self.data.features[idx]),
                               tf.constant(pad([s for _, s in batch])))
        return {"loss": float(loss)}

    def record(self, epoch: int, means: dict[str, float]) -> dict:
        return {"epoch": epoch, "loss": means["loss"], "lr": self.lr}

    def summary(self, record: dict) -> str:
        return (f"loss {record['loss']:.3f}  val CIDEr {record['val_cider']:.3f}  "
                f"BLEU-4 {record['val_bleu4']:.3f}")
