"""`altbeam export`: a training run folder -> one serving SavedModel + model_card.json.

The SavedModel holds the encoder (with its ImageNet weights), the trained decoder,
the vocabulary and the beam search, so serving needs TensorFlow only.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys

from model.serving import Captioner
from model.train import load_decoder


def build_encoder_for(config, weights: str | None = "imagenet"):
    if config.encoder == "tiny":
        from model.tiny import TinyEncoder
        return TinyEncoder(config.feature_channels, config.seed)
    from model.encoder import build_encoder
    return build_encoder(config.encoder, weights=weights)


def export(run_dir: str, out: str, beam_width: int | None = None,
           length_alpha: float | None = None, max_length: int | None = None,
           float16: bool = True, encoder_weights: str | None = "imagenet",
           card: dict | None = None, overwrite: bool = False) -> str:
    decoder, vocab, config = load_decoder(run_dir)
    changes = {k: v for k, v in (("beam_width", beam_width), ("length_alpha", length_alpha),
                                 ("max_length", max_length)) if v is not None}
    config = config.replace(**changes)
    decoder.config = config
    if float16:
        decoder.to_float16()
    if os.path.exists(out):
        if not overwrite:
            raise SystemExit(f"altbeam export: {out} exists (use --overwrite)")
        shutil.rmtree(out)
    history_path = os.path.join(run_dir, "history.json")
    history = json.load(open(history_path)) if os.path.exists(history_path) else []
    info = {
        "version": dt.datetime.now(dt.UTC).strftime("%Y.%m.%d-") + config.encoder + "-" + config.decoder,
        "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "weights_dtype": "float16 (decoder), float32 (encoder)" if float16 else "float32",
        "training": {"history": history, "run_dir": os.path.basename(os.path.abspath(run_dir))},
    }
    info.update(card or {})
    model = Captioner(build_encoder_for(config, encoder_weights), decoder, vocab.words, config)
    model.save(out, info)
    return out


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="altbeam export", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", help="training run folder (from `altbeam train`)")
    ap.add_argument("--out", required=True, help="SavedModel folder to write")
    ap.add_argument("--beam-width", type=int, help="beams K returned (default: training config)")
    ap.add_argument("--length-alpha", type=float, help="length normalisation exponent")
    ap.add_argument("--max-length", type=int, help="words generated at most")
    ap.add_argument("--float32", action="store_true", help="keep decoder weights in float32")
    ap.add_argument("--encoder-weights", default="imagenet", help="'imagenet' or a .pth path")
    ap.add_argument("--card", help="JSON file merged into model_card.json (e.g. scores)")
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    card = json.load(open(a.card)) if a.card else None
    path = export(a.run_dir, a.out, a.beam_width, a.length_alpha, a.max_length, not a.float32,
                  a.encoder_weights, card, a.overwrite)
    print(f"exported {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
