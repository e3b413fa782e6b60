"""Score the concepts-only retrieval baseline of issue 17 beside the bundled model.

For each photo of the shared COCO set (259, out of domain) and Flickr8k dev (1,000), the
bundled SavedModel runs once from pixels (prepared as the caption pipeline prepares
them); its `concepts` / `concept_scores` outputs pick the best-matching caption from a
text-only corpus (model/evaluation/baselines.py, `ConceptCaptionIndex`), and its own
best caption is scored beside it. Metrics as `altbeam evaluate` prints them: BLEU-4,
METEOR, ROUGE-L, CIDEr-D (model/evaluation/metrics.py, PTB tokenizer) and CHAIR-s,
CHAIR-i, coverage (model/evaluation/chair.py).

The corpus (issue 17's data rules): COCO val2017 captions minus every caption of the
259 shared COCO photos (by COCO image id), Flickr30k captions minus the Flickr8k dev
photos among them (by Flickr photo id), and Flickr8k train captions. The scored photos'
ids are excluded from the index as well, so no photo is ever given its own caption.

    python tools/measure_retrieval_baseline.py --cache work/retrieval_cache \\
        --out work/retrieval_baseline.json

The model's outputs are cached per set under --cache; later runs only retrieve and score.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

from altbeam.model import DEFAULT_MODEL_DIR
from altbeam.model.data.datasets import load_dataset
from altbeam.model.evaluation.baselines import (
    ConceptCaptionIndex,
    RetrievalWeights,
    concept_retrieval_captions,
)
from altbeam.model.evaluation.chair import chair
from altbeam.model.evaluation.metrics import find_java, score_captions
from altbeam.model.serving.caption_status import covered_by_card
from altbeam.model.serving.saved_model import read_model_card
from altbeam.model.training.lm_pretrain import image_keys

SHARED = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"
COLUMNS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "CHAIR-s", "CHAIR-i", "coverage")


def coco_key(image_id: str) -> str:
    return f"coco:{int(image_id)}"


def flickr_key(name: str) -> str:
    """One key per Flickr photo: its photo id, whichever file name it goes by
    (lm_pretrain.image_keys: "1000268201_693b08cb0e.jpg" and "1000268201.jpg" are one)."""
    keys = image_keys(name)
    return "flickr:" + min((k for k in keys if k.isdigit()), default=min(keys))


def photo_sets(shared: pathlib.Path) -> dict[str, tuple[list, list[str]]]:
    """name -> (CaptionedImage list, corpus keys of those photos)."""
    coco = load_dataset(shared / "coco" / "captions.jsonl")
    dev = load_dataset(shared / "flickr8k", "dev")
    return {"coco": (coco, [coco_key(i.image_id) for i in coco]),
            "dev": (dev, [flickr_key(i.image_id) for i in dev])}


def text_corpus(shared: pathlib.Path, exclude: set[str]) -> list[tuple[str, str]]:
    """(photo key, caption) of the text-only corpus, minus the photos in ``exclude``;
    prints what each source gave and dropped."""
    sources = [("COCO val2017", shared / "coco" / "captions_val2017.json", "all", coco_key),
               ("Flickr30k test", shared / "flickr30k" / "test.json", "all", flickr_key),
               ("Flickr30k validation", shared / "flickr30k" / "validation.json", "all",
                flickr_key),
               ("Flickr8k train", shared / "flickr8k", "train", flickr_key)]
    corpus = []
    for name, path, split, key in sources:
        items = load_dataset(path, None if split == "all" else split, missing_images="ignore")
        kept = [i for i in items if key(i.image_id) not in exclude]
        corpus += [(key(i.image_id), c) for i in kept for c in i.captions]
        print(f"  {name}: {len(kept)} photos, {sum(len(i.captions) for i in kept)} captions "
              f"({len(items) - len(kept)} photos excluded)", file=sys.stderr)
    return corpus


def model_outputs(items, model_dir: str, cache: pathlib.Path | None,
                  batch_size: int = 32) -> dict[str, np.ndarray]:
    """The bundled model's best captions, concepts and concept scores (cached)."""
    if cache and cache.exists():
        with np.load(cache, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    from altbeam.model.data.pixels import load_pixels
    from altbeam.model.serving.saved_model import LoadedModel, read_model_info
    model = LoadedModel(model_dir, read_model_info(model_dir).image_size)
    if not model.has_concepts:
        raise SystemExit(f"{model_dir}: the model has no concept head")
    out: dict[str, list] = {"captions": [], "concepts": [], "concept_scores": []}
    start = time.time()
    for s in range(0, len(items), batch_size):
        pixels = np.stack([load_pixels(i.path, model.image_size) for i in items[s:s + batch_size]])
        result = model.predict(pixels)
        out["captions"].append(np.char.decode(result.captions[:, 0].astype(bytes), "utf-8"))
        out["concepts"].append(np.char.decode(result.concepts.astype(bytes), "utf-8"))
        out["concept_scores"].append(result.concept_scores)
        done = s + len(pixels)
        print(f"\r  {done}/{len(items)} ({done / (time.time() - start):.1f} images/s)",
              end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **arrays)
    return arrays


def score(items, systems: dict[str, list[str]], tokenizer: str) -> dict[str, dict[str, float]]:
    """`altbeam evaluate`'s metrics of each system's captions (one per item)."""
    references = {i.image_id: list(i.captions) for i in items}
    ids = [i.image_id for i in items]
    scorers = ("bleu", "meteor", "rouge", "cider") if find_java() else ("bleu", "rouge", "cider")
    return {name: score_captions(references, dict(zip(ids, caps)), scorers, tokenizer)
            | chair(caps, [references[i] for i in ids]).as_dict()
            for name, caps in systems.items()}


def markdown_table(tables: dict[str, dict[str, dict[str, float]]], sizes: dict[str, int]) -> str:
    lines = ["| set | system | " + " | ".join(COLUMNS) + " |",
             "|---|---|" + "---:|" * len(COLUMNS)]
    for set_name, table in tables.items():
        for system, row in table.items():
            cells = [f"{row[c]:.3f}" if c in row else "–" for c in COLUMNS]
            lines.append(f"| {set_name} ({sizes[set_name]}) | {system} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL_DIR)
    ap.add_argument("--shared", type=pathlib.Path, default=SHARED)
    ap.add_argument("--cache", type=pathlib.Path, help="folder for the model's outputs per set")
    ap.add_argument("--present-above", type=float, default=RetrievalWeights.present_above)
    ap.add_argument("--unjudged-penalty", type=float, default=RetrievalWeights.unjudged_penalty)
    ap.add_argument("--tokenizer", choices=("ptb", "simple"), default="ptb")
    ap.add_argument("--out", help="write the scores and example captions as JSON here")
    a = ap.parse_args(argv)

    sets = photo_sets(a.shared)
    reported = {key for _, keys in sets.values() for key in keys}
    print("text corpus:", file=sys.stderr)
    corpus = text_corpus(a.shared, reported)
    card = read_model_card(a.model)
    index = ConceptCaptionIndex(corpus, exclude=reported,
                                covered=covered_by_card(card.get("concept_head")))
    print(f"  {len(index)} captions in {len(index.keys)} concept groups", file=sys.stderr)
    weights = RetrievalWeights(a.present_above, a.unjudged_penalty)

    tables, sizes, examples = {}, {}, {}
    for name, (items, _) in sets.items():
        print(f"{name}: {len(items)} photos", file=sys.stderr)
        cache = a.cache / f"{name}.npz" if a.cache else None
        out = model_outputs(items, a.model, cache)
        systems = {"bundled model": [str(c) for c in out["captions"]],
                   "concepts-only retrieval": concept_retrieval_captions(
                       index, out["concepts"], out["concept_scores"], weights)}
        tables[name], sizes[name] = score(items, systems, a.tokenizer), len(items)
        examples[name] = {i.image_id: {"concepts": [f"{c} {s:.2f}" for c, s in zip(
            out["concepts"][k][:5], out["concept_scores"][k][:5])]} | {
            n: caps[k] for n, caps in systems.items()} for k, i in enumerate(items[:20])}
    print(markdown_table(tables, sizes))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"weights": vars(weights), "corpus_captions": len(index),
                       "tokenizer": a.tokenizer, "scores": tables, "examples": examples},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
