"""How true are the catalog's keywords? Precision against the human references.

Reads a catalog written by `altbeam caption` over a captioned photo set and, for every
keyword the caption gate gave (concepts the CNN scores >= 0.5), asks whether any of the
photo's reference captions names it (model/data/concepts.py's reader, person kinds as
person, as the gate judges them). Prints precision overall, per score band and per
keyword, and the share of photos with at least one keyword.

    altbeam caption ../shared/datasets/coco/images --catalog /tmp/kw-coco --no-progress
    python tools/measure_keywords.py /tmp/kw-coco ../shared/datasets/coco/captions.jsonl

    python tools/measure_keywords.py - ../shared/datasets/flickr8k --split dev \
        --copy-to /tmp/f8k-dev          # the split's photos, alone in a folder
    altbeam caption /tmp/f8k-dev --catalog /tmp/kw-f8k-dev --no-progress
    python tools/measure_keywords.py /tmp/kw-f8k-dev ../shared/datasets/flickr8k --split dev

``--split tune``: the Flickr8k train carve-out the gate was tuned on, where
KEYWORD_MIN_SCORE is chosen (never on dev or COCO).

Rows whose photo is not in the set are ignored (a folder may hold more than a split).
"""
from __future__ import annotations

import argparse
import collections
import pathlib
import shutil
import sys

from altbeam.model.data.concepts import concepts_in_caption
from altbeam.model.data.datasets import load_dataset
from altbeam.model.serving.caption_status import judged_as
from altbeam.pipelines.catalog.beam_io import read_table_rows

BANDS = ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01))


def photo_set(dataset: pathlib.Path, split: str | None) -> list:
    if split == "tune":
        sys.path.insert(0, str(pathlib.Path(__file__).parent))
        from measure_gate import photo_sets
        return photo_sets(dataset.parent)["tune"]
    return load_dataset(dataset, *([split] if split else []))


def referenced(captions: list[str]) -> set[str]:
    return {judged_as(c) for caption in captions for c in concepts_in_caption(caption)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("catalog")
    ap.add_argument("dataset", help="a dataset folder or captions.jsonl (load_dataset)")
    ap.add_argument("--split", default=None,
                    help="a split of a dataset folder; 'tune' = the 500 Flickr8k train images "
                         "the gate's thresholds were chosen on (tools/measure_gate.py)")
    ap.add_argument("--copy-to", default=None,
                    help="only copy the set's photos into this folder (to caption them) and stop")
    ap.add_argument("--min-score", type=float, default=0.0,
                    help="count only keywords scoring at least this (a catalog written with "
                         "a lower KEYWORD_MIN_SCORE, read as if it were higher)")
    args = ap.parse_args(argv)
    items = photo_set(pathlib.Path(args.dataset), args.split)
    if args.copy_to:
        out = pathlib.Path(args.copy_to)
        out.mkdir(parents=True, exist_ok=True)
        for i in items:
            shutil.copy(i.path, out / pathlib.Path(i.path).name)
        print(f"copied {len(items)} photos to {out}")
        return
    refs = {pathlib.Path(i.path).name: referenced(i.captions) for i in items}
    hits, per_word, per_band = [], collections.defaultdict(list), collections.defaultdict(list)
    photos = with_keywords = 0
    for row in read_table_rows(args.catalog, "catalog"):
        name = row["uri"].rsplit("/", 1)[-1]
        if name not in refs:
            continue
        photos += 1
        kept = [(w, s) for w, s in zip(row["keywords"] or [], row["keyword_scores"] or [])
                if s >= args.min_score]
        with_keywords += bool(kept)
        for word, score in kept:
            ok = judged_as(word) in refs[name]
            hits.append(ok)
            per_word[word].append(ok)
            band = next(b for b in BANDS if b[0] <= score < b[1])
            per_band[band].append(ok)
    print(f"photos {photos} of {len(refs)}; with a keyword {with_keywords} "
          f"({with_keywords / max(photos, 1):.1%}); keywords {len(hits)}; "
          f"precision {sum(hits) / max(len(hits), 1):.3f}")
    print("| score | keywords | precision |\n|---|---|---|")
    for band in BANDS:
        v = per_band[band]
        print(f"| {band[0]:.1f}–{min(band[1], 1.0):.1f} | {len(v)} | "
              f"{sum(v) / max(len(v), 1):.3f} |")
    print("| keyword | n | precision |\n|---|---|---|")
    for word, v in sorted(per_word.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:25]:
        print(f"| {word} | {len(v)} | {sum(v) / len(v):.2f} |")


if __name__ == "__main__":
    main()
