"""Two exported models on one dataset split: how many best captions differ, and both scored.

For a decoding lever that may change captions (issue 21: "captions unchanged, or every
difference counted and scored"): each model captions every photo of the split from
pixels (as `altbeam evaluate --model` does); the photos whose best caption differs are
counted and listed, and BLEU/METEOR/ROUGE-L/CIDEr-D/CHAIR are given for both models on
all photos and on the differing photos alone.

    python tools/compare_models.py model/default work/models/default-bf16 \
        ../shared/datasets/flickr8k dev [--json OUT.json] [--show 15]
"""
from __future__ import annotations

import argparse
import json
import sys

from altbeam.model.data.datasets import load_dataset
from altbeam.model.evaluation.evaluate import format_table, run_model, score_table
from altbeam.model.serving.saved_model import read_model_info


def compare(model_a: str, model_b: str, items, tokenizer: str = "ptb",
            batch_size: int = 32) -> dict:
    """{"images", "differ": [(image_id, caption A, caption B)], "scores": all photos,
    "scores_differing": the differing photos only (None when none differ)}."""
    captions = [run_model(read_model_info(m), [i.path for i in items], batch_size,
                          progress=False).captions for m in (model_a, model_b)]
    differ = [(i.image_id, a, b) for i, a, b in zip(items, *captions) if a != b]

    def scores(keep) -> dict:
        rows = [k for k, i in enumerate(items) if keep(i)]
        refs = {items[k].image_id: list(items[k].captions) for k in rows}
        return score_table(refs, {name: [caps[k] for k in rows]
                                  for name, caps in zip((model_a, model_b), captions)},
                           tokenizer)

    changed = {i for i, _, _ in differ}
    return {"images": len(items), "differ": differ, "scores": scores(lambda i: True),
            "scores_differing": scores(lambda i: i.image_id in changed) if differ else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_a")
    ap.add_argument("model_b")
    ap.add_argument("dataset", help="any format `altbeam evaluate --dataset` reads")
    ap.add_argument("split")
    ap.add_argument("--tokenizer", choices=("ptb", "simple"), default="ptb")
    ap.add_argument("--show", type=int, default=15, help="differing captions to print")
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    items = [i for i in load_dataset(a.dataset, a.split, missing_images="drop") if i.path]
    if not items:
        raise SystemExit(f"compare_models: no photos in {a.dataset} split {a.split}")
    result = compare(a.model_a, a.model_b, items, a.tokenizer)
    print(f"{a.split}: {result['images']} photos, best caption differs on "
          f"{len(result['differ'])}")
    print(format_table(result["scores"]))
    if result["scores_differing"]:
        print(f"\nthe {len(result['differ'])} differing photos alone:")
        print(format_table(result["scores_differing"]))
        for image_id, a_caption, b_caption in result["differ"][:a.show]:
            print(f"  {image_id}: A {a_caption!r}  B {b_caption!r}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
