"""altbeam vs the tutorial-style captioning loop: same images, same trained weights.

(a) tutorial loop, per image: ``keras.utils.load_img`` + ``img_to_array`` (resized to S),
    encoder ``.predict()``, one ``.predict()`` of a Keras model that sets up the decoder
    state, then one ``.predict()`` of a one-step decoder Keras model per generated word,
    batch 1, greedy -- the shape of the common TensorFlow/Keras captioning tutorials;
(b) altbeam's exported SavedModel on batches (default 32), greedy (beam 1) and beam 3,
    images decoded by altbeam's own decoder (``altbeam.pipelines.caption.decode``);
(c) the full ``altbeam caption`` pipeline (DirectRunner, fresh interpreter, wall clock
    from launch to exit), plus its steady-state rate: (N - B) / (wall(N) - wall(B)) from a
    second run over one batch of B images (start-up and model load cancel out).

Target: c >= 20x a.

    .venv/bin/python bench/vs_tutorial_loop.py --run RUN_DIR --images 64
    .venv/bin/python bench/vs_tutorial_loop.py --model DIR --images 64   # one beam width
    .venv/bin/python bench/vs_tutorial_loop.py --tiny --images 8          # smoke run

Unknown flags go to the pipeline (and so to Beam), e.g.
``--direct_running_mode multi_processing --direct_num_workers 2``.
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as bc  # noqa: E402

TUTORIAL_WIDTHS = (1, 3)


# -- (a) the tutorial loop ---------------------------------------------------------------
def tutorial_models(decoder, encoder, concept_scores=None):
    """Keras models the tutorial loop calls .predict() on: encoder, decoder set-up, one
    decoder step (word id, h, c, features, projected features -> logits, h, c).
    ``concept_scores`` (grid -> [1, T]): the model's concept head, which a decoder that
    reads concepts needs at set-up (`concept_scorer`)."""
    import keras
    import tensorflow as tf

    class KerasEncoder(keras.Model):
        """Wraps a non-Keras encoder (the tiny test model) so it has .predict()."""

        def __init__(self, module):
            super().__init__(name="encoder")
            self.module = module

        def call(self, pixels):
            return self.module(pixels, training=False)

    class DecoderStart(keras.Model):
        """grid [1, g, g, C] -> features [1, L, C], projected [1, L, A], h, c."""

        def __init__(self, dec, scores):
            super().__init__(name="decoder_start")
            self.dec, self.scores = dec, scores

        def call(self, grid):
            shape = tf.shape(grid)
            flat = tf.reshape(grid, [shape[0], shape[1] * shape[2], shape[3]])
            concepts = self.scores(grid) if self.scores is not None else None
            features, projected = self.dec.prepare(flat, concepts=concepts)
            h, c = self.dec.init_state(features)
            return features, projected, h, c

    class DecoderStep(keras.Model):
        """One word: the trained CaptionDecoder.step weights behind a Keras model."""

        def __init__(self, dec):
            super().__init__(name="decoder_step")
            self.dec = dec

        def call(self, inputs):
            words, h, c, features, projected = inputs
            words = tf.reshape(tf.cast(words, tf.int32), [-1])
            logits, h, c, _ = self.dec.step(words, h, c, features, projected)
            return logits, h, c

    if not isinstance(encoder, keras.Model):
        encoder = KerasEncoder(encoder)
    return encoder, DecoderStart(decoder, concept_scores), DecoderStep(decoder)


def tutorial_caption(path, size: int, models, words: list[str], max_length: int) -> str:
    import keras
    import numpy as np

    from altbeam.model.data.vocab import END_ID, START_ID

    encoder, start, step = models
    image = keras.utils.load_img(str(path), target_size=(size, size))
    pixels = keras.utils.img_to_array(image)[None]
    grid = encoder.predict(pixels, verbose=0)
    features, projected, h, c = start.predict(grid, verbose=0)
    word, out = np.array([START_ID], np.int32), []
    for _ in range(max_length):
        logits, h, c = step.predict([word, h, c, features, projected], verbose=0)
        best = int(np.argmax(logits[0]))
        if best == END_ID:
            break
        out.append(words[best])
        word = np.array([best], np.int32)
    return " ".join(out)


def decoder_from_savedmodel(model_dir: str, config):
    """Rebuild the CaptionDecoder (float32) and the word list from an exported model.
    For an ensemble, its first member: the tutorial loop runs one decoder."""
    import tensorflow as tf

    from altbeam.model.nets.decoder import CaptionDecoder

    loaded = tf.saved_model.load(model_dir)
    source = loaded.decoder.members[0] if hasattr(loaded.decoder, "members") else loaded.decoder
    decoder = CaptionDecoder(config)
    for name, variable in vars(decoder).items():
        if isinstance(variable, tf.Variable):
            stored = getattr(source, name)
            if hasattr(stored, "q"):  # an int8 export: matrix = q * per-column scale
                stored = tf.cast(stored.q, tf.float32) * stored.scale
            variable.assign(tf.cast(stored, tf.float32))
    words = [w.decode("utf-8") for w in loaded.words.numpy()]
    return decoder, words


def concept_scorer(config, run_dir: str | None = None, detectors: str | None = None):
    """grid -> every concept's score, for a decoder that reads them (else None): the run's
    head, or for an exported model the head its export attached — the installed ImageNet
    layer plus ``detectors`` (default: the committed ones, which the bundled model has)."""
    if not config.concept_inputs:
        return None
    if run_dir:
        from altbeam.model.training.concept_inputs import run_concept_head
        return run_concept_head(run_dir, config.encoder).scores
    from altbeam.model.serving.caption_status import DETECTORS_NPZ
    from altbeam.model.serving.export import concept_head_for
    return concept_head_for(config.encoder, "imagenet", detectors or str(DETECTORS_NPZ)).scores


# -- (b) the exported model in batches ----------------------------------------------------
def savedmodel_rate(model_dir: str, files, size: int, batch: int) -> dict:
    import numpy as np

    from altbeam.model.serving.saved_model import LoadedModel

    model = LoadedModel(model_dir, size)
    model.caption(np.stack(bc.decode_files(files[:min(batch, len(files))], size)))  # warm-up
    with bc.Stopwatch() as total:
        with bc.Stopwatch() as dec:
            arrays = bc.decode_files(files, size)
        captions = []
        with bc.Stopwatch() as infer:
            for i in range(0, len(arrays), batch):
                caps, _ = model.caption(np.stack(arrays[i:i + batch]))
                captions += [c[0].decode("utf-8") for c in caps]
    n = len(files)
    return {"images_per_s": n / total.seconds, "model_only_images_per_s": n / infer.seconds,
            "decode_seconds": dec.seconds, "seconds": total.seconds, "captions": captions}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--run", help="training run folder: export beam 1 and 3 from it")
    src.add_argument("--tiny", action="store_true", help="tiny random model (smoke runs)")
    ap.add_argument("--model", default=None,
                    help="exported SavedModel (default: the bundled model); used when "
                         "neither --run nor --tiny is given")
    ap.add_argument("--detectors", help="with --model, a decoder that reads concepts: the "
                    "detectors its export attached (default: model/data/concept_detectors.npz)")
    ap.add_argument("--images", type=int, default=64, help="images (bundled photos, cycled)")
    ap.add_argument("--batch-size", type=int, default=32, help="batch for (b) and (c)")
    ap.add_argument("--pipeline-images", type=int, default=None,
                    help="images for the pipeline run (c), default 8x --images: a pipeline "
                         "run of a few batches is all start-up, so its steady rate is noise")
    ap.add_argument("--no-steady", action="store_true",
                    help="skip the one-batch pipeline run (no steady-state figure)")
    ap.add_argument("--json", help="write the raw figures here")
    return ap.parse_known_args(argv)


def main(argv=None) -> int:
    args, beam_flags = parse_args(sys.argv[1:] if argv is None else argv)
    if args.images < 1 or args.batch_size < 1:
        raise SystemExit("--images and --batch-size must be at least 1")
    env = bc.environment()
    command = bc.command_line(None if argv is None else [sys.argv[0], *argv])
    work = pathlib.Path(tempfile.mkdtemp(prefix="altbeam-bench-tutorial-"))
    notes = []
    try:
        from altbeam.model.training.common import load_decoder

        run_dir = bc.make_tiny_run(str(work / "tiny-run")) if args.tiny else args.run
        if run_dir:
            decoder, vocab, config = load_decoder(run_dir)
            words = vocab.words
            scores = concept_scorer(config, run_dir=run_dir)
            models = bc.export_widths(run_dir, TUTORIAL_WIDTHS, str(work / "models"))
            source = "tiny random model" if args.tiny else f"run {run_dir}"
        else:
            model_dir = args.model or bc.default_model_dir()
            card = bc.read_card(model_dir)
            config = bc.config_from_card(card)
            decoder, words = decoder_from_savedmodel(model_dir, config)
            scores = concept_scorer(config, detectors=args.detectors)
            models = {int(card["beam_width"]): model_dir}
            skipped = [k for k in TUTORIAL_WIDTHS if k not in models]
            if skipped:
                notes.append(f"beam {', '.join(map(str, skipped))} skipped: only the exported "
                             f"model (beam {card['beam_width']}) was given; pass --run RUN_DIR "
                             "to export both widths from the same weights")
            source = f"model {model_dir}"
        size = config.image_size
        files = bc.make_images(work / "images", args.images)

        # (a) tutorial loop; one warm-up image first so Keras' one-off tracing is not
        # charged to the loop.
        tut = tutorial_models(decoder, bc.encoder_for(config), scores)
        tutorial_caption(files[0], size, tut, words, config.max_length)
        tutorial_captions = []
        with bc.Stopwatch() as t_a:
            for f in files:
                tutorial_captions.append(tutorial_caption(f, size, tut, words, config.max_length))
        rate_a = len(files) / t_a.seconds

        # (b) exported SavedModel, batched.
        rates_b = {k: savedmodel_rate(path, files, size, args.batch_size)
                   for k, path in sorted(models.items())}

        # (c) the pipeline, with the widest exported model (beam 3 if there is one).
        k_c = 3 if 3 in models else max(models)
        n_pipeline = args.pipeline_images or 8 * args.images
        pipeline_dir = work / "images"
        if n_pipeline != args.images:
            pipeline_dir = work / "pipeline-images"
            bc.make_images(pipeline_dir, n_pipeline)
        full = bc.run_caption(str(pipeline_dir), str(work / "catalog"), models[k_c],
                              args.batch_size, beam_flags)
        n_c = full["summary"]["captioned"]
        rate_c = n_c / full["wall_seconds"]
        steady, one_batch = float("nan"), None
        if not args.no_steady and n_pipeline > args.batch_size:
            bc.make_images(work / "one-batch", args.batch_size)
            one_batch = bc.run_caption(str(work / "one-batch"), str(work / "catalog-one"),
                                       models[k_c], args.batch_size, beam_flags)
            dn = n_c - one_batch["summary"]["captioned"]
            dt = full["wall_seconds"] - one_batch["wall_seconds"]
            steady = dn / dt if dt > 0 and dn > 0 else float("nan")
        elif not args.no_steady:
            notes.append("steady state needs --images > --batch-size")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    b_c = rates_b[k_c]["images_per_s"]
    rows = [["a", "tutorial loop (Keras predict per image and per word, greedy)", "1", "1",
             rate_a, "1"]]
    for k, r in sorted(rates_b.items()):
        rows.append([f"b{k}", f"SavedModel, decode + model, beam {k}", args.batch_size, k,
                     r["images_per_s"], bc.ratio(r["images_per_s"] / rate_a)])
        rows.append([f"b{k}'", f"SavedModel, model only, beam {k}", args.batch_size, k,
                     r["model_only_images_per_s"], bc.ratio(r["model_only_images_per_s"] / rate_a)])
    rows.append(["c", "altbeam caption, wall incl. start-up", args.batch_size, k_c, rate_c,
                 bc.ratio(rate_c / rate_a)])
    rows.append(["c'", "altbeam caption, steady state", args.batch_size, k_c, steady,
                 bc.ratio(steady / rate_a)])
    same = None
    if 1 in rates_b:
        same = sum(x == y for x, y in zip(tutorial_captions, rates_b[1]["captions"]))

    def times(x):
        return bc.ratio(x) + ("x" if x == x else "")

    def verdict(x):
        return "n/a" if x != x else ("PASS" if x >= 20 else "FAIL")

    lines = [
        bc.header("altbeam vs the tutorial loop (images/s, higher is better)", env, command),
        f"images:   {len(files)} bundled photos (cycled, distinct bytes), {size}x{size} px; "
        f"{source}; beam flags: {' '.join(beam_flags) or '(none)'}",
        "",
        bc.table(["id", "measure", "batch", "beam", "images/s", "x a"],
                 rows, "llrrrr"),
        "",
        "ratios:   " + "   ".join(
            [f"b{k}/a = {bc.ratio(r['images_per_s'] / rate_a)}" for k, r in sorted(rates_b.items())]
            + [f"c/b{k_c} = {bc.ratio(rate_c / b_c)}", f"c'/b{k_c} = {bc.ratio(steady / b_c)}"]),
        f"target c >= 20x a: wall {times(rate_c / rate_a)} {verdict(rate_c / rate_a)}; "
        f"steady state {times(steady / rate_a)} {verdict(steady / rate_a)}",
        f"pipeline: {n_c} captioned in {full['wall_seconds']:.1f}s wall "
        f"(run summary: {full['summary']['seconds']:.1f}s from pipeline construction)"
        + (f"; one-batch run {one_batch['wall_seconds']:.1f}s" if one_batch else ""),
    ]
    if same is not None:
        lines.append(f"greedy captions equal in (a) and (b1): {same}/{len(files)} "
                     "(differences: load_img's nearest-neighbour resize vs altbeam's "
                     "draft + bilinear, float16 decoder weights in the export)")
    lines += [f"note:     {n}" for n in notes]
    print("\n".join(lines))
    bc.write_json(args.json, {
        "benchmark": "vs_tutorial_loop", "environment": env, "command": command,
        "images": len(files), "image_size": size, "batch_size": args.batch_size,
        "source": source, "beam_flags": beam_flags, "notes": notes,
        "tutorial": {"images_per_s": rate_a, "seconds": t_a.seconds},
        "savedmodel": {str(k): {key: v for key, v in r.items() if key != "captions"}
                       for k, r in rates_b.items()},
        "pipeline": {"beam": k_c, "images_per_s_wall": rate_c,
                     "images_per_s_steady": None if steady != steady else steady,
                     "wall_seconds": full["wall_seconds"], "summary": full["summary"],
                     "one_batch_wall_seconds": one_batch["wall_seconds"] if one_batch else None},
        "ratios": {"b_over_a": {str(k): r["images_per_s"] / rate_a for k, r in rates_b.items()},
                   "c_over_b": rate_c / b_c, "c_over_a": rate_c / rate_a,
                   "c_steady_over_a": None if steady != steady else steady / rate_a},
        "greedy_captions_equal": same,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
