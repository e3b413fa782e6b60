"""Which absent objects still pass the caption gate as ``ok``: a diagnosis for the gate.

Captions every photo of a split with an exported model (from pixels, as `altbeam
evaluate --model` does), gives each its gate status, and for the ``ok`` captions that
name an object no reference names (CHAIR's unsupported objects) prints how often each
object is to blame, then each such photo with its caption and the model's top concepts.

    python tools/gate_misses.py model/default ../shared/datasets/coco/captions.jsonl \
        train2017,val2017
"""
from __future__ import annotations

import argparse
import collections
import sys

from altbeam.model.data.datasets import load_dataset
from altbeam.model.evaluation.chair import score_image
from altbeam.model.evaluation.evaluate import run_model
from altbeam.model.evaluation.gate import photo_statuses
from altbeam.model.serving.caption_status import OK
from altbeam.model.serving.saved_model import read_model_info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("dataset")
    ap.add_argument("split")
    ap.add_argument("--top", type=int, default=5, help="concepts shown per photo")
    a = ap.parse_args(argv)
    items = [i for i in load_dataset(a.dataset, a.split, missing_images="drop") if i.path]
    info = read_model_info(a.model)
    out = run_model(info, [i.path for i in items], progress=False)
    if out.concepts is None:
        raise SystemExit(f"gate_misses: {a.model} has no concept head")
    statuses = photo_statuses(out.captions, out.scores, out.concepts, out.concept_scores,
                              out.pixel_statuses, info.judged, info.thresholds)
    blamed, rows = collections.Counter(), []
    for item, caption, status, words, values in zip(items, out.captions, statuses,
                                                    out.concepts, out.concept_scores):
        unsupported = score_image(caption, item.captions).unsupported
        if status == OK and unsupported:
            blamed.update(unsupported)
            top = ", ".join(f"{w} {v:.2f}" for w, v in list(zip(words, values))[:a.top])
            rows.append(f"  {item.image_id}: {caption!r}  absent: {', '.join(unsupported)}"
                        f"  concepts: {top}")
    print(f"{a.split}: {len(items)} photos, {statuses.count(OK)} ok, {len(rows)} of them "
          f"name an absent object")
    print("absent objects:", ", ".join(f"{o} {n}" for o, n in blamed.most_common()))
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
