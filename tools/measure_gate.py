"""Measure the caption gate (model/serving/caption_status.py) and tune its thresholds.

For each photo set: the bundled model's best caption and its score (the SavedModel, from
pixels prepared as the caption pipeline prepares them), and the CNN's concept scores
computed here in Python from the same pixels (encoder + ImageNet head -> softmax ->
imagenet_concept_scores, the larger of that and the trained detectors where both
exist, top K). Then CHAIR-s, CHAIR-i and coverage (model/evaluation/chair.py), the
share of captions the gate calls `ok`, and CHAIR-s among those.

Sets: `tune` = the 500 images `altbeam train --seed 1` carves out of Flickr8k train
(the default model's first member never trained on them; its second member did on
most: see docs/training.md), `dev` = Flickr8k dev (1,000), `coco` = the shared 259 COCO
photos (out-of-domain dev). Thresholds are tuned on `tune` only (``--tune``).

    python tools/measure_gate.py --detectors model/data/concept_detectors.npz \\
        --cache work/gate_cache [--tune [--only person_support,…]]

The model's outputs are cached per set under --cache (the CNN and the captioner run
once); later runs only re-score.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np

from altbeam.model import DEFAULT_MODEL_DIR
from altbeam.model.data.concepts import CONCEPTS, imagenet_concept_scores
from altbeam.model.data.datasets import load_dataset
from altbeam.model.evaluation.chair import chair
from altbeam.model.evaluation.gate import gate_figures, photo_pixel_status, photo_statuses
from altbeam.model.serving.caption_status import (
    CONTRADICTED,
    OK,
    UNSURE,
    GateThresholds,
    covered_concepts,
)

SHARED = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
TUNE_IMAGES, TUNE_SEED = 500, 1     # `altbeam train --seed 1 --val-images 500`'s carve


def photo_sets(shared: pathlib.Path) -> dict[str, list]:
    """name -> CaptionedImage list (tune carve-out, Flickr8k dev, shared COCO)."""
    train = sorted(load_dataset(shared / "flickr8k", "train"), key=lambda i: i.image_id)
    order = np.random.default_rng(TUNE_SEED).permutation(len(train))   # common.carve_validation
    tune = [train[i] for i in sorted(order[:min(TUNE_IMAGES, len(train) // 5)])]
    return {"tune": tune, "dev": load_dataset(shared / "flickr8k", "dev"),
            "coco": load_dataset(shared / "coco" / "captions.jsonl")}


def run_model(items, model_dir: str, batch_size: int = 32) -> dict[str, np.ndarray]:
    """Captions, scores, pooled features, ImageNet probabilities, pixel statuses."""
    import keras

    from altbeam.model.data.pixels import load_pixels
    from altbeam.model.nets.encoder import build_classifier
    from altbeam.model.serving.saved_model import LoadedModel, read_model_card, read_model_info

    model = LoadedModel(model_dir, read_model_info(model_dir).image_size)
    clf = build_classifier(read_model_card(model_dir).get("backbone", "lite0"))
    two_heads = keras.Model(clf.input, [clf.get_layer("avg_pool").output, clf.output])
    out = {k: [] for k in ("captions", "scores", "pooled", "probs", "pixel_status")}
    for s in range(0, len(items), batch_size):
        batch = items[s:s + batch_size]
        pixels = np.stack([load_pixels(i.path, model.image_size) for i in batch])
        captions, scores = model.caption(pixels)
        pooled, logits = (np.asarray(t) for t in two_heads(pixels.astype(np.float32)))
        out["captions"] += [c.decode("utf-8") for c in captions[:, 0]]
        out["scores"] += list(scores[:, 0])
        out["pooled"].append(pooled)
        out["probs"].append(_softmax(logits))
        out["pixel_status"] += [photo_pixel_status(i.path, px) or ""
                                for i, px in zip(batch, pixels)]
        print(f"\r  {s + len(batch)}/{len(items)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return {"ids": np.array([i.image_id for i in items]), "captions": np.array(out["captions"]),
            "scores": np.array(out["scores"], np.float32), "pooled": np.concatenate(out["pooled"]),
            "probs": np.concatenate(out["probs"]), "pixel_status": np.array(out["pixel_status"])}


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def cached_outputs(name: str, items, model_dir: str, cache: pathlib.Path) -> dict:
    path = cache / f"{name}.npz"
    if not path.exists():
        print(f"{name}: captioning {len(items)} photos with {model_dir}", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **run_model(items, model_dir))
    with np.load(path, allow_pickle=False) as npz:
        out = {k: npz[k] for k in npz.files}
    if list(out["ids"]) != [i.image_id for i in items]:
        raise ValueError(f"{path} holds other images: delete it to recompute")
    return out


def concept_scores(out: dict, detectors: str | None) -> np.ndarray:
    """[N, len(CONCEPTS)]: ImageNet's concept scores, the larger of it and a detector's."""
    scores = imagenet_concept_scores(out["probs"])
    if detectors:
        with np.load(detectors, allow_pickle=False) as npz:
            det = 1.0 / (1.0 + np.exp(-(out["pooled"] @ npz["kernel"] + npz["bias"])))
            for d, concept in enumerate(npz["concepts"]):
                t = CONCEPTS.index(str(concept))
                scores[:, t] = np.maximum(scores[:, t], det[:, d])
    return scores


def top_k(scores: np.ndarray, k: int) -> list[tuple[list[str], list[float]]]:
    """Per image, the K best concepts and scores (what the SavedModel returns)."""
    best = np.argsort(-scores, axis=1)[:, :k]
    return [([CONCEPTS[t] for t in row], [float(scores[i, t]) for t in row])
            for i, row in enumerate(best)]


@dataclasses.dataclass
class Scored:
    """One set, ready to gate: captions, scores, concepts, and CHAIR per image."""

    captions: list[str]
    scores: np.ndarray
    concepts: list[tuple[list[str], list[float]]]
    references: list[list[str]]
    pixel_status: list[str]

    def __post_init__(self):
        self.chair = chair(self.captions, self.references)
        self.hallucinated = np.array([i.hallucinated for i in self.chair.images])

    def statuses(self, t: GateThresholds, covered: frozenset[str]) -> list[str]:
        """Each photo's status: `altbeam evaluate`'s rule (model/evaluation/gate.py)."""
        return photo_statuses(self.captions, self.scores, [w for w, _ in self.concepts],
                              [v for _, v in self.concepts], [p or None for p in self.pixel_status],
                              covered, t)


def row(name: str, scored: Scored, t: GateThresholds, covered: frozenset[str]) -> dict:
    figures = gate_figures(scored.statuses(t, covered), scored.captions, scored.references)
    shares = figures.shares()
    return {"set": name, "images": figures.images, **scored.chair.as_dict(),
            "ok": shares[OK], "CHAIR-s ok": figures.ok_scores().get("CHAIR-s", float("nan")),
            "unsure": shares[UNSURE], "contradicted": shares[CONTRADICTED],
            "pixel": int(sum(bool(p) for p in scored.pixel_status))}


def print_table(rows: list[dict]) -> None:
    cols = ("set", "images", "CHAIR-s", "CHAIR-i", "coverage", "ok", "CHAIR-s ok", "unsure",
            "contradicted", "pixel")
    print(" | ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print(" | ".join(f"{r[c]:>12.3f}" if isinstance(r[c], float) else f"{r[c]:>12}"
                         for c in cols))


# The grid --tune searches, per GateThresholds field.
TUNE_GRID = {
    "min_caption_score": (-9.0, -1.6, -1.4, -1.3, -1.2, -1.1, -1.0),
    "support": (0.0, 0.005, 0.01, 0.02, 0.05, 0.1),
    "person_support": (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9),
    "contradict_below": (0.0, 0.002, 0.005, 0.01, 0.02, 0.05),
    "confident": (0.3, 0.5, 0.7, 0.9),
}


def tune(scored: Scored, covered: frozenset[str], ok_floor: float,
         only: Sequence[str] | None = None,
         start: GateThresholds = GateThresholds()) -> GateThresholds:
    """On the tune set, over a grid of the thresholds (``only`` those fields, the others
    kept as in ``start``): the lowest CHAIR-s among the `ok` captions that keeps at
    least ``ok_floor`` of them ok; ties go to more ok, then to the best F1 of
    `contradicted` as a detector of captions naming an absent object, then to the
    higher caption-score floor (on in-domain captions a floor below their scores
    changes nothing; out of domain, where scores run lower, it holds more back)."""
    names = [f.name for f in dataclasses.fields(GateThresholds)]
    unknown = sorted(set(only or ()) - set(names))
    if unknown:
        raise ValueError(f"unknown threshold(s) {unknown}; known: {names}")
    grid = [TUNE_GRID[n] if not only or n in only else (getattr(start, n),) for n in names]
    best = None
    for values in itertools.product(*grid):
        t = GateThresholds(**dict(zip(names, values)))
        statuses = np.array(scored.statuses(t, covered))
        ok = statuses == OK
        if ok.mean() < ok_floor:
            continue
        flagged = statuses == CONTRADICTED
        # CHAIR-s among ok as gate_figures reports it, from the per-photo flags scored once
        # (re-scoring CHAIR for each of the thousands of settings would take minutes).
        f1 = 2 * (flagged & scored.hallucinated).sum() / (flagged.sum() + scored.hallucinated.sum())
        key = (round(float(scored.hallucinated[ok].mean()), 4), -ok.mean(), -f1,
               -t.min_caption_score)
        if best is None or key < best[0]:
            best = (key, t)
    if best is None:
        raise ValueError(f"no setting keeps {ok_floor:.0%} of the tune set ok")
    return best[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--detectors", help="detectors .npz (altbeam train-concepts)")
    ap.add_argument("--cache", default="work/gate_cache", help="folder for the model outputs")
    ap.add_argument("--shared", default=str(SHARED), help="the shared datasets folder")
    ap.add_argument("--top-k", type=int, default=10, help="concepts per image, as served "
                    "(model/nets/concept_head.py DEFAULT_TOP_K)")
    ap.add_argument("--tune", action="store_true", help="choose thresholds on the tune set")
    ap.add_argument("--ok-floor", type=float, default=0.88, help="with --tune: least share "
                    "ok (the 85 %% in-domain target plus 3 points for carve-out vs dev)")
    ap.add_argument("--only", help="with --tune: tune only these fields (comma-separated), "
                    "keeping the others at their defaults")
    ap.add_argument("--sets", default="tune,dev,coco")
    args = ap.parse_args(argv)
    sets = photo_sets(pathlib.Path(args.shared))
    covered = covered_concepts(_detector_concepts(args.detectors))
    scored = {}
    for name in args.sets.split(","):
        out = cached_outputs(name, sets[name], args.model, pathlib.Path(args.cache))
        scored[name] = Scored(list(out["captions"]), out["scores"],
                              top_k(concept_scores(out, args.detectors), args.top_k),
                              [i.captions for i in sets[name]], list(out["pixel_status"]))
    thresholds = GateThresholds()
    if args.tune:
        thresholds = tune(scored["tune"], covered, args.ok_floor,
                          args.only.split(",") if args.only else None)
    print(f"thresholds: {json.dumps(dataclasses.asdict(thresholds))}")
    print_table([row(name, s, thresholds, covered) for name, s in scored.items()])
    return 0


def _detector_concepts(path: str | None) -> list[str]:
    if not path:
        return []
    with np.load(path, allow_pickle=False) as npz:
        return [str(c) for c in npz["concepts"]]


if __name__ == "__main__":
    sys.exit(main())
