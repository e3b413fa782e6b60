"""Readers for captioned-image datasets in the formats people actually have.

`load_dataset(spec, split)` sniffs the format from `spec`:
- a folder holding `Flickr8k.token.txt` (+ `Flickr_8k.{train,dev,test}Images.txt`),
  or that token file itself: Flickr8k; images in no split list get split "extra";
- a folder holding `captions.jsonl` (the shared datasets' layout), or any `*.jsonl`:
  one JSON object per line, either one image with `captions` or one (image, caption)
  pair — several rows per image are merged;
- `*.csv` with a header naming an image column and a `caption` column (Kaggle's
  Flickr8k `captions.txt` layout is `image,caption`);
- `*.json`: COCO's official `captions_*.json`, Karpathy's `dataset_{flickr8k,
  flickr30k,coco}.json` split files, or the `{image: [captions…, path]}` map of the
  shared Flickr30k files — told apart by their structure.

`image_id` is the dataset's own identifier, so the same photo gets the same id from
any format: the file name for Flickr ("1000268201_693b08cb0e.jpg"), the numeric id as
a string for COCO ("37777"). `split` keeps the source's own name ("train", "dev",
"val", "restval", "val2017", …). `path` is where the image file should be: missing
files are counted and logged (`missing_images="warn"`), dropped ("drop"), fatal
("error") or not looked for ("ignore").

The readers of each format live in model/data/dataset_formats.py; this module picks
the split and applies the missing-image policy. Pure Python: no TensorFlow, no Beam. Malformed input raises `DatasetError` naming
the file, the line (or entry) and what is wrong.
"""
from __future__ import annotations

import logging
import os
import pathlib
from collections import Counter
from collections.abc import Iterable

from altbeam.model.data.dataset_formats import CaptionedImage, DatasetError, read_any

log = logging.getLogger(__name__)

# Split names that mean the same thing across formats (Flickr8k's "dev" list is
# Karpathy's "val" and the shared Flickr30k "validation" file).
_SPLIT_ALIASES = {name: {"dev", "val", "validation"} for name in ("dev", "val", "validation")}
MISSING_IMAGE_POLICIES = ("warn", "drop", "error", "ignore")


def load_dataset(
    spec: str | os.PathLike,
    split: str | None = None,
    *,
    image_root: str | os.PathLike | None = None,
    missing_images: str = "warn",
) -> list[CaptionedImage]:
    """Read a captioned-image dataset; see the module docstring for the formats.

    split: None for every image, or one or more comma-separated split names
    ("train,restval"); "dev", "val" and "validation" match each other. Asking for a split the data
    does not have is an error listing the ones it has.
    image_root: the folder holding the image files, when it is not beside the captions.
    """
    if missing_images not in MISSING_IMAGE_POLICIES:
        raise ValueError(f"missing_images must be one of {MISSING_IMAGE_POLICIES}, got {missing_images!r}")
    path = pathlib.Path(spec)
    root = pathlib.Path(image_root) if image_root is not None else None
    items = read_any(path, root)
    if split is not None:
        items = select_split(items, split, source=str(path))
    if missing_images != "ignore":
        items = _handle_missing(items, missing_images, source=str(path))
    return items



def select_split(items: list[CaptionedImage], split: str, source: str = "dataset") -> list[CaptionedImage]:
    """The items in one or more comma-separated splits ("dev", "val", "validation" alike)."""
    wanted = {s.strip() for s in split.split(",") if s.strip()}
    if not wanted:
        raise ValueError(f"empty split name {split!r}")
    wanted = wanted.union(*(_SPLIT_ALIASES.get(s, ()) for s in wanted))
    have = Counter(item.split for item in items)
    if not wanted & set(have):
        raise DatasetError(f"{source}: no split {split!r}; it has {_format_counts(have)}")
    return [item for item in items if item.split in wanted]


def _format_counts(counts: Counter) -> str:
    return ", ".join(f"{name} ({n})" for name, n in sorted(counts.items())) or "no images"


def missing_image_files(items: Iterable[CaptionedImage]) -> list[CaptionedImage]:
    """The items whose image file is not on local disk (remote `scheme://` paths count as present)."""
    return [
        item for item in items
        if item.path is None or ("://" not in item.path and not os.path.isfile(item.path))
    ]


def _handle_missing(items: list[CaptionedImage], policy: str, source: str) -> list[CaptionedImage]:
    missing = missing_image_files(items)
    if not missing:
        return items
    examples = ", ".join(str(item.path or item.image_id) for item in missing[:3])
    message = f"{source}: {len(missing)} of {len(items)} image files are missing (e.g. {examples})"
    if policy == "error":
        raise DatasetError(message)
    if policy == "drop":
        log.warning("%s; dropped them", message)
        gone = {id(item) for item in missing}
        return [item for item in items if id(item) not in gone]
    log.warning("%s; kept them (missing_images='drop' leaves them out)", message)
    return items


def describe(items: Iterable[CaptionedImage]) -> str:
    """One line: images and captions per split, for logs and CLI output."""
    images: Counter = Counter()
    captions: Counter = Counter()
    for item in items:
        images[item.split] += 1
        captions[item.split] += len(item.captions)
    parts = [f"{s}: {images[s]} images, {captions[s]} captions" for s in sorted(images)]
    return "; ".join(parts) or "no images"


def references(items: Iterable[CaptionedImage]) -> dict[str, list[str]]:
    """image_id -> captions, the shape model.metrics.score_captions takes."""
    return {item.image_id: list(item.captions) for item in items}
