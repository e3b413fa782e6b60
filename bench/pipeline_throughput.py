"""How close the caption pipeline gets to the model's own batched throughput.

Same images, one run each:
1. raw: the SavedModel called on pre-decoded uint8 batches in a loop (the ceiling);
2. pipeline: `altbeam caption` end to end on the DirectRunner (list, read, decode,
   RunInference, Parquet), wall time, and wall time less one model load.
The ratio pipeline/raw is the figure of merit (target >= 0.85 on a long run).

    .venv/bin/python bench/pipeline_throughput.py --images 64 [--model DIR] \
        [--direct_running_mode multi_processing --direct_num_workers 2]

Unknown flags go to the pipeline (and so to Beam).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from altbeam.pipelines.caption import pipeline as caption  # noqa: E402
from altbeam.pipelines.caption.decode import decode_image  # noqa: E402
from altbeam.pipelines.caption.inference import LoadedModel, read_model_info  # noqa: E402

SAMPLES = pathlib.Path(__file__).resolve().parent.parent / "samples" / "photos"


def make_images(dest: pathlib.Path, n: int) -> list[pathlib.Path]:
    """n distinct files (the bundled photos, cycled)."""
    photos = sorted(SAMPLES.glob("*.jpg"))
    out = []
    for i in range(n):
        path = dest / f"{i:06d}_{photos[i % len(photos)].name}"
        shutil.copyfile(photos[i % len(photos)], path)
        out.append(path)
    return out


def raw_throughput(model_dir: str, files, batch_size: int) -> tuple[float, float]:
    """(images/s on pre-decoded arrays, model load seconds)."""
    info = read_model_info(model_dir)
    arrays = [decode_image(f.read_bytes(), info.image_size, str(f)).pixels for f in files]
    start = time.perf_counter()
    model = LoadedModel(model_dir, info.image_size)
    load_s = time.perf_counter() - start
    model.caption(np.stack(arrays[:batch_size]))               # warm-up / tracing
    start = time.perf_counter()
    for i in range(0, len(arrays), batch_size):
        model.caption(np.stack(arrays[i:i + batch_size]))
    return len(arrays) / (time.perf_counter() - start), load_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--model", default=None, help="SavedModel (default: the bundled model)")
    args, beam_argv = ap.parse_known_args(argv)
    if args.model is None:
        from altbeam.model import DEFAULT_MODEL_DIR

        args.model = DEFAULT_MODEL_DIR
    if not os.path.exists(os.path.join(args.model, "saved_model.pb")):
        print(f"no SavedModel at {args.model}; pass --model DIR", file=sys.stderr)
        return 2
    work = pathlib.Path(tempfile.mkdtemp(prefix="altbeam-bench-"))

    def pipeline(images_dir: pathlib.Path, n: int) -> tuple[int, float]:
        images_dir.mkdir()
        make_images(images_dir, n)
        start = time.perf_counter()
        summary = caption.run([str(images_dir), "--catalog", str(images_dir) + "-catalog",
                               "--model", args.model, "--batch-size", str(args.batch_size),
                               "--no-progress", *beam_argv])
        return summary["captioned"], time.perf_counter() - start

    try:
        (work / "raw").mkdir()
        raw_ips, load_s = raw_throughput(args.model, make_images(work / "raw", args.images),
                                         args.batch_size)
        # A one-batch run measures the fixed cost (start-up, model load, Parquet
        # finalize); the difference to the full run is the steady-state rate.
        n_small, wall_small = pipeline(work / "small", args.batch_size)
        n, wall = pipeline(work / "full", args.images)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pipe_ips = n / wall
    steady_ips = (n - n_small) / (wall - wall_small) if wall > wall_small and n > n_small \
        else float("nan")
    print(f"\nmodel {args.model}  images {n}  batch {args.batch_size}  "
          f"beam flags {' '.join(beam_argv) or '(none)'}")
    print(f"{'measure':<44} {'images/s':>9} {'ratio':>7}")
    print("-" * 62)
    print(f"{'raw model, pre-decoded batches':<44} {raw_ips:>9.2f} {1:>7.2f}")
    print(f"{'pipeline, wall (incl. start-up)':<44} {pipe_ips:>9.2f} {pipe_ips / raw_ips:>7.2f}")
    print(f"{'pipeline, steady state (full - one batch)':<44} {steady_ips:>9.2f} "
          f"{steady_ips / raw_ips:>7.2f}")
    print(f"(model load {load_s:.1f}s, one-batch run {wall_small:.1f}s; "
          "target steady ratio >= 0.85)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
