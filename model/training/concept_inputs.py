"""Training a decoder that reads concept scores, on images and on text-only captions.

The family of DCC / NOC (Hendricks et al. 2016, Venugopalan et al. 2017), LSTM-A and
LSTM-C's copying (Yao et al. 2017): the decoder (``ModelConfig.concept_inputs``,
model/nets/decoder.py) sees the concept head's score of every concept at every word,
its copy path starting from `copy_table`, and two kinds of caption train it in the same
batches:

* image captions: the cached feature grid and the concept head's scores of that grid
  (model/nets/concept_head.py, the head the exported model computes from the same
  forward pass); with probability ``grid_dropout`` the grid is zeroed, so the decoder
  also learns to caption from the concepts alone;
* text-only captions (COCO / Flickr30k caption files without pixels): an all-zero grid
  and a concept vector made from the concepts the caption names (`text_concept_ids`),
  with noise, because at serving time a classifier gives them (`noisy_concept_scores`).
  Only concepts the head can judge are set: the others are always 0 when serving.

That is how a word the Flickr8k photos never show ("bear", "toilet", "broccoli") gets a
path from its concept's score to its output: from the captions that name it.

The run folder keeps a copy of the detectors the scores were computed with
(``RUN/concept_detectors.npz``): export attaches the same head (`check_export_head`).
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from altbeam.model.config import ModelConfig
from altbeam.model.data.concepts import CONCEPT_INDEX, CONCEPTS, concepts_in_caption
from altbeam.model.data.feature_records import FeatureSet
from altbeam.model.data.vocab import Vocabulary
from altbeam.model.serving.caption_status import covered_concepts, judged_as
from altbeam.model.training.common import pad
from altbeam.model.training.teacher_forcing import TeacherForcing

DETECTORS_FILE = "concept_detectors.npz"   # the run's copy of the head's detectors
RECORD_FILE = "concept_inputs.json"
# Scores a text caption's concepts get: a named concept the "classifier" sees scores in
# PRESENT; one it misses (text_concept_drop) and a few spurious ones score in ABSENT.
PRESENT, ABSENT, SPURIOUS_PER_CAPTION = (0.3, 1.0), (0.0, 0.1), 2
# The copy path's start: a word's logit rises by this x its concept's score (the gate
# halves it at first), a head start for rare words the LSTM learns slowly.
COPY_INIT = 2.0


def copy_table(words: list[str], value: float = COPY_INIT) -> np.ndarray:
    """[T, V] start of the decoder's copy path: ``value`` where vocabulary word v names
    concept t (any surface form; person words also under person, as the gate judges them),
    else 0."""
    from altbeam.model.data.concepts import concept_table
    table = concept_table()
    out = np.zeros((len(CONCEPTS), len(words)), np.float32)
    for v, word in enumerate(words):
        concept = table.term_of(word)
        for c in {concept, judged_as(concept)} if concept else ():
            out[CONCEPT_INDEX[c], v] = value
    return out


def head_covered(head) -> frozenset[str]:
    """Concepts ``head`` can score (ImageNet-mapped plus its detectors')."""
    detectors = head.detectors.concepts if head.detectors is not None else ()
    return covered_concepts(detectors)


def grid_concept_scores(head, features: np.ndarray, grid: int, batch: int = 256) -> np.ndarray:
    """Cached features [N, G*G, C] -> the head's scores of every concept [N, T]."""
    out = []
    for s in range(0, len(features), batch):
        chunk = tf.cast(features[s:s + batch], tf.float32)
        chunk = tf.reshape(chunk, [-1, grid, grid, chunk.shape[-1]])
        out.append(head.scores(chunk).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(CONCEPTS)), np.float32)


def text_concept_ids(caption: str, covered: frozenset[str]) -> np.ndarray:
    """Columns (CONCEPTS order) of the judgeable concepts a caption names; a person word
    also sets person, as the gate judges it."""
    named = set()
    for concept in concepts_in_caption(caption):
        named |= {c for c in (concept, judged_as(concept)) if c in covered}
    return np.array(sorted(CONCEPT_INDEX[c] for c in named), np.int32)


