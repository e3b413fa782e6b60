"""CHAIR: how often captions name objects that are not in the photo.

After Rohrbach et al. 2018, "Object Hallucination in Image Captioning" (EMNLP), over
COCO's 80 object categories and the words captions use for them (coco_objects.tsv
beside this module, read by the shared caption reader model/data/caption_terms.py).

An object is *supported* for an image when any of its human reference captions names
it (the paper also counts COCO's segmentation labels; the shared photos have
captions only). Over a set of images, each with one generated caption:

- CHAIR-s: the share of captions that name at least one unsupported object;
- CHAIR-i: unsupported object mentions / all object mentions (every mention counts,
  so "a dog and a dog" is two; the paper counts the same way);
- coverage: of the objects that at least `salient_min` (3) references name, the share
  the captions name, pooled over all images (total named / total salient; images
  with no such object add nothing). CHAIR rewards saying nothing; coverage does not.

A set without any object mention has CHAIR-i 0; without salient objects, coverage 1.
"""
from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from altbeam.model.data.caption_terms import TermMention, TermTable, read_term_table

COCO_OBJECTS_TSV = pathlib.Path(__file__).with_name("coco_objects.tsv")
SALIENT_MIN = 3


@cache
def coco_objects() -> TermTable:
    """COCO's 80 categories (in COCO's order) with their caption words."""
    return read_term_table(COCO_OBJECTS_TSV)


def object_mentions(caption: str) -> list[TermMention]:
    """Every COCO object mention in a caption, in order."""
    return coco_objects().mentions(caption)


def caption_objects(caption: str) -> list[str]:
    """The distinct COCO categories a caption names, in order of first mention."""
    return coco_objects().names(caption)


@dataclass(frozen=True)
class ImageChair:
    """One image: what its caption names, against what its references name."""

    objects: list[str]        # COCO categories the caption names (the catalog's `objects`)
    unsupported: list[str]    # of those, the ones no reference names
    mentions: int             # object mentions in the caption
    unsupported_mentions: int
    salient: list[str]        # categories at least SALIENT_MIN references name
    covered: list[str]        # of those, the ones the caption names

    @property
    def hallucinated(self) -> bool:
        return bool(self.unsupported)


@dataclass(frozen=True)
class ChairScores:
    chair_s: float
    chair_i: float
    coverage: float
    images: list[ImageChair]

    def as_dict(self) -> dict[str, float]:
        return {"CHAIR-s": self.chair_s, "CHAIR-i": self.chair_i, "coverage": self.coverage}


def score_image(caption: str, references: Sequence[str],
                salient_min: int = SALIENT_MIN) -> ImageChair:
    """CHAIR's view of one caption against its image's reference captions."""
    if isinstance(references, str):
        raise TypeError("references must be a list of captions, not one string")
    named_by = [set(caption_objects(r)) for r in references]
    supported = set().union(*named_by)
    salient = [o for o in coco_objects().terms
               if sum(o in names for names in named_by) >= salient_min]
    mentions = object_mentions(caption)
    objects = list(dict.fromkeys(m.term for m in mentions))
    return ImageChair(
        objects=objects,
        unsupported=[o for o in objects if o not in supported],
        mentions=len(mentions),
        unsupported_mentions=sum(m.term not in supported for m in mentions),
        salient=salient,
        covered=[o for o in salient if o in objects],
    )


def chair(captions: Sequence[str], references: Sequence[Sequence[str]],
          salient_min: int = SALIENT_MIN) -> ChairScores:
    """CHAIR-s, CHAIR-i and coverage of one caption per image (see the module docstring).

    captions[i] is the caption of image i; references[i] its human captions.
    """
    if len(captions) != len(references):
        raise ValueError(f"{len(captions)} captions for {len(references)} reference sets")
    if not captions:
        raise ValueError("CHAIR needs at least one caption")
    images = [score_image(c, refs, salient_min) for c, refs in zip(captions, references)]
    mentions = sum(i.mentions for i in images)
    salient = sum(len(i.salient) for i in images)
    return ChairScores(
        chair_s=sum(i.hallucinated for i in images) / len(images),
        chair_i=sum(i.unsupported_mentions for i in images) / mentions if mentions else 0.0,
        coverage=sum(len(i.covered) for i in images) / salient if salient else 1.0,
        images=images,
    )
