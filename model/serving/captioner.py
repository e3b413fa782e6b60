"""The exported captioner: pixels in, captions out, everything inside one graph.

Contract (DESIGN.md), relied on by pipelines/:

* ``serving_default(images: uint8 [N, S, S, 3]) -> {captions: string [N, K],
  scores: float32 [N, K]}``, K beams best first.
* ``caption_with_attention(images)`` additionally returns, for the best beam,
  ``words: string [N, T]`` and ``attention: float32 [N, T, G, G]`` (the soft-attention
  map over the encoder's G x G grid for each generated word), for reports.

S, K, T and G are fixed at export time and readable from the signatures and from
``model_card.json``.
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.vocab import END_ID
from altbeam.model.serving.beam_search import beam_search, tokens_to_text


class Captioner(tf.Module):
    """Encoder + decoder + in-graph beam search + word lookup."""

    def __init__(self, encoder, decoder, words: list[str], config: ModelConfig):
        super().__init__(name="captioner")
        self.encoder = encoder
        self.decoder = decoder
        self.words = tf.Variable(words, dtype=tf.string, trainable=False, name="words")
        self.config = config
        S = config.image_size
        spec = tf.TensorSpec([None, S, S, 3], tf.uint8, name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.serve_attention = tf.function(self._serve_attention, input_signature=[spec])

    def _search(self, images):
        x = tf.cast(images, tf.float32)
        grid = self.encoder(x, training=False)
        shape = tf.shape(grid)
        features = tf.reshape(grid, [shape[0], shape[1] * shape[2], shape[3]])
        c = self.config
        return beam_search(self.decoder, features, c.beam_width, c.max_length, c.length_alpha,
                           c.ban_unk, c.block_repeated_trigrams)

    def _serve(self, images):
        out = self._search(images)
        return {"captions": tokens_to_text(self.words, out["tokens"]), "scores": out["scores"]}

    def _serve_attention(self, images):
        out = self._search(images)
        best = out["tokens"][:, 0]                       # [N, T]
        G = self.config.grid
        attention = out["attention"][:, 0]               # [N, T, L]
        attention = tf.reshape(attention, [tf.shape(attention)[0], tf.shape(attention)[1], G, G])
        ended = tf.cumsum(tf.cast(tf.equal(best, END_ID), tf.int32), axis=-1, exclusive=True) > 0
        words = tf.where(ended | (best <= END_ID), "", tf.gather(self.words, best))
        return {"captions": tokens_to_text(self.words, out["tokens"]), "scores": out["scores"],
                "words": words, "attention": attention}

    def save(self, path: str, card: dict | None = None) -> str:
        tf.saved_model.save(self, path, signatures={
            "serving_default": self.serve, "caption_with_attention": self.serve_attention})
        write_model_card(path, self.config, card or {})
        return path


def write_model_card(path: str, config: ModelConfig, extra: dict) -> None:
    card = {
        "name": "altbeam-captioner",
        "version": "0.0.0-untrained",
        "backbone": config.encoder,
        "decoder": config.decoder,
        "image_size": config.image_size,
        "grid": config.grid,
        "beam_width": config.beam_width,
        "max_length": config.max_length,
        "length_alpha": config.length_alpha,
        "block_repeated_trigrams": config.block_repeated_trigrams,
        "vocab_size": config.vocab_size,
        "config": json.loads(config.to_json()),
    }
    card.update(extra)
    with open(os.path.join(path, "model_card.json"), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
