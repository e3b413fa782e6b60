"""What the training objectives share: batching, the caption loss, the validation
split and scoring, and rebuilding a decoder from a run folder.

train.py (teacher forcing), scst.py (self-critical) and lm_pretrain.py (text only)
import this module and model/training/loop.py; neither imports any of them back.
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.feature_records import FeatureSet
from altbeam.model.data.vocab import PAD_ID, Vocabulary
from altbeam.model.nets.decoder import CaptionDecoder


def encode_pairs(data: FeatureSet, vocab: Vocabulary, max_length: int):
    """Every (image index, token ids) pair of a split."""
    return [(i, vocab.encode(c, max_length)) for i, caps in enumerate(data.captions) for c in caps]


def batches(pairs, batch_size: int, rng: np.random.Generator):
    """Shuffled batches, roughly length-bucketed (less padding, same randomness)."""
    order = rng.permutation(len(pairs))
    chunk = batch_size * 32
    for s in range(0, len(order), chunk):
        block = sorted(order[s:s + chunk], key=lambda k: len(pairs[k][1]))
        groups = [block[j:j + batch_size] for j in range(0, len(block), batch_size)]
        for g in rng.permutation(len(groups)):
            yield [pairs[k] for k in groups[g]]


def pad(seqs) -> np.ndarray:
    out = np.full((len(seqs), max(map(len, seqs))), PAD_ID, np.int32)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out


def word_mask(tokens):
    """1.0 on the real (non-pad) words of tokens[:, 1:], the positions logits predict."""
    return tf.cast(tf.not_equal(tokens[:, 1:], PAD_ID), tf.float32)


def caption_xent(logits, tokens, config: ModelConfig, mask=None):
    """Mean cross-entropy over the real (non-pad) words of tokens[:, 1:], with the
    config's label smoothing. ``mask``: word_mask(tokens), when the caller has it."""
    targets = tokens[:, 1:]
    mask = word_mask(tokens) if mask is None else mask
    labels = tf.one_hot(targets, config.vocab_size)
    if config.label_smoothing:
        labels = labels * (1 - config.label_smoothing) + config.label_smoothing / config.vocab_size
    xent = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
    return tf.reduce_sum(xent * mask) / tf.reduce_sum(mask)


def decode_features(decoder, features: np.ndarray, beam_width: int, max_length: int,
                    length_alpha: float, words: list[str], batch: int = 128,
                    ban_unk: bool = True, block_repeated_trigrams: bool = False,
                    concepts: np.ndarray | None = None, guide=None,
                    block_repeated_words: bool = False) -> list[str]:
    """Best caption per image, straight from cached features (no encoder); ``concepts``
    [N, T]: the images' scores of every concept, for a decoder with concept inputs or a
    ``guide`` (a ConceptGuide over ``words``: concept-guided decoding as exported)."""
    from altbeam.model.serving.beam_search import beam_search, tokens_to_text
    if guide is not None and concepts is None:
        raise ValueError("concept-guided decoding needs the images' concept scores")
    table = tf.constant(words) if guide is None else guide.words(tf.constant(words))
    an_words = guide.an_words() if guide is not None else ()
    search = tf.function(lambda f, s: tokens_to_text(table, beam_search(
        decoder, f, beam_width, max_length, length_alpha, ban_unk,
        block_repeated_trigrams, guide=guide, concept_scores=s,
        block_repeated_words=block_repeated_words)["tokens"][:, 0], an_words))
    out = []
    for s in range(0, len(features), batch):
        scores = None if concepts is None else tf.constant(concepts[s:s + batch], tf.float32)
        out += [t.decode() for t in search(tf.constant(features[s:s + batch]), scores).numpy()]
    return out


def validate(decoder, data: FeatureSet, config: ModelConfig, words: list[str],
             beam_width: int | None = None, concepts: np.ndarray | None = None) -> dict:
    from altbeam.model.evaluation.metrics import score_captions
    hyps = decode_features(decoder, data.features, beam_width or config.beam_width,
                           config.max_length, config.length_alpha, words,
                           ban_unk=config.ban_unk,
                           block_repeated_trigrams=config.block_repeated_trigrams,
                           concepts=concepts)
    refs = {i: caps for i, caps in zip(data.image_ids, data.captions)}
    return score_captions(refs, dict(zip(data.image_ids, hyps)), scorers=("bleu", "cider"),
                          tokenizer="simple")


def carve_validation(train: FeatureSet, n: int, seed: int) -> tuple[FeatureSet, FeatureSet]:
    order = np.random.default_rng(seed).permutation(len(train))
    return train.subset(sorted(order[n:])), train.subset(sorted(order[:n]))


def validation_split(full: FeatureSet, val_images: int,
                     config: ModelConfig) -> tuple[FeatureSet, FeatureSet]:
    """(training, validation) as `altbeam train` carves them: ``val_images`` (a fifth of
    the split at most), chosen by the run's split seed."""
    return carve_validation(full, min(val_images, len(full) // 5), config.validation_seed)


def load_decoder(run_dir: str, which: str = "best") -> tuple[CaptionDecoder, Vocabulary, ModelConfig]:
    """Rebuild a trained decoder from a run folder (``best`` or ``latest`` weights)."""
    config = ModelConfig.from_json(open(os.path.join(run_dir, "config.json")).read())
    vocab = Vocabulary.load(os.path.join(run_dir, "vocab.json"))
    decoder = CaptionDecoder(config)
    if which == "best" and tf.io.gfile.exists(os.path.join(run_dir, "best", "ckpt.index")):
        tf.train.Checkpoint(decoder=decoder).read(os.path.join(run_dir, "best", "ckpt")).expect_partial()
    else:
        latest = tf.train.latest_checkpoint(os.path.join(run_dir, "checkpoints"))
        if not latest:
            raise FileNotFoundError(f"no checkpoint in {run_dir}: train first")
        tf.train.Checkpoint(decoder=decoder).read(latest).expect_partial()
    return decoder, vocab, config
