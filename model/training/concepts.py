"""`altbeam train-concepts`: detectors for the concepts ImageNet's 1,000 classes lack.

After Fang et al. 2015 ("From captions to visual concepts and back"): the caption text
of the training images is the label. For each image and concept the target is 1 when
at least ``min_captions`` (2) of its reference captions name the concept
(`concepts_in_caption`, the reader the CHAIR metric uses), so one annotator's passing
word does not make a label, and 0 otherwise. A person word of any kind (man, girl,
crowd, …) counts for the concept the caption gate judges it by (`judged_as`: person).

Each detector is a logistic regression on the pooled encoder grid (the mean of the 7×7
cells of 1280 features): one Dense sigmoid layer over all concepts, trained with SGD
and momentum on standardised features, early stopping on the mean average precision
of a validation set carved out of the training split (the same carve as `altbeam train`'s, so a
caption run's validation images are also unseen by the detectors). The
standardisation is folded into the weights on the way out, so the output file is what
the SavedModel's concept head applies to the raw pooled features::

    FILE.npz:  kernel float32 [1280, D], bias float32 [D], concepts str [D], encoder
               scores = sigmoid(pooled @ kernel + bias)  (model/nets/concept_head.py's
               format, written by its save_detectors)
    FILE.json: the recipe, the validation history and per-concept precision / recall
               (at 0.5) / average precision on the evaluation split (dev)

Which concepts: every concept with at least ``min_positives`` (50) positive training
images gets a detector trained; one is kept when no ImageNet class maps to its concept
(model/data/imagenet_concepts.tsv) or when it beats the ImageNet head's own concept
score for it by ``imagenet_margin`` in validation AP (person: 3 ImageNet classes —
scuba diver, groom, ballplayer — cover few of the people in captions; beach, field).
The SavedModel's concept head keeps the larger of the two scores where both exist.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
from dataclasses import asdict, dataclass

import numpy as np

from altbeam.model.data.concepts import (
    CONCEPTS,
    IMAGENET_TO_CONCEPT,
    concepts_in_caption,
    imagenet_concept_scores,
)
from altbeam.model.data.feature_records import FeatureSet, load_split
from altbeam.model.nets.concept_head import save_detectors
from altbeam.model.serving.caption_status import judged_as


@dataclass(frozen=True)
class DetectorRecipe:
    min_captions: int = 2        # a concept is in the image when this many captions name it
    min_positives: int = 50      # train a detector only with this many positive images
    balanced: bool = False       # weight positives by neg/pos (off: scores stay calibrated)
    learning_rate: float = 0.01
    l2: float = 1e-4
    batch_size: int = 256
    epochs: int = 100
    patience: int = 8
    imagenet_margin: float = 0.05  # keep a detector for an ImageNet concept if AP beats it by this
    val_images: int = 500
    split_seed: int = 1          # the validation carve of `altbeam train --seed 1`
    seed: int = 0


def pooled_features(data: FeatureSet) -> np.ndarray:
    """[n, L, C] float16 grids -> [n, C] float32 means (what the concept head pools)."""
    return data.features.astype(np.float32).mean(axis=1)


def caption_counts(captions: list[list[str]], concepts: list[str]) -> np.ndarray:
    """[n, D] int: how many of each image's captions name each concept (person kinds
    counted as the concept that judges them)."""
    column = {c: d for d, c in enumerate(concepts)}
    counts = np.zeros((len(captions), len(concepts)), np.int32)
    for i, caps in enumerate(captions):
        for caption in caps:
            for d in {column[judged_as(c)] for c in concepts_in_caption(caption)
                      if judged_as(c) in column}:
                counts[i, d] += 1
    return counts


def targets(captions: list[list[str]], concepts: list[str], min_captions: int) -> np.ndarray:
    """[n, D] float32 multi-label targets (see the module docstring)."""
    return (caption_counts(captions, concepts) >= min_captions).astype(np.float32)


def candidate_concepts(captions: list[list[str]], recipe: DetectorRecipe) -> list[str]:
    """Concepts (person kinds folded into person) with min_positives positive images."""
    folded = list(dict.fromkeys(judged_as(c) for c in CONCEPTS))
    positives = targets(captions, folded, recipe.min_captions).sum(axis=0)
    return [c for c, n in zip(folded, positives) if n >= recipe.min_positives]


def imagenet_probabilities(pooled: np.ndarray, encoder: str) -> np.ndarray:
    """[n, 1000] softmax of the encoder's own ImageNet layer on pooled features."""
    from altbeam.model.nets.encoder import build_classifier

    kernel, bias = build_classifier(encoder).get_layer("fc").get_weights()
    logits = pooled @ kernel + bias
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def keep_over_imagenet(y_val: np.ndarray, detector_scores: np.ndarray,
                       imagenet_scores: np.ndarray | None, concepts: list[str],
                       margin: float) -> tuple[list[int], dict[str, dict]]:
    """Columns to keep (see the module docstring) and each concept's two validation APs.
    imagenet_scores: [n, len(CONCEPTS)] or None (no ImageNet head: mapped ones dropped)."""
    mapped = {c for c in IMAGENET_TO_CONCEPT if c}
    keep, comparison = [], {}
    for d, concept in enumerate(concepts):
        ap = average_precision(y_val[:, d], detector_scores[:, d])
        if concept not in mapped:
            keep.append(d)
            continue
        column = imagenet_scores[:, CONCEPTS.index(concept)] if imagenet_scores is not None else None
        imagenet_ap = average_precision(y_val[:, d], column) if column is not None else float("nan")
        comparison[concept] = {"detector_AP": ap, "imagenet_AP": imagenet_ap}
        if ap >= imagenet_ap + margin:   # NaN (no positives, no head) never passes
            keep.append(d)
    return keep, comparison


