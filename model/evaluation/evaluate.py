"""`altbeam evaluate`: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and CHAIR on a dataset split.

CHAIR (model.evaluation.chair) counts the objects a caption names that no reference
names: CHAIR-s is the share of captions naming at least one, CHAIR-i the share of
object mentions; coverage the share of objects most references name that the caption
names too.

Two ways to run the model, both scored with the same tooling (model.metrics):

* ``--model DIR``: the exported SavedModel end to end, from pixels (what users get);
* ``--run DIR --features DIR``: a training run's decoder on cached encoder features
  (fast; used for the comparison tables in docs/training.md).

Baselines give every number context: ``--features`` also scores nearest-neighbour
caption retrieval and the constant most-common caption, on the same split.

With ``--model`` and a model that returns concepts (a concept head), the caption gate
is scored too (model/evaluation/gate.py): the share of photos per status, and CHAIR
among the ``ok`` captions only. The figures above it stay those of every caption.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

from altbeam.model.evaluation.gate import (
    format_gate,
    gate_figures,
    photo_pixel_status,
    photo_statuses,
)
from altbeam.model.serving.caption_status import DEFAULT_THRESHOLDS, GateThresholds
from altbeam.model.serving.export import (
    add_guide_flags,
    attach_guide,
    concept_head_for,
    guide_settings,
)

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr",
           "CHAIR-s", "CHAIR-i", "coverage")
# Why the caption gate's figures are missing (the gate needs the model's concept scores).
NO_HEAD = ("the model has no concept head: re-export it with `altbeam export "
           "--from-saved-model MODEL --concepts` to score the caption gate")
NO_SAVED_MODEL = ("the caption gate needs an exported SavedModel with a concept head "
                  "(--model); a training run's decoder has none")


@dataclasses.dataclass(frozen=True)
class PhotoOutputs:
    """The exported model's outputs for each photo of a set, in order."""

    captions: list[str]                        # the best caption
    scores: list[float]                        # its score
    pixel_statuses: list[str | None]           # too_small / blank: the caption job's hold-back
    concepts: list[list[str]] | None = None    # None: the model has no concept head
    concept_scores: list[list[float]] | None = None


