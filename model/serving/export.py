"""`altbeam export`: a training run folder -> one serving SavedModel + model_card.json.

The SavedModel holds the encoder (with its ImageNet weights), the trained decoder,
the vocabulary and the beam search, so serving needs TensorFlow only. Several run
folders that share a vocabulary export as one ensemble (model/nets/ensemble.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys

from altbeam.model.nets.ensemble import load_runs
from altbeam.model.serving.captioner import Captioner

# How each --weights choice stores the decoder; the encoder always stays float32.
WEIGHT_FORMATS = {
    "float32": "float32",
    "float16": "float16 (decoder), float32 (encoder)",
    "int8": "int8 with a float32 scale per output column (decoder matrices), float16 "
            "(decoder biases), float32 (encoder)",
}


def build_encoder_for(config, weights: str | None = "imagenet"):
    """The encoder a run was trained on (built in or registered; seeded like the run)."""
    from altbeam.model.nets.encoder import build_encoder
    return build_encoder(config.encoder, weights=weights, seed=config.seed)


def export(run_dir: str | list[str], out: str, beam_width: int | None = None,
           length_alpha: float | None = None, max_length: int | None = None,
           weights: str = "float16", encoder_weights: str | None = "imagenet",
           card: dict | None = None, overwrite: bool = False,
           block_repeated_trigrams: bool | None = None) -> str:
    if weights not in WEIGHT_FORMATS:  # before loading any run
        raise ValueError(f"weights={weights!r}: use one of {', '.join(WEIGHT_FORMATS)}")
    run_dirs = [run_dir] if isinstance(run_dir, str) else list(run_dir)
    decoder, vocab, config = load_runs(run_dirs)
    changes = {k: v for k, v in (("beam_width", beam_width), ("length_alpha", length_alpha),
                                 ("max_length", max_length),
                                 ("block_repeated_trigrams", block_repeated_trigrams))
               if v is not None}
    config = config.replace(**changes)
    decoder.config = config
    if weights == "float16":
        decoder.to_float16()
    elif weights == "int8":
        decoder.to_int8()
    if os.path.exists(out):
        if not overwrite:
            raise SystemExit(f"altbeam export: {out} exists (use --overwrite)")
        shutil.rmtree(out)
    histories, pretraining = {}, {}
    for d in run_dirs:
        path = os.path.join(d, "history.json")
        key = os.path.basename(os.path.abspath(d))
        key = os.path.abspath(d) if key in histories else key
        histories[key] = json.load(open(path)) if os.path.exists(path) else []
        lm_path = os.path.join(d, "lm_pretrain.json")  # altbeam train --lm-text
        if os.path.exists(lm_path):
            pretraining[key] = json.load(open(lm_path))
    if len(run_dirs) > 1:
        training = {"ensemble": len(run_dirs), "runs": histories}
    else:
        (name, history), = histories.items()
        training = {"history": history, "run_dir": name}
    if pretraining:
        training["lm_pretrain"] = pretraining
    variant = config.decoder + (f"-x{len(run_dirs)}" if len(run_dirs) > 1 else "")
    info = {
        "ensemble": len(run_dirs),
        "version": dt.datetime.now(dt.UTC).strftime("%Y.%m.%d-") + config.encoder + "-" + variant,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "weights_dtype": WEIGHT_FORMATS[weights],
        "training": training,
    }
    info.update(card or {})
    model = Captioner(build_encoder_for(config, encoder_weights), decoder, vocab.words, config)
    model.save(out, info)
    return out


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="altbeam export", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="+", help="training run folder (from `altbeam train`); "
                    "several that share a vocabulary export as one ensemble")
    ap.add_argument("--out", required=True, help="SavedModel folder to write")
    ap.add_argument("--beam-width", type=int, help="beams K returned (default: training config)")
    ap.add_argument("--length-alpha", type=float, help="length normalisation exponent")
    ap.add_argument("--max-length", type=int, help="words generated at most")
    ap.add_argument("--block-trigrams", action=argparse.BooleanOptionalAction, default=None,
                    help="never repeat a word trigram within a caption (default: run config)")
    ap.add_argument("--weights", choices=list(WEIGHT_FORMATS), default="float16",
                    help="how the decoder weights are stored: float16 (half of float32's "
                    "size), int8 (a quarter; per-column scales) or float32")
    ap.add_argument("--encoder-weights", default="imagenet", help="'imagenet' or a .pth path")
    ap.add_argument("--card", help="JSON file merged into model_card.json (e.g. scores)")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    card = json.load(open(a.card)) if a.card else None
    path = export(a.run_dir, a.out, a.beam_width, a.length_alpha, a.max_length, a.weights,
                  a.encoder_weights, card, a.overwrite, a.block_trigrams)
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
