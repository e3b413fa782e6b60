"""The exported captioner: pixels in, captions out, everything inside one graph.

Contract (DESIGN.md), relied on by pipelines/:

* ``serving_default(images: uint8 [N, S, S, 3]) -> {captions: string [N, K],
  scores: float32 [N, K]}``, K beams best first.
* ``caption_with_attention(images)`` additionally returns, for the best beam,
  ``words: string [N, T]`` and ``attention: float32 [N, T, G, G]`` (the soft-attention
  map over the encoder's G x G grid for each generated word), for reports.
* With a concept head (model/nets/concept_head.py) both signatures also return
  ``concepts: string [N, Kc]`` and ``concept_scores: float32 [N, Kc]``, the top Kc
  concepts best first, computed from the same encoder pass as the captions; without
  one the outputs are exactly the above.
* With a concept guide (model/serving/concept_guide.py, `altbeam export
  --concept-decoding`) the beam search is steered by the head's scores and may write
  the guide's novel words; the outputs' names, types and shapes are the same.
* With ``jit_compile`` (`altbeam export --jit-compile`) the beam search (numbers only:
  the word lookup's strings stay outside) is compiled by XLA, once per batch size the
  model meets; outputs are the same (scores within float32 rounding).

S, K, T, G and Kc are fixed at export time and readable from the signatures and from
``model_card.json`` (``concept_head`` records the head).
"""
from __future__ import annotations

import json
import os

import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.vocab import END_ID
from altbeam.model.nets.decoder import reads_concepts
from altbeam.model.serving.beam_search import beam_search, tokens_to_text


class Captioner(tf.Module):
    """Encoder + decoder + in-graph beam search + word lookup (+ optional concept head)."""

    def __init__(self, encoder, decoder, words: list[str], config: ModelConfig,
                 concept_head=None, concept_guide=None, jit_compile: bool = False):
        super().__init__(name="captioner")
        if concept_guide is not None and concept_head is None:
            raise ValueError("a concept guide needs a concept head to read scores from")
        self.encoder = encoder
        self.decoder = decoder
        self.concept_head = concept_head
        self.concept_guide = concept_guide
        self.words = tf.Variable(words, dtype=tf.string, trainable=False, name="words")
        self.config = config
        self.jit_compile = bool(jit_compile)
        S = config.image_size
        spec = tf.TensorSpec([None, S, S, 3], tf.uint8, name="images")
        self.serve = tf.function(self._serve, input_signature=[spec])
        self.serve_attention = tf.function(self._serve_attention, input_signature=[spec])

    def _search(self, images):
        """One encoder pass -> (beam search outputs, concept outputs or {})."""
        grid = self.encoder(tf.cast(images, tf.float32), training=False)
        shape = tf.shape(grid)
        features = tf.reshape(grid, [shape[0], shape[1] * shape[2], shape[3]])
        c, guide = self.config, self.concept_guide
        needs_scores = guide is not None or reads_concepts(self.decoder)
        scores = self.concept_head.scores(grid) if needs_scores else None
        def search(features, scores):
            return beam_search(self.decoder, features, c.beam_width, c.max_length,
                               c.length_alpha, c.ban_unk, c.block_repeated_trigrams, guide,
                               scores, block_repeated_words=c.block_repeated_words,
                               drop_finished=not self.jit_compile)

        if self.jit_compile:
            search = tf.function(search, jit_compile=True)
        out = search(features, scores)
        return out, (self.concept_head(grid) if self.concept_head is not None else {})

    def _lookup(self):
        """(words the tokens index, words written "an …")."""
        if self.concept_guide is None:
            return self.words, ()
        return self.concept_guide.words(self.words), self.concept_guide.an_words()

    def _serve(self, images):
        out, concepts = self._search(images)
        words, an_words = self._lookup()
        return {"captions": tokens_to_text(words, out["tokens"], an_words),
                "scores": out["scores"], **concepts}

    def _serve_attention(self, images):
        out, concepts = self._search(images)
        words, an_words = self._lookup()
        best = out["tokens"][:, 0]                       # [N, T]
        G = self.config.grid
        attention = out["attention"][:, 0]               # [N, T, L]
        attention = tf.reshape(attention, [tf.shape(attention)[0], tf.shape(attention)[1], G, G])
        ended = tf.cumsum(tf.cast(tf.equal(best, END_ID), tf.int32), axis=-1, exclusive=True) > 0
        best_words = tf.where(ended | (best <= END_ID), "", tf.gather(words, best))
        return {"captions": tokens_to_text(words, out["tokens"], an_words),
                "scores": out["scores"], "words": best_words, "attention": attention,
                **concepts}

    def save(self, path: str, card: dict | None = None) -> str:
        tf.saved_model.save(self, path, signatures={
            "serving_default": self.serve, "caption_with_attention": self.serve_attention})
        card = dict(card or {})
        card.pop("concept_head", None)  # only the head attached now is described
        card.pop("concept_decoding", None)
        card["jit_compile"] = self.jit_compile
        if self.concept_head is not None:
            card["concept_head"] = self.concept_head.describe()
            card["concept_decoding"] = (self.concept_guide.describe()
                                        if self.concept_guide is not None else {"mode": "none"})
        write_model_card(path, self.config, card)
        return path


def config_card(config: ModelConfig) -> dict:
    """The model card's fields that follow from the config alone."""
    return {
        "backbone": config.encoder,
        "decoder": config.decoder,
        "image_size": config.image_size,
        "grid": config.grid,
        "beam_width": config.beam_width,
        "max_length": config.max_length,
        "length_alpha": config.length_alpha,
        "block_repeated_trigrams": config.block_repeated_trigrams,
        "block_repeated_words": config.block_repeated_words,
        "matmul_dtype": config.matmul_dtype,
        "vocab_size": config.vocab_size,
        "config": json.loads(config.to_json()),
    }


def write_model_card(path: str, config: ModelConfig, extra: dict) -> None:
    card = {"name": "altbeam-captioner", "version": "0.0.0-untrained", **config_card(config)}
    card.update(extra)
    with open(os.path.join(path, "model_card.json"), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
