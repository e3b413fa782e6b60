"""`altbeam`: one command, one subcommand per job.

Subcommands are dispatched lazily so `altbeam --help` starts without importing
TensorFlow or Beam. Each target is ``module:function`` taking ``argv`` (the words
after the subcommand) and returning an exit status.
"""
from __future__ import annotations

import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "caption": ("pipelines.caption:main", "caption image folders/buckets into a Parquet catalog"),
    "writeback": ("pipelines.writeback:main", "write catalogued captions into the photos as alt text"),
    "query": ("pipelines.query:main_query", "run read-only SQL (DuckDB) over a catalog"),
    "search": ("pipelines.query:main_search", "rank catalogued images by caption keywords"),
    "report": ("pipelines.report:main", "render a catalog as one self-contained HTML page"),
    "features": ("pipelines.features:main", "precompute encoder features as TFRecord shards"),
    "train": ("model.train:main", "train the caption decoder on precomputed features"),
    "evaluate": ("model.evaluate:main", "score a model with BLEU/METEOR/ROUGE-L/CIDEr"),
    "export": ("model.export:main", "export a trained checkpoint as a serving SavedModel"),
}


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: altbeam <command> [options]", "",
             "Caption photo archives with a CNN+LSTM model on Apache Beam.", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {doc}" for name, (_, doc) in SUBCOMMANDS.items()]
    lines += ["", "Run 'altbeam <command> --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from importlib.metadata import PackageNotFoundError, version
        try:
            print(f"altbeam {version('altbeam')}")
        except PackageNotFoundError:
            print("altbeam (not installed)")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"altbeam: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    target = SUBCOMMANDS[name][0]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except KeyboardInterrupt:
        print("altbeam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
