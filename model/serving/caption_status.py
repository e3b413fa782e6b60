"""The caption gate: should a caption be trusted, from what the CNN itself sees?

One decision, `caption_status`, for the pipeline (catalog `caption_status` and
`objects`) and for evaluation. TensorFlow-free: it reads the SavedModel's outputs
(the best caption, its score, and the concept words + scores) as plain Python/numpy.

A caption is

- ``contradicted`` when it names an object the CNN can judge (an ImageNet-mapped
  concept or one with a trained detector: `covered_concepts`; not a thing worn,
  `WORN_CONCEPTS`) that the CNN scores below ``contradict_below``, while the CNN is
  confident (``>= confident``) of another object the caption does not name ("a dog on
  the grass" over a photo the ImageNet head calls a brown bear);
- ``unsure`` when the caption's own score (per-word mean log-probability of the best
  beam) is below ``min_caption_score``, or an object it names that the CNN can judge
  scores below ``support``;
- ``ok`` otherwise. Objects the CNN cannot judge (no ImageNet class, no detector) are
  neither support nor evidence against: the caption is taken at its word there.

A caption's person words are judged as a person: "a man", "a girl" and "a crowd" are
supported by the person detector (`judged_as`), because telling a man from a woman is
not what the gate is for (CHAIR counts all of them as one COCO object, person). The
person detector has its own support threshold, ``person_support``: it was trained on
Flickr8k, where three photos in four show people, so it also scores the scenes people
are photographed in (a parked bicycle 0.85, an empty bathroom 0.44); below that
threshold its score is context, not a person, and a caption naming one is ``unsure``.

The two statuses decided from pixels alone, before any caption (``too_small``,
``blank``), are model/data/pixels.py's `pixel_status`; `STATUSES` lists all five.
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import cache, lru_cache

import numpy as np

from altbeam.model.data.concepts import IMAGENET_TO_CONCEPT, concepts_in_caption
from altbeam.model.data.pixels import is_blank, too_small

OK, UNSURE, CONTRADICTED = "ok", "unsure", "contradicted"
TOO_SMALL, BLANK = "too_small", "blank"
STATUSES = (OK, UNSURE, CONTRADICTED, TOO_SMALL, BLANK)
UNTRUSTED = (UNSURE, CONTRADICTED)     # captioned, but not to be written as fact
CAPTIONED = (OK, *UNTRUSTED)
NO_CAPTION = (TOO_SMALL, BLANK)        # catalogued, but never captioned

# The committed detectors (model/training/concepts.py): which concepts they cover.
DETECTORS_NPZ = pathlib.Path(__file__).parents[1] / "data" / "concept_detectors.npz"
PERSON = "person"
PERSON_KINDS = frozenset({"person", "man", "woman", "boy", "girl", "child", "baby", "crowd"})


# Things worn: named, but never the word that makes a caption `contradicted`. The CNN's
# whole-image scores for them are weak evidence (a skier's jacket scores low where the
# CNN is sure of the skis and the person), so a low score is not taken to mean absent.
# Chosen on the gate's tuning carve-out against the other candidates (places and ground
# too, or neither): docs/training.md, "Caption gate: things worn do not contradict".
WORN_CONCEPTS = frozenset({
    "hat", "glasses", "tie", "shirt", "jacket", "coat", "dress", "shoe", "boot", "sweater",
    "suit", "uniform", "skirt", "jeans", "swimsuit", "helmet"})


def judged_as(concept: str) -> str:
    """The concept whose score decides whether a named concept is there."""
    return PERSON if concept in PERSON_KINDS else concept


@dataclass(frozen=True)
class GateThresholds:
    """Chosen on the 500 images `altbeam train --seed 1` carves out of Flickr8k train,
    never on dev or COCO: the lowest CHAIR-s among `ok` captions that keeps >= 88 % of
    them ok (tools/measure_gate.py --tune; docs/training.md, "Concept detectors and the
    caption gate"). With these, a weak named object alone does not make a caption
    unsure (support 0): on Flickr8k, keeping 88 % ok leaves no room for it — except a
    person, whose detector scores context (module docstring): below 0.7 it is unsure
    (`person_support`, tuned alone with the other four kept: `--tune --only`)."""

    min_caption_score: float = -1.3   # per-word mean log-probability of the best beam
    support: float = 0.0              # a named, judgeable object scoring >= this is there
    person_support: float = 0.7       # ... and a named person (any person word) >= this
    contradict_below: float = 0.05    # a named object scoring below this ...
    confident: float = 0.3            # ... while another object scores this: contradicted


DEFAULT_THRESHOLDS = GateThresholds()
CARD_KEY = "caption_gate"   # model_card.json: {"caption_gate": {"thresholds": {...}}}


def thresholds_from_card(card: Mapping | None) -> GateThresholds:
    """The gate thresholds a model card names (``caption_gate.thresholds``, chosen for
    that model: its caption scores have their own scale), else the defaults; fields the
    card does not name keep their default. ValueError for an unknown or non-numeric field."""
    given = ((card or {}).get(CARD_KEY) or {}).get("thresholds") or {}
    known = {f.name for f in fields(GateThresholds)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise ValueError(f"model card {CARD_KEY}.thresholds: unknown field(s) {unknown}; "
                         f"known: {sorted(known)}")
    try:
        return replace(DEFAULT_THRESHOLDS, **{k: float(v) for k, v in given.items()})
    except (TypeError, ValueError):
        raise ValueError(f"model card {CARD_KEY}.thresholds must be numbers, got {given}") from None
# A concept becomes a catalog keyword (and, with writeback --keywords, an XMP/IPTC
# keyword in the file) at this score: a keyword is written as fact with no caption
# around it. The lowest score band with precision >= 0.9 against the references on the
# gate's Flickr8k tuning carve-out (0.5-0.7: 0.80, 0.7-0.9: 0.93; tools/measure_keywords.py,
# docs/training.md "Keywords").
KEYWORD_MIN_SCORE = 0.7


@cache
def _default_covered() -> frozenset[str]:
    imagenet = {c for c in IMAGENET_TO_CONCEPT if c}
    if DETECTORS_NPZ.exists():
        with np.load(DETECTORS_NPZ, allow_pickle=False) as npz:
            imagenet |= {str(c) for c in npz["concepts"]}
    return frozenset(imagenet)


def covered_concepts(detector_concepts: Iterable[str] | None = None) -> frozenset[str]:
    """Concepts the CNN can judge: ImageNet-mapped ones plus the detectors' (by default
    those of the committed model/data/concept_detectors.npz)."""
    if detector_concepts is None:
        return _default_covered()
    return frozenset({c for c in IMAGENET_TO_CONCEPT if c} | set(detector_concepts))


def covered_by_card(concept_head: Mapping | None) -> frozenset[str]:
    """Concepts a model can judge, from its model card's ``concept_head`` (the ImageNet
    map when its sources name "imagenet", plus the concepts of its detectors); empty for
    a model without a concept head, whose captions the gate then judges by score alone."""
    if not concept_head:
        return frozenset()
    sources = concept_head.get("sources") or {}
    detectors = (sources.get("detectors") or {}).get("concepts") or ()
    return covered_concepts(detectors) if "imagenet" in sources else frozenset(detectors)


def keywords(concepts: Sequence, concept_scores: Sequence[float],
             min_score: float = KEYWORD_MIN_SCORE) -> tuple[list[str], list[float]]:
    """The catalog's ``keywords`` and ``keyword_scores``: the concepts scoring at least
    ``min_score``, best first (bytes are decoded; a repeated concept keeps its best)."""
    seen = _score_map(concepts, concept_scores)
    best = sorted(((s, c) for c, s in seen.items() if s >= min_score), key=lambda t: (-t[0], t[1]))
    return [c for _, c in best], [s for s, _ in best]


def caption_objects(caption: str) -> list[str]:
    """The objects a caption names, in concept words (the catalog's `objects`)."""
    return list(_caption_objects(caption))


@lru_cache(maxsize=65536)
def _caption_objects(caption: str) -> tuple[str, ...]:
    # A model repeats its captions ("a dog runs through the grass") across a collection.
    return tuple(concepts_in_caption(caption))


def caption_status(caption: str, score: float, concepts: Sequence[str],
                   concept_scores: Sequence[float],
                   thresholds: GateThresholds = DEFAULT_THRESHOLDS,
                   covered: frozenset[str] | None = None) -> tuple[str, list[str]]:
    """(status, objects) of one caption; see the module docstring.

    concepts / concept_scores: the model's concept words and scores for the image (its
    top T, any order; bytes are decoded). A concept not among them scores 0: it was
    below all T listed.
    """
    objects = caption_objects(caption)
    seen = _score_map(concepts, concept_scores)
    covered = covered_concepts() if covered is None else covered
    judged = {judged_as(o) for o in objects if judged_as(o) in covered}
    named_scores = {c: seen.get(c, 0.0) for c in judged}
    t = thresholds
    if any(s < t.contradict_below for c, s in named_scores.items() if c not in WORN_CONCEPTS):
        others = [s for c, s in seen.items() if c not in judged and c in covered]
        if others and max(others) >= t.confident:
            return CONTRADICTED, objects
    if score < t.min_caption_score or any(
            s < (max(t.support, t.person_support) if c == PERSON else t.support)
            for c, s in named_scores.items()):
        return UNSURE, objects
    return OK, objects


def _score_map(concepts: Sequence, concept_scores: Sequence[float]) -> dict[str, float]:
    if len(concepts) != len(concept_scores):
        raise ValueError(f"{len(concepts)} concepts but {len(concept_scores)} scores")
    seen: dict[str, float] = {}
    for word, s in zip(concepts, concept_scores):
        word = word.decode("utf-8") if isinstance(word, bytes) else str(word)
        seen[word] = max(float(s), seen.get(word, 0.0))
    return seen


def pixel_status(width: int, height: int, pixels: np.ndarray | None = None) -> str | None:
    """``too_small`` / ``blank`` for an image that gets no caption at all, else None.
    width, height: the image as stored; pixels: the model's input (uint8 [S, S, 3])."""
    if too_small(width, height):
        return TOO_SMALL
    if pixels is not None and is_blank(pixels):
        return BLANK
    return None


def status_counts(statuses: Iterable[str]) -> Mapping[str, int]:
    """How many captions got each status (all five keys, zeros included)."""
    counts = dict.fromkeys(STATUSES, 0)
    for s in statuses:
        counts[s] += 1
    return counts
