"""Print the top concepts a SavedModel returns for each photo (default: the bundled
model on the bundled samples) — the figures quoted in the README and docs/training.md.

    python tools/sample_concepts.py [--model DIR] [--top 3] [PHOTO ...]
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np

from altbeam.model import DEFAULT_MODEL_DIR
from altbeam.model.data.pixels import load_pixels
from altbeam.model.serving.saved_model import LoadedModel, read_model_info

SAMPLES = os.path.join(os.path.dirname(__file__), "..", "samples", "photos", "*.jpg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("photos", nargs="*")
    a = ap.parse_args()
    model = LoadedModel(a.model, read_model_info(a.model).image_size)
    if not model.has_concepts:
        raise SystemExit(f"{a.model}: this model returns no concepts")
    for path in a.photos or sorted(glob.glob(SAMPLES)):
        out = model.predict(np.stack([load_pixels(path, model.image_size)]))
        pairs = zip(out.concepts[0][: a.top], out.concept_scores[0][: a.top])
        print(os.path.basename(path), ", ".join(
            f"{c.decode() if isinstance(c, bytes) else c} {s:.2f}" for c, s in pairs))


if __name__ == "__main__":
    main()
