"""The decoder alone at the bundled model's sizes, with a narrower context or attention
(issue 21).

``ModelConfig.context_units`` = P projects the 1280-channel grid to P once per image, so
every step's LSTM kernel is (E + P + U) x 4U instead of (E + C + U) x 4U. Whether that is
worth training a new bundled decoder for is a question of speed first, so this times the
beam search alone (no encoder, no concept head) for decoders of the bundled model's
shape — its vocabulary size, embedding, LSTM and attention widths, its number of
ensemble members, int8 storage — with random weights: the time of a step does not
depend on what the weights learned. Random decoders rarely say <end>, so every caption
runs the full max_length steps; a trained model stops when all its beams have ended
(~12-15 steps on Flickr8k), so these are per-step ratios, not the end-to-end speed-up.
``--attention`` also varies the attention width A: the additive attention's tanh runs
over [rows, L, A] at every step, a cost the context width does not touch.
Every arm is timed in turn, ``--rounds`` times, alternating the order (background load
hits every arm alike); the table gives the median ms per image and the speed against the
model's own shape.

    .venv/bin/python bench/decoder_width.py --widths 512,256 --attention 512,128
"""
from __future__ import annotations

import argparse
import statistics
import sys

import _common as bc


def build_decoder(card: dict, config, members: int, context_units: int,
                  attention_units: int):
    """An ensemble of ``members`` (or a single decoder) shaped like the card's, with
    ``context_units`` and ``attention_units``."""
    from altbeam.model.nets.decoder import CaptionDecoder
    from altbeam.model.nets.ensemble import DecoderEnsemble

    config = config.replace(context_units=context_units, attention_units=attention_units)
    decoders = [CaptionDecoder(config.replace(seed=config.seed + i)) for i in range(members)]
    decoder = DecoderEnsemble(decoders) if members > 1 else decoders[0]
    return decoder.to_int8() if str(card.get("weights_dtype")).startswith("int8") else decoder


def searcher(decoder, card: dict, config):
    import tensorflow as tf

    from altbeam.model.serving.beam_search import beam_search

    cells, channels = config.grid_cells, config.feature_channels

    # A decoder that reads concept scores (`concept_inputs`) takes them [N, T] as well.
    @tf.function(input_signature=[tf.TensorSpec([None, cells, channels], tf.float32),
                                  tf.TensorSpec([None, None], tf.float32)])
    def search(features, concepts):
        return beam_search(decoder, features, int(card["beam_width"]), int(card["max_length"]),
                           card.get("length_alpha", 0.0), ban_unk=True,
                           block_repeated_trigrams=config.block_repeated_trigrams,
                           block_repeated_words=config.block_repeated_words,
                           concept_scores=concepts if config.concept_inputs else None)["tokens"]
    return search


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=bc.default_model_dir(), help="whose shape to copy")
    ap.add_argument("--widths", type=bc.int_list, default=[512, 256],
                    help="context widths P to compare with the full grid (always timed)")
    ap.add_argument("--attention", type=bc.int_list, help="attention widths A to try "
                    "with each P (default: the model's own)")
    ap.add_argument("--batches", type=bc.int_list, default=[1, 32])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    import numpy as np

    card = bc.read_card(args.model)
    config = bc.config_from_card(card)
    cells, channels = config.grid_cells, config.feature_channels
    members = len(card.get("members") or [None])
    own = (config.context_units, config.attention_units)   # P 0: the full grid
    widths = [own] + [(p, a) for a in (args.attention or [own[1]])
                      for p in [0, *args.widths] if (p, a) != own]
    arms = {w: build_decoder(card, config, members, *w) for w in widths}
    env, command = bc.environment(), bc.command_line(argv and [sys.argv[0], *argv])
    print(bc.header("decoder width (beam search alone, random weights, full max_length)",
                    env, command))
    print(f"shape of {args.model}: vocab {config.vocab_size}, E {config.embedding_dim}, "
          f"U {config.lstm_units}, A {config.attention_units}, C {channels}, L {cells}, "
          f"beam {card['beam_width']}, max_length {card['max_length']}, "
          f"{members} member(s), "
          f"{str(card.get('weights_dtype')).split()[0]} decoder weights\n")
    rows, cells_out = [], []
    rng = np.random.default_rng(0)
    search = {w: searcher(d, card, config) for w, d in arms.items()}
    for batch in args.batches:
        feats = rng.normal(0, 1, (batch, cells, channels)).astype(np.float32)
        concepts = rng.uniform(0, 1, (batch, config.concept_count or 1)).astype(np.float32)
        calls = max(1, -(-args.images // batch))
        for fn in search.values():
            fn(feats, concepts)                        # warm up (traced once per arm)
        passes = [(w, lambda fn=search[w], x=feats, c=concepts, n=calls:
                   [fn(x, c).numpy() for _ in range(n)]) for w in widths]
        times = {w: [s * 1e3 / (calls * batch) for s in rounds_s]
                 for w, rounds_s in bc.interleaved_rounds(passes, args.rounds).items()}
        base = statistics.median(times[widths[0]])
        for (p, a) in widths:
            ms = statistics.median(times[(p, a)])
            lstm_in = config.embedding_dim + (p or channels) + config.lstm_units
            rows.append([batch, p or f"{channels} (full)", a, f"{lstm_in}x{4 * config.lstm_units}",
                         round(ms, 2), f"{bc.ratio(base / ms)}x"])
            cells_out.append({"batch": batch, "context_units": p, "attention_units": a,
                              "lstm_inputs": lstm_in, "ms_per_image": ms,
                              "speed_vs_model": base / ms})
    print(bc.table(["batch", "context P", "attention A", "LSTM kernel", "ms/image",
                    "speed vs model's"], rows))
    bc.write_json(args.json, {"environment": env, "command": command, "model": args.model,
                              "cells": cells_out})
    return 0


if __name__ == "__main__":
    sys.exit(main())