def noisy_concept_scores(ids: list[np.ndarray], covered_ids: np.ndarray, drop: float,
                         rng: np.random.Generator) -> np.ndarray:
    """[B, T] scores for text captions: each named concept scores in PRESENT, or in
    ABSENT with probability ``drop``; SPURIOUS_PER_CAPTION other judgeable concepts
    score in ABSENT; every other concept 0."""
    scores = np.zeros((len(ids), len(CONCEPTS)), np.float32)
    for row, named in enumerate(ids):
        spurious = rng.choice(covered_ids, SPURIOUS_PER_CAPTION, replace=False)
        scores[row, spurious] = rng.uniform(*ABSENT, SPURIOUS_PER_CAPTION)
        if len(named):
            missed = rng.random(len(named)) < drop
            scores[row, named] = np.where(missed, rng.uniform(*ABSENT, len(named)),
                                          rng.uniform(*PRESENT, len(named)))
    return scores


class ConceptTeacherForcing(TeacherForcing):
    """Teacher forcing on image captions and text-only captions, with concept inputs
    (module docstring). Pairs are (image index, tokens) for images and (-1 - j, tokens)
    for text caption j; both kinds are shuffled into the same batches."""

    def __init__(self, config: ModelConfig, head, text_captions: list[str],
                 embeddings: np.ndarray | None = None):
        if not config.concept_inputs:
            raise ValueError("ConceptTeacherForcing trains a decoder with concept_inputs")
        super().__init__(config, embeddings)
        self.head, self.text_captions = head, list(text_captions)
        covered = head_covered(head)
        self.covered_ids = np.array([t for t, c in enumerate(CONCEPTS) if c in covered])
        self.text_ids = [text_concept_ids(c, covered) for c in self.text_captions]
        L, C = config.grid_cells, config.feature_channels
        self.train_step = tf.function(self._concept_train_step, input_signature=[
            tf.TensorSpec([None, L, C], tf.float16), tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([None, len(CONCEPTS)], tf.float32)])
        self.rng = np.random.default_rng(config.seed)
        self.image_scores = np.zeros((0, len(CONCEPTS)), np.float32)

    def use_data(self, data: FeatureSet, vocab: Vocabulary) -> None:
        super().use_data(data, vocab)
        self.decoder.concept_copy.assign(copy_table(vocab.words))  # a resume restores later
        self.image_scores = self.concepts_of(data)
        self.image_pairs = self.pairs
        self.text_pairs = [(-1 - j, vocab.encode(c, self.config.max_length))
                           for j, c in enumerate(self.text_captions)]
        self.pairs = self.image_pairs + self.text_pairs

    def begin_epoch(self, epoch: int, rng):
        """Every image caption, and the text captions of this epoch (all, or a fresh
        draw of ``text_per_image`` per image caption)."""
        share = self.config.text_per_image
        if share > 0:
            n = min(len(self.text_pairs), round(share * len(self.image_pairs)))
            drawn = rng.choice(len(self.text_pairs), n, replace=False)
            self.pairs = self.image_pairs + [self.text_pairs[j] for j in sorted(drawn)]
        return super().begin_epoch(epoch, rng)

    def concepts_of(self, data: FeatureSet) -> np.ndarray:
        """The head's scores of a split's cached grids (what validation decodes with)."""
        return grid_concept_scores(self.head, data.features, self.config.grid)

    def _concept_train_step(self, features, tokens, concepts):
        with tf.GradientTape() as tape:
            loss, caption_loss = self.loss(features, tokens, concepts)
        variables = self.decoder.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return caption_loss

    def batch_inputs(self, batch) -> tuple[np.ndarray, np.ndarray]:
        """(features [B, L, C] float16, concepts [B, T]) of a batch of pairs."""
        rows = np.array([i for i, _ in batch])
        image = rows >= 0
        features = np.zeros((len(rows),) + self.data.features.shape[1:], np.float16)
        keep = image & (self.rng.random(len(rows)) >= self.config.grid_dropout)
        features[keep] = self.data.features[rows[keep]]
        concepts = np.zeros((len(rows), len(CONCEPTS)), np.float32)
        concepts[image] = self.image_scores[rows[image]]
        text = np.flatnonzero(~image)
        if len(text):
            concepts[text] = noisy_concept_scores([self.text_ids[-1 - rows[k]] for k in text],
                                                  self.covered_ids,
                                                  self.config.text_concept_drop, self.rng)
        return features, concepts

    def step(self, batch) -> dict[str, float]:
        features, concepts = self.batch_inputs(batch)
        loss = self.train_step(tf.constant(features), tf.constant(pad([s for _, s in batch])),
                               tf.constant(concepts))
        return {"loss": float(loss)}


