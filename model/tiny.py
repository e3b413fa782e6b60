"""A tiny random-weight captioner with the full serving contract, for tests.

Same decoder, beam search and export path as the real model; only the encoder is a
two-layer random CNN and the vocabulary is a few dozen words, so it builds and
exports in seconds. Its captions are word salad by design.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.vocab import SPECIALS
from altbeam.model.nets.decoder import CaptionDecoder
from altbeam.model.serving.captioner import Captioner

TINY_WORDS = ["a", "dog", "cat", "man", "woman", "on", "in", "the", "with", "grass", "water",
              "red", "is", "running", "sitting", "ball", "street", "two", "of", "and"]


class TinyEncoder(tf.Module):
    """float32 pixels [N, S, S, 3] in 0..255 -> random features [N, S/8, S/8, C]."""

    def __init__(self, channels: int = 16, seed: int = 0):
        super().__init__(name="tiny_encoder")
        rng = np.random.default_rng(seed)
        self.k1 = tf.Variable(rng.normal(0, 0.3, (3, 3, 3, 8)).astype(np.float32))
        self.k2 = tf.Variable(rng.normal(0, 0.3, (3, 3, 8, channels)).astype(np.float32))

    def __call__(self, x, training: bool = False):
        x = (x - 127.0) / 128.0
        x = tf.nn.relu(tf.nn.conv2d(x, self.k1, strides=4, padding="SAME"))
        return tf.nn.relu6(tf.nn.conv2d(x, self.k2, strides=2, padding="SAME"))


def tiny_config(**overrides) -> ModelConfig:
    base = dict(encoder="tiny", image_size=32, feature_channels=16, grid=4,
                embedding_dim=16, lstm_units=24, attention_units=12, dropout=0.0,
                vocab_size=len(SPECIALS) + len(TINY_WORDS), max_length=8, beam_width=3)
    base.update(overrides)
    return ModelConfig(**base)


def build_tiny_captioner(**overrides) -> Captioner:
    config = tiny_config(**overrides)
    return Captioner(TinyEncoder(config.feature_channels, config.seed),
                     CaptionDecoder(config), list(SPECIALS) + TINY_WORDS, config)


def export_tiny_model(path: str, **overrides) -> str:
    """Build and save the tiny model with its model_card.json; returns path."""
    return build_tiny_captioner(**overrides).save(
        path, {"name": "altbeam-tiny-random", "version": "tiny-random-1",
               "training_data": "none: random weights, for tests only"})
