"""Peak memory of a caption run as the image count grows (target: flat).

For each count N, N copies of the bundled photos (each with a distinct JPEG comment, so
every file has its own bytes and sha256) are captioned by ``altbeam caption`` in a fresh
interpreter into a fresh catalog. Reported per run: peak RSS of the largest single
process (``wait4``'s ``ru_maxrss``, which also covers waited-for worker processes) and
the peak of the whole process tree's summed RSS (sampled from /proc), then the ratio of
the largest count's peak to the smallest's.

    .venv/bin/python bench/memory.py --counts 1000,5000 [--model DIR]
    .venv/bin/python bench/memory.py --tiny --counts 4,8                 # smoke run

Unknown flags go to the pipeline (and so to Beam).
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as bc  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="SavedModel (default: the bundled model)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model (smoke runs)")
    ap.add_argument("--counts", type=bc.int_list, default=[1000, 5000], help="e.g. 1000,5000")
    ap.add_argument("--batch-size", type=int, default=16, help="images per model call")
    ap.add_argument("--poll", type=float, default=0.5,
                    help="seconds between process-tree RSS samples")
    ap.add_argument("--json", help="write the raw figures here")
    return ap.parse_known_args(argv)


def main(argv=None) -> int:
    args, beam_flags = parse_args(sys.argv[1:] if argv is None else argv)
    env = bc.environment()
    command = bc.command_line(None if argv is None else [sys.argv[0], *argv])
    work = pathlib.Path(tempfile.mkdtemp(prefix="altbeam-bench-memory-"))
    runs = []
    try:
        if args.tiny:
            from tests.support.tiny import export_tiny_model

            model_dir = export_tiny_model(str(work / "tiny-model"))
            source = "tiny random model"
        else:
            model_dir = args.model or bc.default_model_dir()
            bc.read_card(model_dir)
            source = f"model {model_dir}"
        for n in args.counts:
            images = work / f"images-{n}"
            bc.make_images(images, n)
            result = bc.run_caption(str(images), str(work / f"catalog-{n}"), model_dir,
                                    args.batch_size, beam_flags, poll_seconds=args.poll)
            shutil.rmtree(images, ignore_errors=True)
            s = result["summary"]
            runs.append({"images": n, "captioned": s["captioned"], "failed": s["failed"],
                         "wall_seconds": result["wall_seconds"],
                         "images_per_s": s["captioned"] / result["wall_seconds"],
                         "max_rss_mib": result["max_rss_kb"] / 1024,
                         "peak_tree_rss_mib": (result["peak_tree_rss_kb"] or 0) / 1024})
    finally:
        shutil.rmtree(work, ignore_errors=True)

    first, last = runs[0], runs[-1]
    ratio = last["max_rss_mib"] / first["max_rss_mib"]
    tree_ratio = (last["peak_tree_rss_mib"] / first["peak_tree_rss_mib"]
                  if first["peak_tree_rss_mib"] else float("nan"))
    rows = [[r["images"], r["captioned"], r["failed"], r["wall_seconds"], r["images_per_s"],
             r["max_rss_mib"], r["peak_tree_rss_mib"]] for r in runs]
    lines = [
        bc.header("caption run peak memory vs image count", env, command),
        f"model:    {source}; batch {args.batch_size}; "
        f"beam flags: {' '.join(beam_flags) or '(none)'}",
        "",
        bc.table(["images", "captioned", "failed", "wall s", "images/s",
                  "peak RSS MiB (largest process)", "peak RSS MiB (process tree)"], rows,
                 "rrrrrrr"),
        "",
        f"growth {last['images']}/{first['images']} images: largest process "
        f"{ratio:.2f}x, process tree {tree_ratio:.2f}x (flat is 1.00x)",
    ]
    print("\n".join(lines))
    bc.write_json(args.json, {
        "benchmark": "memory", "environment": env, "command": command, "source": source,
        "batch_size": args.batch_size, "beam_flags": beam_flags, "runs": runs,
        "ratio_max_rss": ratio, "ratio_tree_rss": None if tree_ratio != tree_ratio else tree_ratio})
    return 0


if __name__ == "__main__":
    sys.exit(main())