def run_model(info, paths: list[str], batch_size: int = 32,
              progress: bool = True) -> PhotoOutputs:
    """The exported SavedModel (``info``: its `read_model_info`) on each image file, its
    pixels prepared exactly as the caption pipeline prepares them."""
    from altbeam.model.data.pixels import load_pixels
    from altbeam.model.serving.saved_model import LoadedModel
    model = LoadedModel(info.path, info.image_size)
    captions, scores, held, concepts, concept_scores = [], [], [], [], []
    start = time.time()
    for s in range(0, len(paths), batch_size):
        batch = paths[s:s + batch_size]
        pixels = np.stack([load_pixels(p, model.image_size) for p in batch])
        out = model.predict(pixels)
        captions += [c.decode("utf-8") for c in out.captions[:, 0]]
        scores += [float(v) for v in out.scores[:, 0]]
        held += [photo_pixel_status(p, px) for p, px in zip(batch, pixels)]
        if out.concepts is not None:
            concepts += [[c.decode("utf-8") for c in row] for row in out.concepts]
            concept_scores += [[float(v) for v in row] for row in out.concept_scores]
        if progress:
            print(f"\r  captioned {len(captions)}/{len(paths)} "
                  f"({len(captions) / (time.time() - start):.1f} images/s)",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    if not model.has_concepts:
        return PhotoOutputs(captions, scores, held)
    return PhotoOutputs(captions, scores, held, concepts, concept_scores)


def gate_report(outputs: PhotoOutputs, ids: list[str], references: dict[str, list[str]],
                judged: frozenset[str], thresholds: GateThresholds = DEFAULT_THRESHOLDS):
    """(the JSON's "gate" section, the figures or None): the caption gate on the model's
    best captions (model/evaluation/gate.py), or why it is not available."""
    if outputs.concepts is None:
        return {"available": False, "reason": NO_HEAD}, None
    statuses = photo_statuses(outputs.captions, outputs.scores, outputs.concepts,
                              outputs.concept_scores, outputs.pixel_statuses, judged,
                              thresholds)
    figures = gate_figures(statuses, outputs.captions, [references[i] for i in ids])
    return {"available": True, "judged_concepts": len(judged),
            "thresholds": dataclasses.asdict(thresholds), **figures.as_dict(),
            "statuses": dict(zip(ids, statuses))}, figures


def baseline_captions(features_dir: str, split: str, ids: list[str]) -> dict[str, list[str]]:
    """Nearest-neighbour and most-common-caption baselines for the images ``ids``."""
    from altbeam.model.data.datasets import CaptionedImage
    from altbeam.model.data.feature_records import load_split
    from altbeam.model.evaluation.baselines import most_common_caption, nearest_neighbour_captions
    train = load_split(features_dir, "train")
    query = load_split(features_dir, split)
    where = {i: k for k, i in enumerate(query.image_ids)}
    missing = [i for i in ids if i not in where]
    if missing:
        raise SystemExit(f"altbeam evaluate: {len(missing)} images of the split have no cached "
                         f"features in {features_dir} (e.g. {missing[0]})")
    q = query.features[[where[i] for i in ids]].astype(np.float32).mean(axis=1)
    nn = nearest_neighbour_captions(train.features.astype(np.float32).mean(axis=1),
                                    train.captions, q)
    common = most_common_caption([CaptionedImage(i, None, c, "train")
                                  for i, c in zip(train.image_ids, train.captions)])
    return {"nearest-neighbour": list(nn), "most-common caption": [common] * len(ids)}


def score_table(references: dict[str, list[str]], systems: dict[str, list[str]],
                tokenizer: str = "ptb") -> dict[str, dict[str, float]]:
    from altbeam.model.evaluation.chair import chair
    from altbeam.model.evaluation.metrics import find_java, score_captions
    java = find_java()
    if tokenizer == "ptb" and not java:
        raise SystemExit("altbeam evaluate: Java not found (needed by METEOR and the PTB "
                         "tokenizer): install default-jre-headless, or pass --tokenizer simple")
    # Without Java there is no METEOR: say so in the table rather than guess a number.
    scorers = ("bleu", "meteor", "rouge", "cider") if java else ("bleu", "rouge", "cider")
    ids = list(references)
    refs = [references[i] for i in ids]
    return {name: score_captions(references, dict(zip(ids, caps)), scorers, tokenizer)
            | chair(caps, refs).as_dict()
            for name, caps in systems.items()}


def format_table(table: dict[str, dict[str, float]]) -> str:
    cols = [m for m in METRICS if any(m in row for row in table.values())]
    width = max(len(n) for n in table) + 2
    lines = ["system".ljust(width) + "".join(c.rjust(9) for c in cols)]
    for name, row in table.items():
        lines.append(name.ljust(width) + "".join(
            (f"{row[c]:.3f}" if c in row else "-").rjust(9) for c in cols))
    return "\n".join(lines)


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="altbeam evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="exported SavedModel folder (default: the bundled model)")
    ap.add_argument("--run", nargs="+", help="training run folder(s): decode cached features "
                    "instead; several runs decode as one ensemble")
    ap.add_argument("--dataset", help="dataset (Flickr8k folder, captions.jsonl, COCO/Karpathy "
                    "json, JSONL/CSV); needed with --model")
    ap.add_argument("--split", default="dev", help="split to score; with --run, 'val' is the "
                    "run's validation images (carved out of train as `altbeam train` did), "
                    "for choosing settings without touching dev")
    ap.add_argument("--val-images", type=int, default=500, help="with --split val: as in train")
    ap.add_argument("--features", help="feature shards (altbeam features): enables baselines; "
                    "required with --run")
    ap.add_argument("--beam-width", type=int, help="with --run: beams (default: run config)")
    ap.add_argument("--length-alpha", type=float, help="with --run: length normalisation")
    ap.add_argument("--block-trigrams", action=argparse.BooleanOptionalAction, default=None,
                    help="with --run: never repeat a trigram in a caption (default: run config)")
    ap.add_argument("--block-repeated-words", action=argparse.BooleanOptionalAction,
                    default=None, help="with --run: never the same word twice in a row "
                    "(default: run config)")
    add_guide_flags(ap, "with --run: decode as the export would, the run's concept head "
                    "scoring the cached grids; default none")
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--tokenizer", choices=("ptb", "simple"), default="ptb")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--out", help="write the scores as JSON here")
    a = ap.parse_args(argv)
    guide_asked = guide_settings(a.concept_decoding, a.concept_alpha, a.concept_boost,
                                 a.concept_threshold, a.transfer_templates)
    if guide_asked and not a.run:
        ap.error("--concept-decoding is for --run (a SavedModel decodes as it was exported)")

    systems: dict[str, list[str]] = {}
    if a.run:
        if not a.features:
            ap.error("--run needs --features")
        from altbeam.model.data.feature_records import load_split
        from altbeam.model.nets.encoder_cut import refuse_fine_tuned
        from altbeam.model.nets.ensemble import load_runs
        from altbeam.model.training.common import decode_features
        refuse_fine_tuned(a.run, "altbeam evaluate --run")
        decoder, vocab, config = load_runs(a.run)
        if a.split == "val":  # the run's own validation images, carved out of train
            from altbeam.model.training.common import validation_split
            data = validation_split(load_split(a.features, "train"), a.val_images, config)[1]
            data = data.subset(range(min(len(data), a.limit or len(data))))
        else:
            data = load_split(a.features, a.split, a.limit)
        ids, refs = data.image_ids, dict(zip(data.image_ids, data.captions))
        k = a.beam_width or config.beam_width
        alpha = config.length_alpha if a.length_alpha is None else a.length_alpha
        block = config.block_repeated_trigrams if a.block_trigrams is None else a.block_trigrams
        norep = (config.block_repeated_words if a.block_repeated_words is None
                 else a.block_repeated_words)
        name = "decoder" if len(a.run) == 1 else f"ensemble of {len(a.run)}"
        name += (f" (beam {k}, alpha {alpha:g}{', trigrams blocked' if block else ''}"
                 f"{', +norep' if norep else ''})")
        concepts, guide = None, None
        guided = bool(guide_asked) and guide_asked["mode"] != "none"
        if config.concept_inputs or guided:  # the run's head, on the same grids
            from altbeam.model.training.concept_inputs import grid_concept_scores
            head = evaluation_concept_head(a.run[0], config)
            concepts = grid_concept_scores(head, data.features, config.grid)
            guide = attach_guide(vocab.words, head, guide_asked)
            if guide is not None:
                g = guide.settings()
                name += (f", {g['mode']} alpha {g['alpha']:g} boost {g['boost']:g} "
                         f"threshold {g['threshold']:g}")
        systems[name] = decode_features(
            decoder, data.features, k, config.max_length, alpha, vocab.words,
            ban_unk=config.ban_unk, block_repeated_trigrams=block, concepts=concepts,
            guide=guide, block_repeated_words=norep)
        card = {"run": a.run, "beam_width": k, "length_alpha": alpha,
                "block_repeated_trigrams": block, "block_repeated_words": norep,
                "concept_decoding": guide.settings() if guide is not None else None}
        gate, figures = {"available": False, "reason": NO_SAVED_MODEL}, None
    else:
        from altbeam.model import DEFAULT_MODEL_DIR
        from altbeam.model.data.datasets import load_dataset
        from altbeam.model.serving.saved_model import read_model_card, read_model_info
        model_dir = a.model or DEFAULT_MODEL_DIR
        if not a.dataset:
            ap.error("--dataset is required with --model")
        if a.split in ("val", "validation"):
            # The datasets' "val" is their dev split, not a run's carve-out of train.
            print(f"altbeam evaluate: --split {a.split} with --model scores the dataset's own "
                  "dev/validation split (for a run's validation images carved out of train, "
                  "use --run)", file=sys.stderr)
        if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
            raise SystemExit(f"altbeam evaluate: no SavedModel at {model_dir}")
        items = [i for i in load_dataset(a.dataset, a.split, missing_images="drop") if i.path]
        items = items[: a.limit] if a.limit else items
        ids = [i.image_id for i in items]
        refs = {i.image_id: list(i.captions) for i in items}
        card, info = read_model_card(model_dir), read_model_info(model_dir)
        print(f"captioning {len(items)} images of {a.split} with {model_dir}", file=sys.stderr)
        outputs = run_model(info, [i.path for i in items], a.batch_size)
        name = "model " + str(card.get("version", ""))
        systems[name] = outputs.captions
        gate, figures = gate_report(outputs, ids, refs, info.judged, info.thresholds)
    if a.features and not a.no_baselines and a.split != "val":
        systems.update(baseline_captions(a.features, a.split, ids))
    table = score_table(refs, systems, a.tokenizer)
    print(f"\n{a.split}: {len(ids)} images, tokenizer {a.tokenizer}")
    print(format_table(table | gate_rows(figures, name) if figures else table))
    print(format_gate(figures, gate["judged_concepts"]) if figures
          else f"caption gate: not available ({gate['reason']})")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"split": a.split, "images": len(ids), "tokenizer": a.tokenizer,
                       "scores": table, "model": card, "gate": gate,
                       "examples": {i: {n: s[k] for n, s in systems.items()}
                                    for k, i in enumerate(ids[:20])}}, f, indent=2)
    return 0


def evaluation_concept_head(run_dir: str, config):
    """The concept head `evaluate --run` scores the cached grids with: a concept-input
    run's own (its detectors), otherwise the committed detectors, as `altbeam export
    --concepts` would attach."""
    from altbeam.model.training.concept_inputs import run_concept_head
    if config.concept_inputs:
        return run_concept_head(run_dir, config.encoder)
    from altbeam.model.serving.caption_status import DETECTORS_NPZ
    return concept_head_for(config.encoder, "imagenet", str(DETECTORS_NPZ))


def gate_rows(figures, system: str) -> dict[str, dict[str, float]]:
    """The printed table's row of CHAIR among the system's ``ok`` captions only."""
    return {f"{system}, ok only ({figures.counts['ok']})": figures.ok_scores()}

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
