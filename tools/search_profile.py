"""Where an exported model's time goes at one batch size (issue 21's profiling).

1. Rows: the model rebuilt in Python (as `altbeam export --from-saved-model` does) runs
   its beam search eagerly on the bundled sample photos, and every decoder step's row
   count is recorded: the share of a full search's row-steps (steps x N x K) that were
   stepped with the shipped rule (`beam_search.worth_dropping`) and that were live
   (every finished row dropped).
2. Ops: the SavedModel's ``serving_default`` under the TensorFlow profiler; per-op
   thread time per call, summed by op type, largest first.

    python tools/search_profile.py model/default --batch 32 --images 128 \
        [--detectors model/data/concept_detectors.npz] [--top 25] [--calls 3]
"""
from __future__ import annotations

import argparse
import collections
import glob
import pathlib
import sys
import tempfile

import numpy as np
import tensorflow as tf

from altbeam.model.serving import beam_search as search_module
from altbeam.model.serving.beam_search import RowCounting

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"


def sample_batch(size: int, count: int) -> np.ndarray:
    sys.path.insert(0, str(BENCH))
    import _common as bc
    photos = bc.decode_files(bc.sample_photos(), size)
    return np.stack([photos[i % len(photos)] for i in range(count)])


def rebuilt(model_dir: str, detectors: str | None):
    """(Captioner in Python with the model's weights, head and guide, its RowCounting)."""
    from altbeam.model.serving.captioner import Captioner
    from altbeam.model.serving.export import (
        attach_guide,
        concept_head_for,
        source_guide_settings,
    )
    from altbeam.model.serving.rebuild import has_concept_head, rebuild_captioner
    model, card = rebuild_captioner(model_dir)
    head = concept_head_for(model.config.encoder, "imagenet", detectors, None) \
        if has_concept_head(model_dir) else None
    words = [w.decode() for w in model.words.numpy()]
    counting = RowCounting(model.decoder)
    guide = attach_guide(words, head, source_guide_settings(card))
    return Captioner(model.encoder, counting, words, model.config, head, guide), counting


def row_steps(captioner, counting, images: np.ndarray, batch: int) -> dict:
    """Row-steps stepped / of a full search, with the shipped rule and all finished dropped."""
    K = captioner.config.beam_width
    out = {}
    shipped = search_module.worth_dropping
    for name, rule in (("shipped rule", shipped), ("live only", lambda f, r: f > 0)):
        search_module.worth_dropping = rule
        try:
            stepped = full = steps = 0
            for s in range(0, len(images), batch):
                counting.rows.clear()
                chunk = images[s:s + batch]
                captioner._search(tf.constant(chunk))
                stepped += sum(counting.rows)
                full += len(counting.rows) * len(chunk) * K
                steps += len(counting.rows)
        finally:
            search_module.worth_dropping = shipped
        out[name] = {"share": stepped / full, "steps_per_batch": steps / -(-len(images) // batch)}
    return out


def op_times(model_dir: str, images: np.ndarray, calls: int) -> collections.Counter:
    """Thread milliseconds per call of serving_default, by op type."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2
    serve = tf.saved_model.load(model_dir).signatures["serving_default"]
    batch = tf.constant(images)
    serve(images=batch)
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(calls):
            serve(images=batch)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(open(sorted(glob.glob(f"{logdir}/**/*.xplane.pb",
                                                    recursive=True))[-1], "rb").read())
    totals = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                op = names.get(event.metadata_id, "?").split(":")[-1]
                if op != "Process":          # the executor's span around every op
                    totals[op] += event.duration_ps / 1e9 / calls
    return totals


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--detectors", default="model/data/concept_detectors.npz",
                    help="the concept detectors the model was exported with")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--calls", type=int, default=3)
    args = ap.parse_args(argv)
    captioner, counting = rebuilt(args.model, args.detectors)
    images = sample_batch(captioner.config.image_size, args.images)
    print(f"model {args.model}  batch {args.batch}  images {args.images}  "
          f"beam {captioner.config.beam_width}")
    for name, r in row_steps(captioner, counting, images, args.batch).items():
        print(f"rows stepped, {name:<12}: {r['share']:6.1%} of a full search's row-steps "
              f"({r['steps_per_batch']:.1f} steps per batch)")
    times = op_times(args.model, images[:args.batch], args.calls)
    total = sum(times.values())
    print(f"\nserving_default, thread ms per call (all ops {total:.1f})")
    for op, ms in times.most_common(args.top):
        print(f"{op:<36} {ms:9.2f}  {ms / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
