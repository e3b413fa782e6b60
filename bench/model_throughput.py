"""Exported-model throughput on this machine: batch x beam width, encoder vs decoder share.

For every (batch, beam) cell, the SavedModel's ``serving_default`` is called on
pre-decoded uint8 batches (one warm-up call, then ceil(N / batch) timed calls). The
encoder alone (the same Keras encoder the export embeds, run as a ``tf.function`` on the
same float32 batch) is timed at each batch size; its share of a cell's time is the
encoder share, the rest is decoder + beam search + word lookup.

Check: beam 3 costs at most 2x greedy (beam 1) at the same batch -- PASS/FAIL per batch.

    .venv/bin/python bench/model_throughput.py --run RUN_DIR --images 64
    .venv/bin/python bench/model_throughput.py --model DIR --images 64   # batch only
    .venv/bin/python bench/model_throughput.py --tiny --images 8        # smoke run
    .venv/bin/python bench/model_throughput.py --compare A B --images 32 --batches 1,32

``--compare MODEL_A MODEL_B [...]``: the models side by side (issue 21: a re-export with
another decoding lever against the one it came from). At each batch size the encoder and
every model are timed in turn, ``--rounds`` times, alternating the order, so background
load hits every arm alike; the table gives each model's ms/image (median of the rounds),
its decoder + search share, its speed against the first model, and the first call's
seconds at that batch size (warm-up: graph set-up, and XLA's compile with --jit-compile).
It also checks the models caption the photos alike: differing best captions are counted,
and the largest score difference printed.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as bc  # noqa: E402

BEAM_COST_LIMIT = 2.0   # beam 3 may cost at most this many times greedy


def batches_of(arrays, batch: int, calls: int):
    """`calls` uint8 batches of `batch` images, cycling through the decoded photos."""
    import numpy as np

    stack = np.stack(arrays)
    out = []
    for i in range(calls):
        idx = [(i * batch + j) % len(stack) for j in range(batch)]
        out.append(stack[idx])
    return out


def time_calls(fn, batches) -> float:
    """Seconds for fn over all batches, after one untimed warm-up call."""
    fn(batches[0])
    with bc.Stopwatch() as t:
        for b in batches:
            fn(b)
    return t.seconds


def compare_cells(models: dict, encode, arrays, batches, images: int, rounds: int):
    """Per batch: encoder and each model timed in turn, ``rounds`` times, the order
    reversed every other round -> (cells, first-call seconds {(batch, model): s})."""
    import statistics

    cells, first_call = [], {}
    for batch in batches:
        calls = math.ceil(images / batch)
        data, n = batches_of(arrays, batch, calls), calls * batch
        arms = [("encoder", encode)] + [(name, m.caption) for name, m in models.items()]
        for name, fn in arms:  # the first call: graph set-up (and XLA's compile)
            with bc.Stopwatch() as t:
                fn(data[0])
            first_call[(batch, name)] = t.seconds
        passes = [(name, lambda fn=fn, data=data: [fn(b) for b in data]) for name, fn in arms]
        timed = {name: [s / n for s in rounds_s]
                 for name, rounds_s in bc.interleaved_rounds(passes, rounds).items()}
        per_image = {name: statistics.median(v) for name, v in timed.items()}
        for name in models:
            share = min(per_image["encoder"] / per_image[name], 1.0)
            cells.append({"batch": batch, "model": name, "images": n, "rounds": rounds,
                          "ms_per_image": per_image[name] * 1e3,
                          "ms_per_image_rounds": [s * 1e3 for s in timed[name]],
                          "images_per_s": 1 / per_image[name],
                          "encoder_ms_per_image": per_image["encoder"] * 1e3,
                          "decoder_share": 1 - share,
                          "first_call_s": first_call[(batch, name)]})
    return cells


def caption_differences(models: dict, arrays) -> list[dict]:
    """Each model's best captions and scores on the photos against the first model's."""
    import numpy as np

    stack = np.stack(arrays)
    outs = {name: m.caption(stack) for name, m in models.items()}
    (ref_name, (ref_caps, ref_scores)), *rest = outs.items()
    # Models of other beam widths are compared on the beams both have.
    common = lambda a, b: (a[:, :b.shape[1]], b[:, :a.shape[1]])  # noqa: E731
    return [{"model": name, "reference": ref_name, "images": len(stack),
             "best_caption_differs": int((caps[:, 0] != ref_caps[:, 0]).sum()),
             "any_beam_differs": int(np.not_equal(*common(caps, ref_caps)).any(axis=1).sum()),
             "max_score_difference": float(np.abs(np.subtract(*common(scores, ref_scores))).max())}
            for name, (caps, scores) in rest]


def compare(args, env, command) -> int:
    """--compare: the models side by side (module docstring)."""
    import tensorflow as tf

    from altbeam.model.serving.saved_model import LoadedModel

    names = {f"{chr(65 + i)}": path for i, path in enumerate(args.compare)}
    config = bc.config_from_card(bc.read_card(args.compare[0]))
    work = pathlib.Path(tempfile.mkdtemp(prefix="altbeam-bench-compare-"))
    try:
        photos = bc.decode_files(bc.sample_photos(), config.image_size)
        arrays = bc.decode_files(bc.make_images(work / "images", min(args.images, 64)),
                                 config.image_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    encoder = bc.encoder_for(config, weights=None)
    encode = tf.function(lambda x: encoder(tf.cast(x, tf.float32), training=False))
    models = {name: LoadedModel(path, config.image_size) for name, path in names.items()}
    cells = compare_cells(models, lambda b: encode(tf.constant(b)).numpy(), arrays,
                          args.batches, args.images, args.rounds)
    differences = caption_differences(models, photos)
    reference = {c["batch"]: c["ms_per_image"] for c in cells if c["model"] == "A"}
    rows = [[c["batch"], c["model"], c["images"], c["images_per_s"], c["ms_per_image"],
             c["encoder_ms_per_image"], f"{100 * c['decoder_share']:.0f}%",
             f"{reference[c['batch']] / c['ms_per_image']:.2f}x", c["first_call_s"]]
            for c in cells]
    lines = [bc.header("exported models side by side (pre-decoded uint8 batches)", env,
                       command)]
    lines += [f"model {n}:  {p}  (jit_compile: {bc.read_card(p).get('jit_compile', False)})"
              for n, p in names.items()]
    lines += ["", bc.table(["batch", "model", "images", "images/s", "ms/image",
                            "encoder ms/image", "decoder+search", "speed vs A",
                            "first call s"], rows, "rlrrrrrrr"), ""]
    lines += [f"captions, {d['model']} vs {d['reference']} on the {d['images']} sample "
              f"photos: best caption differs on {d['best_caption_differs']}, any beam on "
              f"{d['any_beam_differs']}; largest score difference "
              f"{d['max_score_difference']:.1e}" for d in differences]
    lines.append(f"note:     ms/image is the median of {args.rounds} rounds, the arms "
                 "interleaved; encoder = the model's Keras encoder alone")
    print("\n".join(lines))
    bc.write_json(args.json, {"benchmark": "model_throughput --compare", "environment": env,
                              "command": command, "models": names, "cells": cells,
                              "captions": differences})
    return 0


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--run", help="training run folder: export one model per beam width")
    src.add_argument("--tiny", action="store_true", help="tiny random model (smoke runs)")
    ap.add_argument("--model", default=None,
                    help="exported SavedModel (default: the bundled model); batch varies "
                         "only, at the model's own beam width")
    ap.add_argument("--images", type=int, default=64,
                    help="images per cell (rounded up to whole batches)")
    ap.add_argument("--batches", type=bc.int_list, default=[1, 8, 32, 64], help="e.g. 1,8,32,64")
    ap.add_argument("--beams", type=bc.int_list, default=[1, 3, 5], help="e.g. 1,3,5")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--compare", nargs="+", metavar="MODEL",
                    help="time these exported models side by side (first = reference)")
    ap.add_argument("--rounds", type=int, default=3, help="--compare: timed rounds per cell")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.images < 1:
        raise SystemExit("--images must be at least 1")
    env = bc.environment()
    command = bc.command_line(None if argv is None else [sys.argv[0], *argv])
    if args.compare:
        return compare(args, env, command)
    work = pathlib.Path(tempfile.mkdtemp(prefix="altbeam-bench-model-"))
    notes = []
    try:
        import tensorflow as tf

        from altbeam.model.serving.saved_model import LoadedModel

        run_dir = bc.make_tiny_run(str(work / "tiny-run")) if args.tiny else args.run
        if run_dir:
            from altbeam.model.training.common import load_decoder

            config = load_decoder(run_dir)[2]
            models = bc.export_widths(run_dir, args.beams, str(work / "models"))
            source = "tiny random model" if args.tiny else f"run {run_dir}"
        else:
            model_dir = args.model or bc.default_model_dir()
            config = bc.config_from_card(bc.read_card(model_dir))
            models = {config.beam_width: model_dir}
            notes.append(f"beam fixed at the model's {config.beam_width}: pass --run RUN_DIR "
                         "to export and compare beam widths")
            source = f"model {model_dir}"
        size = config.image_size
        arrays = bc.decode_files(bc.make_images(work / "images", min(args.images, 64)), size)

        # The encoder the export embeds; weights do not change its cost, so none are loaded.
        encoder = bc.encoder_for(config, weights=None)
        encode = tf.function(lambda x: encoder(tf.cast(x, tf.float32), training=False))
        loaded = {k: LoadedModel(path, size) for k, path in models.items()}
        cells, encoder_s = [], {}
        for batch in args.batches:
            calls = math.ceil(args.images / batch)
            data = batches_of(arrays, batch, calls)
            n = calls * batch
            encoder_s[batch] = time_calls(lambda b: encode(tf.constant(b)).numpy(), data) / n
            for k in sorted(loaded):
                seconds = time_calls(loaded[k].caption, data)
                per_image = seconds / n
                share = min(encoder_s[batch] / per_image, 1.0)
                cells.append({"batch": batch, "beam": k, "images": n, "seconds": seconds,
                              "images_per_s": n / seconds, "ms_per_image": per_image * 1e3,
                              "encoder_ms_per_image": encoder_s[batch] * 1e3,
                              "encoder_share": share, "decoder_share": 1 - share})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = [[c["batch"], c["beam"], c["images"], c["images_per_s"], c["ms_per_image"],
             c["encoder_ms_per_image"], f"{100 * c['encoder_share']:.0f}%",
             f"{100 * c['decoder_share']:.0f}%"] for c in cells]
    checks = []
    by = {(c["batch"], c["beam"]): c for c in cells}
    for batch in args.batches:
        if (batch, 1) in by and (batch, 3) in by:
            cost = by[(batch, 3)]["ms_per_image"] / by[(batch, 1)]["ms_per_image"]
            checks.append({"batch": batch, "beam3_over_greedy": cost,
                           "pass": cost <= BEAM_COST_LIMIT})
    if not checks:
        notes.append("beam 3 vs greedy check skipped: needs beams 1 and 3 (--run or --tiny)")
    lines = [
        bc.header("exported model throughput (pre-decoded uint8 batches)", env, command),
        f"model:    {source}; {size}x{size} px, encoder {config.encoder}, "
        f"decoder {config.decoder}, max {config.max_length} words",
        "",
        bc.table(["batch", "beam", "images", "images/s", "ms/image", "encoder ms/image",
                  "encoder", "decoder+search"], rows, "rrrrrrrr"),
        "",
    ]
    lines += [f"beam 3 vs greedy at batch {c['batch']:>3}: {c['beam3_over_greedy']:.2f}x the "
              f"time per image (limit {BEAM_COST_LIMIT:.0f}x)  {'PASS' if c['pass'] else 'FAIL'}"
              for c in checks]
    lines += [f"note:     {n}" for n in notes]
    print("\n".join(lines))
    bc.write_json(args.json, {
        "benchmark": "model_throughput", "environment": env, "command": command,
        "source": source, "image_size": size, "cells": cells, "checks": checks,
        "notes": notes})
    return 0


if __name__ == "__main__":
    sys.exit(main())