def average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as a sum over positives (ties in rank order);
    NaN when there is no positive."""
    positives = y.sum()
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = y[order]
    precision_at_hit = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at_hit * hits).sum() / positives)


def concept_metrics(y: np.ndarray, scores: np.ndarray, concepts: list[str],
                    threshold: float = 0.5) -> dict[str, dict[str, float]]:
    """Per concept: positives, precision and recall at ``threshold``, average precision."""
    out = {}
    for d, concept in enumerate(concepts):
        truth, predicted = y[:, d] > 0, scores[:, d] >= threshold
        tp = int((truth & predicted).sum())
        out[concept] = {
            "positives": int(truth.sum()),
            "precision": tp / int(predicted.sum()) if predicted.any() else float("nan"),
            "recall": tp / int(truth.sum()) if truth.any() else float("nan"),
            "AP": average_precision(truth.astype(np.float32), scores[:, d]),
        }
    return out


def mean_ap(y: np.ndarray, scores: np.ndarray) -> float:
    aps = [average_precision(y[:, d], scores[:, d]) for d in range(y.shape[1])]
    return float(np.nanmean(aps)) if aps else float("nan")


def detector_scores(kernel: np.ndarray, bias: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """sigmoid(pooled @ kernel + bias): what the SavedModel's concept head computes."""
    return 1.0 / (1.0 + np.exp(-(pooled @ kernel + bias)))


def fit(x_train, y_train, x_val, y_val, recipe: DetectorRecipe,
        log=print) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """One Dense sigmoid layer over standardised features; keep the epoch with the best
    validation mean AP. Returns (kernel, bias) on *raw* pooled features and the history."""
    import keras
    import tensorflow as tf

    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 1e-6, std, 1.0)   # a constant channel stays 0 and gets no weight
    standard = lambda x: ((x - mean) / std).astype(np.float32)  # noqa: E731
    xs_train, xs_val = standard(x_train), standard(x_val)
    keras.utils.set_random_seed(recipe.seed)
    # Zero start, as logistic regression: a random kernel adds noise over 1280 inputs
    # that the few positives of a rare concept cannot train away.
    dense = keras.layers.Dense(y_train.shape[1], kernel_initializer="zeros",
                               kernel_regularizer=keras.regularizers.L2(recipe.l2))
    dense.build((None, x_train.shape[1]))
    # Plain SGD, not Adam: Adam's per-weight step sizes spread weight over every input
    # (a sign-descent bias towards dense solutions); gradient descent on a logistic
    # loss heads for the max-margin direction, which is what a linear detector wants.
    optimizer = keras.optimizers.SGD(recipe.learning_rate, momentum=0.9)
    prior = y_train.mean(axis=0).clip(1e-4, 1 - 1e-4)
    # Start each detector at its base rate: the first epochs learn features, not priors.
    dense.bias.assign(np.log(prior / (1 - prior)).astype(np.float32))
    pos_weight = ((1 - prior) / prior if recipe.balanced else np.ones_like(prior))
    pos_weight = tf.constant(pos_weight.astype(np.float32))

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = dense(x)
            loss = tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(y, logits, pos_weight))
            loss += tf.add_n(dense.losses)
        grads = tape.gradient(loss, dense.trainable_variables)
        optimizer.apply_gradients(zip(grads, dense.trainable_variables))
        return loss

    rng = np.random.default_rng(recipe.seed)
    history, best, best_ap, waited = [], None, -1.0, 0
    for epoch in range(1, recipe.epochs + 1):
        order = rng.permutation(len(xs_train))
        losses = [float(step(xs_train[b], y_train[b])) for b in
                  (order[s:s + recipe.batch_size] for s in range(0, len(order), recipe.batch_size))]
        kernel, bias = (v.numpy() for v in (dense.kernel, dense.bias))
        val_scores = detector_scores(kernel, bias, xs_val)
        val_ap = mean_ap(y_val, val_scores)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_mAP": val_ap})
        log(f"epoch {epoch}: loss {np.mean(losses):.4f}  validation mAP {val_ap:.4f}")
        if val_ap > best_ap:
            best_ap, best, waited = val_ap, (kernel.copy(), bias.copy(), epoch), 0
        else:
            waited += 1
            if waited >= recipe.patience:
                break
    kernel, bias, _ = best
    # Fold the standardisation in: ((x - m) / s) @ K + b = x @ (K / s) + (b - (m / s) @ K).
    raw_kernel = kernel / std[:, None]
    raw_bias = bias - (mean / std) @ kernel
    return raw_kernel.astype(np.float32), raw_bias.astype(np.float32), history