def keep_with_run(run_dir: str, head, text_record: dict,
                  imagenet_weights: str = "imagenet") -> None:
    """RUN/concept_detectors.npz (the head's detectors) and RUN/concept_inputs.json
    (with ``imagenet_weights``, where the head's ImageNet layer was read: `run_concept_head`
    reads it back)."""
    from altbeam.model.nets.concept_head import save_detectors
    d = head.detectors
    if d is not None:
        save_detectors(os.path.join(run_dir, DETECTORS_FILE), d.kernel, d.bias, d.concepts,
                       d.encoder)
    record = {"detectors": d.source if d is not None else None,
              "imagenet": head.imagenet_source, "imagenet_weights": imagenet_weights,
              "judged_concepts": len(head_covered(head)),
              **text_record}
    with open(os.path.join(run_dir, RECORD_FILE), "w") as f:
        json.dump(record, f, indent=2)


def run_detectors(run_dir: str) -> str | None:
    """The detectors file a concept-input run was trained with (None: ImageNet only)."""
    path = os.path.join(run_dir, DETECTORS_FILE)
    return path if os.path.exists(path) else None


def check_export_head(run_dirs: list[str], head) -> None:
    """A decoder trained on one head's scores must be exported with that head: the same
    detector concepts and weights. SystemExit naming the run otherwise."""
    if head is None:
        raise SystemExit(f"altbeam export: {run_dirs[0]} reads concept scores; export it "
                         f"with --concepts (its detectors: {run_dirs[0]}/{DETECTORS_FILE})")
    for run in run_dirs:
        if not os.path.exists(os.path.join(run, RECORD_FILE)):
            continue
        trained = run_detectors(run)
        d = head.detectors
        same = (trained is None and d is None) or (
            trained is not None and d is not None and _same_detectors(trained, d))
        if not same:
            hint = f" (pass --detectors {trained})" if trained else " (no --detectors)"
            raise SystemExit(f"altbeam export: {run} was trained on the scores of "
                             f"{trained or 'a head without detectors'}; the head given has "
                             f"{d.source if d is not None else 'none'}{hint}")


def _same_detectors(path: str, detectors) -> bool:
    from altbeam.model.nets.concept_head import load_detectors
    saved = load_detectors(path)
    return (saved.concepts == detectors.concepts
            and np.array_equal(saved.kernel, detectors.kernel)
            and np.array_equal(saved.bias, detectors.bias))


def run_concept_head(run_dir: str, encoder: str, weights: str | None = None):
    """The concept head a concept-input run was trained with: the ImageNet layer of the
    weights its record names (``weights`` overrides; runs recorded before that: the
    installed package's) plus the run's detectors."""
    from altbeam.model.nets.concept_head import imagenet_concept_head, load_detectors
    if weights is None:
        record_path = os.path.join(run_dir, RECORD_FILE)
        record = json.load(open(record_path)) if os.path.exists(record_path) else {}
        weights = record.get("imagenet_weights", "imagenet")
        if weights != "imagenet" and not os.path.exists(weights):
            raise FileNotFoundError(f"{run_dir} scored its concepts with the ImageNet layer "
                                    f"of {weights}, which is not there any more")
    found = run_detectors(run_dir)
    return imagenet_concept_head(encoder, weights, load_detectors(found) if found else None)
