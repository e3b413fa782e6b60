"""Flex-template entry point: template parameters -> the caption pipeline, submitted, not awaited.

The Dataflow flex-template launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE) with
one ``--name=value`` flag per parameter in deploy/metadata.json, plus its own Beam
flags (project, region, temp/staging locations, sdk_container_image, the job file
to write, ...). Template parameter names cannot hold hyphens, so this module maps
them onto `altbeam caption`'s flags and builds the same graph with
``altbeam.pipelines.caption.pipeline.build``.

It calls ``p.run()`` and returns: the launcher only has to hand the job to the
service (with a template location set the runner writes the job file and no job
exists yet, so `caption.run`, which waits for the job and then reads its run
summary, is the wrong entry point here).
"""
from __future__ import annotations

import argparse
import logging
import sys

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, SetupOptions, StandardOptions

from altbeam.pipelines.caption import pipeline as caption

# template parameter -> `altbeam caption` flag (value flags)
VALUE_PARAMS = {
    "catalog": "--catalog",
    "model": "--model",
    "batch_size": "--batch-size",
    "extensions": "--extensions",
    "max_file_size": "--max-file-size",
    "max_pixels": "--max-pixels",
    "limit": "--limit",
    "run_id": "--run-id",
    "num_shards": "--num-shards",
}
# template parameter -> flag given when the parameter is "true"
BOOL_PARAMS = {"share_model": "--share-model", "force": "--force",
               "require_gpu": "--require-gpu"}
# The model must be named: the launcher's and the workers' site-packages paths differ,
# so "the bundled model" would name a folder that is not on the workers.
REQUIRED_PARAMS = {"catalog", "model"}
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no", ""}


def _bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"parameter {name}: expected true or false, got {text!r}")
    return value in _TRUE


def to_caption_argv(argv: list[str]) -> list[str]:
    """Template-style flags -> `altbeam caption` argv (unknown flags kept for Beam).

    ``--inputs`` is a comma-separated list of folders, globs or gs:// prefixes.
    """
    ap = argparse.ArgumentParser(prog="flex_main", allow_abbrev=False)
    ap.add_argument("--inputs", required=True)
    for name in VALUE_PARAMS:
        ap.add_argument(f"--{name}", required=name in REQUIRED_PARAMS)
    for name in BOOL_PARAMS:
        ap.add_argument(f"--{name}", default="false")
    args, beam_argv = ap.parse_known_args(argv)
    out = [uri.strip() for uri in args.inputs.split(",") if uri.strip()]
    for name, flag in VALUE_PARAMS.items():
        value = getattr(args, name)
        if value not in (None, ""):
            out += [flag, value]
    for name, flag in BOOL_PARAMS.items():
        if _bool(name, getattr(args, name)):
            out.append(flag)
    return out + ["--no-progress"] + beam_argv


def build_pipeline(argv: list[str]) -> beam.Pipeline:
    """The caption job as a Dataflow pipeline (graph built, nothing run)."""
    config, beam_argv, _ = caption.parse_args(to_caption_argv(argv))
    options = PipelineOptions(flags=beam_argv)
    options.view_as(SetupOptions).save_main_session = False
    standard = options.view_as(StandardOptions)
    standard.runner = standard.runner or "DataflowRunner"
    p = beam.Pipeline(options=options)
    caption.build(p, config)
    return p


def main(argv: list[str] | None = None) -> None:
    logging.getLogger().setLevel(logging.INFO)
    build_pipeline(list(sys.argv[1:] if argv is None else argv)).run()


if __name__ == "__main__":
    main()
