"""`altbeam`: one command, one subcommand per job.

Subcommands are dispatched lazily so `altbeam --help` starts without importing
TensorFlow or Beam. Each target is ``module:function`` taking ``argv`` (the words
after the subcommand) and returning an exit status.
"""
from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys

# The run-id rule lives with the catalog's file names (the CLI checks it early, for
# every subcommand). Light: pyarrow via the schemas, no Beam, no TensorFlow.
from altbeam.pipelines.catalog.layout import check_run_id

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "caption": ("altbeam.pipelines.caption.pipeline:main", "caption image folders/buckets into a Parquet catalog"),
    "writeback": ("altbeam.pipelines.writeback.pipeline:main", "write catalogued captions into the photos as alt text"),
    "query": ("altbeam.pipelines.query.commands:main_query", "run read-only SQL (DuckDB) over a catalog"),
    "search": ("altbeam.pipelines.query.commands:main_search", "rank catalogued images by caption keywords"),
    "report": ("altbeam.pipelines.report.commands:main", "render a catalog as one self-contained HTML page"),
    "features": ("altbeam.pipelines.features.pipeline:main", "precompute encoder features as TFRecord shards"),
    "train": ("altbeam.model.training.train:main", "train the caption decoder on precomputed features"),
    "train-concepts": ("altbeam.model.training.concepts:main", "train concept detectors (person, water, grass, ...) on precomputed features"),
    "evaluate": ("altbeam.model.evaluation.evaluate:main", "score a model with BLEU/METEOR/ROUGE-L/CIDEr"),
    "export": ("altbeam.model.serving.export:main", "export a trained checkpoint as a serving SavedModel"),
}


def _run_id_arg(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--run-id":
            return argv[i + 1] if i + 1 < len(argv) else None
        if arg.startswith("--run-id="):
            return arg.split("=", 1)[1]
    return None


def _usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = ["usage: altbeam <command> [options]", "",
             "Caption photo archives with a CNN+LSTM model on Apache Beam.", "",
             "commands:"]
    lines += [f"  {name.ljust(width)}  {doc}" for name, (_, doc) in SUBCOMMANDS.items()]
    lines += ["", "Run 'altbeam <command> --help' for a command's options."]
    return "\n".join(lines)


def _exit_status(code) -> int:
    """SystemExit's code as the process status Python would give it."""
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


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
    run_id = _run_id_arg(rest)
    if run_id:
        try:
            check_run_id(run_id)
        except ValueError as e:
            print(f"altbeam {name}: {e}", file=sys.stderr)
            return 2
    # TensorFlow's C++ start-up chatter (no CUDA driver, absl init) buries the progress
    # lines on CPU machines; set TF_CPP_MIN_LOG_LEVEL yourself to see it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from altbeam.pipelines.runtime.redact import RedactingStream, install_log_redaction

    # Untrusted names and library errors reach logs and stderr: strip credentials
    # (signed URLs, tokens, keys) from both, whatever prints them.
    install_log_redaction()
    stderr, sys.stderr = sys.stderr, RedactingStream(sys.stderr)
    target = SUBCOMMANDS[name][0]
    module_name, func_name = target.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest) or 0)
    except SystemExit as e:         # argparse's usage errors and --help: a status, as a run's
        return _exit_status(e.code)
    except KeyboardInterrupt:
        print("altbeam: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stderr.flush()
        sys.stderr = stderr


def entry() -> None:
    """Console-script entry point: run the command, then leave without interpreter teardown.

    Every output is complete when main() returns. Native threads that gRPC (inside Beam's
    local runner) leaves behind can still abort the process while the interpreter tears
    down ("terminate called without an active exception", exit -6), turning a finished,
    successful run into a crash. So: run Python's own exit handlers (temp-dir clean-up),
    flush, and exit with main()'s status directly.
    """
    code = main()
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
