"""The concept vocabulary: nouns people write in captions, and what the CNN says of them.

Two committed files beside this module, read without WordNet or TensorFlow:

- concept_words.tsv: each concept (the word a caption uses: bear, elephant, broccoli,
  airplane, table, …; all 80 COCO categories among them) with the other words that
  name it (brown bear is not there: kinds belong to ImageNet's map; puppy, kitten,
  sofa are there). `concepts_in_caption` reads caption text with it, through the same
  reader as the CHAIR metric (model/data/caption_terms.py): the targets for concept
  detectors trained on caption text.
- imagenet_concepts.tsv: each of ImageNet-1k's 1,000 classes -> one concept or none,
  written by tools/build_imagenet_concepts.py (WordNet hypernyms, then a reviewed
  override table) and committed.

`imagenet_concept_scores` turns the encoder's ImageNet head (softmax probabilities)
into concept scores. The default reduction is the *sum* over a concept's classes:
softmax classes are mutually exclusive, so the sum is the model's probability that
the photo shows any kind of that concept ("dog" = any of 121 dog classes). The max,
the other choice offered, ignores that mass spreads over sibling classes when the
model is unsure of the breed but sure of the dog, and so under-reports exactly the
concepts with many fine-grained classes (dog, bird, snake, monkey).
"""
from __future__ import annotations

import csv
import pathlib
from functools import cache

import numpy as np

from altbeam.model.data.caption_terms import TermTable, read_term_table

_HERE = pathlib.Path(__file__).parent
CONCEPT_WORDS_TSV = _HERE / "concept_words.tsv"
IMAGENET_CONCEPTS_TSV = _HERE / "imagenet_concepts.tsv"
IMAGENET_CLASSES = 1000
REDUCTIONS = ("sum", "max")


@cache
def concept_table() -> TermTable:
    """The concept vocabulary with every word that names each concept."""
    return read_term_table(CONCEPT_WORDS_TSV)


@cache
def _imagenet_rows() -> tuple[tuple[str, str, str], ...]:
    """(wnid, ImageNet name, concept or "") of the 1,000 classes, in index order."""
    with open(IMAGENET_CONCEPTS_TSV, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if [int(r["index"]) for r in rows] != list(range(IMAGENET_CLASSES)):
        raise ValueError(f"{IMAGENET_CONCEPTS_TSV} must list classes 0..999 in order")
    unknown = {r["concept"] for r in rows} - set(concept_table().terms) - {""}
    if unknown:
        raise ValueError(f"{IMAGENET_CONCEPTS_TSV} names concepts not in the vocabulary: "
                         f"{sorted(unknown)}")
    return tuple((r["wnid"], r["name"], r["concept"]) for r in rows)


CONCEPTS: tuple[str, ...] = concept_table().terms
CONCEPT_INDEX: dict[str, int] = {c: t for t, c in enumerate(CONCEPTS)}  # word -> column
# For each of the 1,000 ImageNet classes (index order): its concept, or None.
IMAGENET_TO_CONCEPT: tuple[str | None, ...] = tuple(c or None for _, _, c in _imagenet_rows())
# ImageNet-1k's WordNet ids in index order (n01440764, …).
IMAGENET_WNIDS: tuple[str, ...] = tuple(wnid for wnid, _, _ in _imagenet_rows())


@cache
def _concept_matrix() -> np.ndarray:
    """[1000, T] float32: 1 where class i belongs to concept t."""
    matrix = np.zeros((IMAGENET_CLASSES, len(CONCEPTS)), np.float32)
    for i, concept in enumerate(IMAGENET_TO_CONCEPT):
        if concept:
            matrix[i, CONCEPT_INDEX[concept]] = 1.0
    matrix.flags.writeable = False
    return matrix


def imagenet_concept_scores(probabilities: np.ndarray, reduce: str = "sum") -> np.ndarray:
    """[N, 1000] ImageNet class probabilities -> [N, len(CONCEPTS)] concept scores.

    Columns follow CONCEPTS; a concept no ImageNet class maps to (kitchen, person's
    kinds, …) scores 0. reduce: "sum" (default; see the module docstring) or "max".
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim != 2 or probabilities.shape[1] != IMAGENET_CLASSES:
        raise ValueError(f"expected [N, {IMAGENET_CLASSES}] probabilities, "
                         f"got shape {probabilities.shape}")
    matrix = _concept_matrix()
    if reduce == "sum":
        return probabilities @ matrix
    scores = np.zeros((probabilities.shape[0], len(CONCEPTS)), np.float32)
    for t in np.flatnonzero(matrix.any(axis=0)):
        scores[:, t] = probabilities[:, matrix[:, t] > 0].max(axis=1)
    return scores


def concepts_in_caption(caption: str) -> list[str]:
    """The distinct concepts a caption names, in order of first mention."""
    return concept_table().names(caption)
