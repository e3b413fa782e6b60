"""`altbeam caption`'s own options: the command line and the :class:`CaptionConfig` it
becomes. Beam's pipeline options (``--runner`` ...) may stand anywhere among them and
are handed back untouched by `parse_args`; any other flag is refused
(altbeam.pipelines.runtime.flags).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

from altbeam.pipelines.caption.decode import DEFAULT_MAX_PIXELS
from altbeam.pipelines.caption.sources import (
    DEFAULT_MAX_FILE_SIZE,
    IMAGE_EXTENSIONS,
    expand_input_args,
)
from altbeam.pipelines.runtime.flags import parse_job_args
from altbeam.pipelines.runtime.runner import new_run_id
from altbeam.pipelines.writeback.options import (
    WritebackOptions,
    add_writeback_flags,
    given_writeback_flags,
    writeback_options,
)


@dataclasses.dataclass
class CaptionConfig:
    """The caption job's own options (Beam's are separate)."""

    inputs: list[str]
    catalog: str
    model: str
    batch_size: int = 16
    extensions: frozenset[str] = IMAGE_EXTENSIONS
    max_file_size: int = DEFAULT_MAX_FILE_SIZE
    max_pixels: int = DEFAULT_MAX_PIXELS
    follow_symlinks: bool = False
    force: bool = False
    limit: int | None = None
    run_id: str = ""
    share_model: bool = False
    require_gpu: bool = False           # fail at start-up unless TensorFlow sees a GPU
    num_shards: int = 0
    progress_dir: str | None = None     # set by run() for local runs
    writeback: WritebackOptions | None = None   # --write-metadata: alt text into the files

    def __post_init__(self):
        self.run_id = self.run_id or new_run_id()


class CaptionUsageError(Exception):
    """Bad flags or an unusable model: exit status 2."""


def _size(text: str) -> int:
    """'200MB', '1.5G', '4096' -> bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower().rstrip("bi").rstrip("i")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 4096, 50MB, 1G)") from None


def _default_model() -> str:
    from altbeam.model import DEFAULT_MODEL_DIR

    return DEFAULT_MODEL_DIR


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="altbeam caption", allow_abbrev=False,
        description="Caption images (folders, globs, gs:// prefixes) into a Parquet catalog. "
                    "Apache Beam/Dataflow pipeline options may be given anywhere (e.g. "
                    "--runner, --direct_running_mode multi_processing --direct_num_workers "
                    "2); any other unknown flag is refused.")
    ap.add_argument("inputs", nargs="*", metavar="INPUT",
                    help="folder (recursive), glob, gs://bucket/prefix, file, or @LIST.txt")
    ap.add_argument("--input-list", action="append", default=[], metavar="FILE",
                    help="text file with one input URI per line (repeatable)")
    ap.add_argument("--catalog", required=True, help="catalog folder (local or gs://)")
    ap.add_argument("--model", default=None,
                    help="SavedModel folder (default: the bundled model)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per model call")
    ap.add_argument("--extensions", default=",".join(sorted(IMAGE_EXTENSIONS)),
                    help="comma-separated file extensions to read from folders/prefixes")
    ap.add_argument("--max-file-size", type=_size, default=DEFAULT_MAX_FILE_SIZE,
                    help="skip (as an error row) files larger than this (default 200MB)")
    ap.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                    help="refuse images declaring more pixels (decompression bombs)")
    ap.add_argument("--follow-symlinks", action="store_true",
                    help="follow symlinks that point outside the input folders")
    ap.add_argument("--force", action="store_true",
                    help="caption every image, even those already catalogued unchanged")
    ap.add_argument("--limit", type=int, default=None,
                    help="caption at most N new/changed images (first N by URI)")
    ap.add_argument("--run-id", default="", help="run identifier (default: time + random)")
    ap.add_argument("--share-model", action="store_true",
                    help="one model per machine shared by all worker processes "
                         "(Beam large_model; use on GPU workers)")
    ap.add_argument("--require-gpu", action="store_true",
                    help="fail at start-up (locally: before reading any image; on "
                         "Dataflow: when a worker loads the model) unless TensorFlow sees "
                         "a GPU")
    ap.add_argument("--num-shards", type=int, default=0,
                    help="catalog shards per run (0: let the runner decide)")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    wb = ap.add_argument_group(
        "writing the captions into the files (as `altbeam writeback`; see docs/writeback.md)")
    wb.add_argument("--write-metadata", action="store_true",
                    help="write each new caption into its image as IPTC alt text "
                         "(XMP-iptcCore:AltTextAccessibility), never over a person's words")
    add_writeback_flags(wb, dry_run=False)
    ap.add_argument("--progress-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    return ap


def parse_args(argv: list[str]) -> tuple[CaptionConfig, list[str], argparse.Namespace]:
    """(config, Beam flags, raw namespace); a flag neither ours nor Beam's exits 2."""
    ap = make_parser()
    args, beam_argv = parse_job_args(ap, argv)
    if args.batch_size < 1:
        ap.error("--batch-size must be at least 1")
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be at least 1")
    inputs = expand_input_args(args.inputs, args.input_list)
    if not inputs:
        ap.error("no input: give folders, globs, gs:// prefixes, @LIST.txt or --input-list")
    exts = frozenset("." + e.strip().lower().lstrip(".")
                     for e in args.extensions.split(",") if e.strip())
    config = CaptionConfig(
        inputs=inputs, catalog=args.catalog.rstrip("/") or "/",
        model=args.model or _default_model(), batch_size=args.batch_size, extensions=exts,
        max_file_size=args.max_file_size, max_pixels=args.max_pixels,
        follow_symlinks=args.follow_symlinks, force=args.force, limit=args.limit,
        run_id=args.run_id, share_model=args.share_model, require_gpu=args.require_gpu,
        num_shards=args.num_shards)
    config.writeback = _writeback_options(ap, args, config.run_id)
    return config, beam_argv, args


def _writeback_options(ap: argparse.ArgumentParser, args: argparse.Namespace,
                       run_id: str) -> WritebackOptions | None:
    """--write-metadata and its options (the same as `altbeam writeback`'s)."""
    if not args.write_metadata:
        given = given_writeback_flags(args)
        if given:
            ap.error(f"{given[0]} only applies with --write-metadata")
        return None
    return writeback_options(args, run_id, started_at=time.time())