def train_concepts(features_dir: str, out: str, recipe: DetectorRecipe = DetectorRecipe(),
                   eval_split: str | None = "dev", concepts: list[str] | None = None,
                   compare_imagenet: bool = True, log=print) -> dict:
    """Train, save FILE.npz and FILE.json (see the module docstring); returns the record."""
    from altbeam.model.training.common import carve_validation

    full = load_split(features_dir, "train")
    train_set, val_set = carve_validation(full, min(recipe.val_images, len(full) // 5),
                                          recipe.split_seed)
    concepts = concepts or candidate_concepts(train_set.captions, recipe)
    if not concepts:
        raise ValueError(f"no concept has {recipe.min_positives} positive training images")
    y_train = targets(train_set.captions, concepts, recipe.min_captions)
    y_val = targets(val_set.captions, concepts, recipe.min_captions)
    log(f"{len(concepts)} concepts, {len(train_set)} training / {len(val_set)} validation "
        f"images: {', '.join(concepts)}")
    x_val = pooled_features(val_set)
    kernel, bias, history = fit(pooled_features(train_set), y_train, x_val, y_val, recipe, log)
    imagenet = None
    if compare_imagenet:
        imagenet = imagenet_concept_scores(imagenet_probabilities(x_val, full.encoder))
    keep, comparison = keep_over_imagenet(y_val, detector_scores(kernel, bias, x_val), imagenet,
                                          concepts, recipe.imagenet_margin)
    concepts, kernel, bias = [concepts[d] for d in keep], kernel[:, keep], bias[keep]
    dropped = sorted(set(comparison) - set(concepts))
    log(f"kept {len(concepts)} detectors; ImageNet's head does as well for: {', '.join(dropped)}")
    save_detectors(out, kernel, bias, concepts, encoder=full.encoder or None)
    best = max(history, key=lambda h: h["val_mAP"])
    record = {"recipe": asdict(recipe), "concepts": concepts, "features": features_dir,
              "train_images": len(train_set), "val_images": len(val_set),
              "train_positives": dict(zip(concepts, y_train[:, keep].sum(axis=0).astype(int)
                                          .tolist())),
              "best_epoch": best["epoch"], "val_mAP_all_candidates": best["val_mAP"],
              "imagenet_comparison_val": comparison, "history": history}
    if eval_split:
        data = load_split(features_dir, eval_split)
        y = targets(data.captions, concepts, recipe.min_captions)
        scores = detector_scores(kernel, bias, pooled_features(data))
        record[eval_split] = {"images": len(data), "mAP": mean_ap(y, scores),
                              "concepts": concept_metrics(y, scores, concepts)}
        log(f"{eval_split}: mAP {record[eval_split]['mAP']:.3f} over {len(data)} images")
    report = pathlib.Path(out).with_suffix(".json")
    report.write_text(json.dumps(_nan_to_none(record), indent=1, allow_nan=False) + "\n")
    return record


def _nan_to_none(value):
    """Undefined metrics (no positive, no prediction) as JSON null, not NaN."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


def parse_args(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="altbeam train-concepts", description=__doc__.split("\n")[0])
    ap.add_argument("--features", required=True, help="feature shards (altbeam features)")
    ap.add_argument("--out", required=True, help="detectors file (.npz); a .json report beside")
    ap.add_argument("--eval-split", default="dev", help="split to report per-concept "
                    "precision/recall/AP on ('' for none)")
    ap.add_argument("--concepts", help="comma-separated candidate concepts (default: every "
                    "concept with --min-positives positive training images)")
    ap.add_argument("--compare-imagenet", action=argparse.BooleanOptionalAction, default=True,
                    help="keep detectors for ImageNet-mapped concepts only where they beat the "
                    "encoder's ImageNet head (off: drop them; for encoders without one)")
    defaults = DetectorRecipe()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            ap.add_argument(flag, type=type(value), default=value)
    return ap.parse_args(argv)


def main(argv) -> int:
    args = parse_args(argv)
    fields = asdict(DetectorRecipe())
    recipe = DetectorRecipe(**{k: getattr(args, k) for k in fields})
    concepts = [c.strip() for c in args.concepts.split(",")] if args.concepts else None
    out = args.out if args.out.endswith(".npz") else args.out + ".npz"
    record = train_concepts(args.features, out, recipe, args.eval_split or None, concepts,
                            args.compare_imagenet)
    print(f"{len(record['concepts'])} detectors (validation mAP over all candidates "
          f"{record['val_mAP_all_candidates']:.3f}); "
          f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
