"""The caption gate in the caption job: which images get a caption, and how far to trust it.

Two places, one rule each (the rules themselves are model/serving/caption_status.py,
shared with `altbeam evaluate`):

- `HoldBackUndescribable` (step "HoldBackUndescribable"), before the model: an image
  whose stored short side is under 32 px (``too_small``) or whose model input is nearly
  uniform (``blank``) is not captioned at all. It is catalogued with that status and a
  null caption — a described grey square is worse than none — and it is not an error.
- `gate_columns`, when the catalog row is made: the caption's status (``ok`` /
  ``unsure`` / ``contradicted``), the objects it names, and the concepts the CNN is
  confident of as keywords. A model without a concept head is judged by its caption
  score alone and gets no keywords.
"""
from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam

from altbeam.model.serving.caption_status import (
    DEFAULT_THRESHOLDS,
    STATUSES,
    GateThresholds,
    caption_status,
    keywords,
    pixel_status,
)
from altbeam.pipelines.runtime.progress import NAMESPACE

HELD_BACK = "held_back"     # the tagged output of images that get no caption


class HoldBackUndescribable(beam.DoFn):
    """(ImageInfo, pixels) -> main: images to caption; HELD_BACK: (ImageInfo, status)."""

    def __init__(self):
        self._held = beam.metrics.Metrics.counter(NAMESPACE, "held_back")

    def process(self, keyed):
        info, pixels = keyed
        status = pixel_status(info.metadata.width, info.metadata.height, pixels)
        if status is None:
            yield keyed
        else:
            self._held.inc()
            yield beam.pvalue.TaggedOutput(HELD_BACK, (info, status))


def gate_columns(inference: dict, judged: Iterable[str],
                 thresholds: GateThresholds = DEFAULT_THRESHOLDS) -> dict:
    """The catalog's version-2 columns for a captioned image, from its model outputs
    (captions, scores, and concepts/concept_scores when the model has a concept head);
    ``thresholds``: the model's (ModelInfo.thresholds)."""
    concepts = inference.get("concepts") or []
    concept_scores = inference.get("concept_scores") or []
    status, objects = caption_status(inference["captions"][0], inference["scores"][0],
                                     concepts, concept_scores, thresholds,
                                     covered=frozenset(judged))
    words, word_scores = keywords(concepts, concept_scores)
    return {"caption_status": status, "objects": objects, "keywords": words,
            "keyword_scores": word_scores}


def held_back_columns(status: str) -> dict:
    """The version-2 columns of an image that got no caption (too_small / blank)."""
    return {"caption_status": status, "objects": [], "keywords": [], "keyword_scores": []}


class StatusCounts(beam.CombineFn):
    """Catalog rows -> {status: count} over all five statuses (the run summary's
    ``statuses``)."""

    def create_accumulator(self):
        return dict.fromkeys(STATUSES, 0)

    def add_input(self, counts, row):
        status = row.get("caption_status")
        if status in counts:
            counts[status] += 1
        return counts

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for counts in accumulators:
            for status, n in counts.items():
                merged[status] += n
        return merged

    def extract_output(self, counts):
        return counts
