"""A tiny random-weight captioner with the full serving contract, for tests.

Same decoder, beam search and export path as the real model; only the encoder is a
two-layer random CNN and the vocabulary is a few dozen words, so it builds and
exports in seconds. Its captions are word salad by design.

Importing this module registers the encoder "tiny" (model/nets/encoder.py
`register_encoder`), so `build_features(..., encoder="tiny")`, `export` and
`build_encoder("tiny")` work in this process. Production code never imports tests:
a child process (a CLI run by a test, a Beam worker of its own) gets the encoder with
``ALTBEAM_PLUGINS=tests.support.tiny`` in its environment (see `plugin_env`), which
the encoder lookup imports on first use of an unknown name.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.vocab import SPECIALS
from altbeam.model.nets.decoder import CaptionDecoder
from altbeam.model.nets.encoder import PLUGINS_ENV, EncoderSpec, register_encoder
from altbeam.model.serving.captioner import Captioner

TINY_ENCODER = "tiny"   # the encoder name this module registers
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
    base = dict(encoder=TINY_ENCODER, image_size=32, feature_channels=16, grid=4,
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


def _build_tiny_encoder(weights, seed: int = 0) -> TinyEncoder:
    # Random weights by design: there are none to load.
    return TinyEncoder(_SPEC.feature_channels, seed)


_SPEC = tiny_config()
register_encoder(EncoderSpec(TINY_ENCODER, image_size=_SPEC.image_size,
                             channels=_SPEC.feature_channels, grid=_SPEC.grid,
                             build=_build_tiny_encoder))


def plugin_env(environ=None) -> dict:
    """A copy of ``environ`` (default: this process's) for a child process that must
    know the "tiny" encoder."""
    env = dict(os.environ if environ is None else environ)
    plugins = [p for p in env.get(PLUGINS_ENV, "").split(",") if p]
    env[PLUGINS_ENV] = ",".join(dict.fromkeys([*plugins, __name__]))
    return env
