"""The caption gate on an evaluation set: `altbeam evaluate --model` and tools/measure_gate.py.

Each photo gets the status the caption job gives it (pipelines/caption/gate.py):
``too_small`` / ``blank`` from its pixels before any caption (`pixel_status`), else its
best caption's `caption_status`, from the model's own concept scores and the concepts
its head can judge (`covered_by_card` of its model card). Reported: the share of photos
per status, and CHAIR-s, CHAIR-i and coverage (model/evaluation/chair.py) among the
``ok`` captions only, with how many there are: what a user who keeps only ``ok``
captions (writeback's default) gets.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from altbeam.model.evaluation.chair import ChairScores, chair
from altbeam.model.serving.caption_status import (
    DEFAULT_THRESHOLDS,
    OK,
    STATUSES,
    GateThresholds,
    caption_status,
    pixel_status,
    status_counts,
)


def photo_pixel_status(path: str, pixels: np.ndarray) -> str | None:
    """``too_small`` / ``blank`` for an image file the caption job would not caption, else
    None. ``pixels``: the model's input prepared from it (model/data/pixels.py)."""
    with Image.open(path) as im:   # the size as stored: only the header is read
        width, height = im.size
    return pixel_status(width, height, pixels)


def photo_statuses(captions: Sequence[str], scores: Sequence[float],
                   concepts: Sequence[Sequence], concept_scores: Sequence[Sequence[float]],
                   pixel_statuses: Sequence[str | None], covered: frozenset[str],
                   thresholds: GateThresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """The status of each photo: its pixel status when it has one (no caption would be
    written), else its best caption's. ``covered``: the concepts the head can judge."""
    lengths = {len(captions), len(scores), len(concepts), len(concept_scores),
               len(pixel_statuses)}
    if len(lengths) != 1:
        raise ValueError(f"one caption, score, concept list and pixel status per photo, got "
                         f"{len(captions)}, {len(scores)}, {len(concepts)}, "
                         f"{len(concept_scores)}, {len(pixel_statuses)}")
    return [held or caption_status(caption, float(score), words, values, thresholds,
                                   covered)[0]
            for caption, score, words, values, held
            in zip(captions, scores, concepts, concept_scores, pixel_statuses)]


@dataclass(frozen=True)
class GateFigures:
    """How a set of photos fared at the gate."""

    counts: Mapping[str, int]      # photos per status, all five
    ok: ChairScores | None         # CHAIR among the ok captions; None when none is ok

    @property
    def images(self) -> int:
        return sum(self.counts.values())

    def shares(self) -> dict[str, float]:
        return {s: n / self.images for s, n in self.counts.items()}

    def ok_scores(self) -> dict[str, float]:
        """CHAIR-s, CHAIR-i and coverage among the ok captions ({} when none is ok)."""
        return self.ok.as_dict() if self.ok else {}

    def as_dict(self) -> dict:
        return {"images": self.images, "counts": dict(self.counts), "shares": self.shares(),
                "ok": {"images": self.counts[OK], **self.ok_scores()}}


def gate_figures(statuses: Sequence[str], captions: Sequence[str],
                 references: Sequence[Sequence[str]]) -> GateFigures:
    """Photos per status, and CHAIR over exactly the photos whose status is ``ok``.
    captions[i], references[i]: photo i's best caption and its human captions."""
    if not len(statuses) == len(captions) == len(references):
        raise ValueError(f"{len(statuses)} statuses, {len(captions)} captions and "
                         f"{len(references)} reference sets")
    if not statuses:
        raise ValueError("the gate's figures need at least one photo")
    ok = [k for k, s in enumerate(statuses) if s == OK]
    ok_chair = chair([captions[k] for k in ok], [references[k] for k in ok]) if ok else None
    return GateFigures(status_counts(statuses), ok_chair)


def format_gate(figures: GateFigures, judged: int) -> str:
    """The printed summary: share (and count) of photos per status."""
    shares = figures.shares()
    parts = [f"{s} {shares[s]:.1%} ({figures.counts[s]})" for s in STATUSES]
    return (f"caption gate on {figures.images} photos ({judged} concepts the model's head "
            f"can judge): " + ", ".join(parts))
