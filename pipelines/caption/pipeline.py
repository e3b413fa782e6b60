"""`altbeam caption INPUT... --catalog DIR`: images -> batched captioning -> Parquet catalog.

Pipeline (every step named; see docs/pipeline.md)::

    ListImages -> SkipUnchanged (incremental, see catalog_io) -> [Limit] -> CountTodo
      -> Reshuffle -> ReadAndDecode ──errors──┐
      -> Caption (RunInference, fixed batches) ──errors──> WriteErrors
      -> ToCatalogRows -> WriteCatalog -> WriteRunSummary (CATALOG/runs/<run_id>.json)

Flags this module does not know pass through to Beam's PipelineOptions, so
``--runner DataflowRunner --project ...`` or ``--direct_running_mode multi_processing
--direct_num_workers 2`` work as usual. Locally (DirectRunner, the default) a progress
line goes to stderr every few seconds and a summary ends the run.

With ``--write-metadata`` the new catalog rows also go through
``altbeam.pipelines.writeback.pipeline.WriteAltText`` (alt text into the files, same rules as
``altbeam writeback``), logged to CATALOG/writeback under the same run id.

Exit status: 0 when the run completed, even if some files failed (their count is
printed and each has a row in CATALOG/errors); 1 when the pipeline failed or nothing
could be processed (no image found, or every image failed); 2 for bad usage.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
import uuid

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)

from altbeam.pipelines.caption.decode import DEFAULT_MAX_PIXELS, ReadAndDecode
from altbeam.pipelines.caption.inference import CaptionImages, ModelInfo, read_model_info
from altbeam.pipelines.caption.sources import (
    DEFAULT_MAX_FILE_SIZE,
    IMAGE_EXTENSIONS,
    ListImages,
    expand_input_args,
)
from altbeam.pipelines.catalog.beam_io import (
    ReadCatalogIndex,
    SkipUnchanged,
    ToCatalogRows,
    WriteTable,
    checked_run_id,
    error_row,
    read_run_summary,
    write_run_summary,
)
from altbeam.pipelines.runtime.progress import ProgressReporter, TallyEach
from altbeam.pipelines.runtime.redact import redact
from altbeam.pipelines.writeback.pipeline import (
    AttachOwnWrites,
    WriteAltText,
    WritebackOptions,
    WriteWritebackLog,
    add_writeback_flags,
)

_LOCAL_RUNNERS = (None, "DirectRunner", "direct", "SwitchingDirectRunner", "FnApiRunner")


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
    num_shards: int = 0
    progress_dir: str | None = None     # set by run() for local runs
    writeback: WritebackOptions | None = None   # --write-metadata: alt text into the files

    def __post_init__(self):
        self.run_id = self.run_id or new_run_id()


class CaptionUsageError(Exception):
    """Bad flags or an unusable model: exit status 2."""


def new_run_id() -> str:
    """Sortable, file-name-safe: 20261124T091630Z-3fa2c1."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


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
        prog="altbeam caption",
        description="Caption images (folders, globs, gs:// prefixes) into a Parquet catalog. "
                    "Unknown flags pass through to Apache Beam (e.g. --runner, "
                    "--direct_running_mode multi_processing --direct_num_workers 2).")
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
    """(config, Beam flags, raw namespace); unknown flags go to Beam."""
    ap = make_parser()
    args, beam_argv = ap.parse_known_args(argv)
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
        run_id=args.run_id, share_model=args.share_model, num_shards=args.num_shards)
    config.writeback = _writeback_options(ap, args, config.run_id)
    return config, beam_argv, args


_WRITEBACK_FLAGS = ("xmp_description", "exif_description", "iptc_caption",
                    "overwrite_existing", "min_score", "sidecar", "sidecar_fallback",
                    "sidecar_naming")


def _writeback_options(ap, args, run_id: str) -> WritebackOptions | None:
    """--write-metadata and its options (the same as `altbeam writeback`'s)."""
    if not args.write_metadata:
        given = [f for f in _WRITEBACK_FLAGS if getattr(args, f) not in (None, False)]
        if given:
            ap.error(f"--{given[0].replace('_', '-')} only applies with --write-metadata")
        return None
    fields = ["alt_text"] + [f for f in ("xmp_description", "exif_description",
                                         "iptc_caption") if getattr(args, f)]
    return WritebackOptions(
        fields=tuple(fields), overwrite_existing=args.overwrite_existing,
        min_score=args.min_score, sidecar=args.sidecar,
        sidecar_fallback=args.sidecar_fallback,
        sidecar_naming=args.sidecar_naming or "ext", run_id=run_id, started_at=time.time())


class AddOwnWrites(beam.PTransform):
    """(uri, (size, mtime, sha)) -> (uri, (size, mtime, sha, versions altbeam wrote)).

    After a writeback the file holds the same image plus alt text: its bytes (and size,
    mtime) differ from the catalogued ones, but it must not be captioned again. The
    writeback log links each catalogued sha256 to the versions it produced.
    """

    def __init__(self, catalog: str):
        super().__init__()
        self._catalog = catalog

    def expand(self, index):
        rows = index | "AsRows" >> beam.MapTuple(
            lambda uri, entry: {"uri": uri, "sha256": entry[2], "entry": entry})
        return (rows
                | "AttachOwnWrites" >> AttachOwnWrites(self._catalog)
                | "ToEntry" >> beam.Map(lambda r: (r["uri"], (
                    *r["entry"], tuple(r.get("_produced_sha256") or ())))))


def build(p: beam.Pipeline, config: CaptionConfig,
          model: ModelInfo | None = None) -> dict[str, beam.PCollection]:
    """Add the caption job to ``p``; return its PCollections by name.

    Keys: rows (catalog dicts), errors (error dicts), unchanged (uris),
    catalog_files / error_files (finalized shard paths), summary (runs/<id>.json path);
    with ``config.writeback`` also writeback (decision rows) and writeback_files.
    """
    model = model or read_model_info(config.model)
    pd = config.progress_dir
    listed = p | "ListImages" >> ListImages(
        config.inputs, extensions=config.extensions, max_file_size=config.max_file_size,
        follow_symlinks=config.follow_symlinks, progress_dir=pd)

    unchanged_parts = []
    todo = listed["files"]
    if not config.force:
        index = (p
                 | "ReadCatalogIndex" >> ReadCatalogIndex(config.catalog)
                 | "AddOwnWrites" >> AddOwnWrites(config.catalog))
        checked = todo | "SkipUnchanged" >> beam.ParDo(
            SkipUnchanged(pd), index=beam.pvalue.AsDict(index)).with_outputs(
                "unchanged", main="todo")
        todo = checked.todo
        unchanged_parts.append(checked.unchanged)
    if config.limit:
        todo = (todo
                | "Limit" >> beam.combiners.Top.Of(config.limit, key=lambda r: r.uri,
                                                   reverse=True)
                | "UnpackLimit" >> beam.FlatMap(lambda records: records))

    decoded = (todo
               | "CountTodo" >> beam.ParDo(TallyEach("todo", pd))
               # Spread the files over workers: listing produced them in one bundle.
               | "Reshuffle" >> beam.Reshuffle()
               | "ReadAndDecode" >> beam.ParDo(ReadAndDecode(
                   model.image_size, config.max_pixels, config.max_file_size, pd)
               ).with_outputs("errors", "unchanged", main="images"))
    unchanged_parts.append(decoded.unchanged)

    inferred = decoded.images | "Caption" >> CaptionImages(
        model, config.batch_size, large_model=config.share_model)
    rows = inferred["captioned"] | "ToCatalogRows" >> beam.ParDo(
        ToCatalogRows(model.version, config.run_id, pd))
    inference_errors = inferred["errors"] | "CountInferenceErrors" >> beam.ParDo(
        TallyEach("failed", pd, also=("done",)))

    errors = ((listed["errors"], decoded.errors, inference_errors)
              | "AllErrors" >> beam.Flatten()
              | "ToErrorRows" >> beam.Map(error_row, config.run_id))
    unchanged = tuple(unchanged_parts) | "AllUnchanged" >> beam.Flatten()

    catalog_files = rows | "WriteCatalog" >> WriteTable(
        config.catalog, "catalog", config.run_id, config.num_shards)
    error_files = errors | "WriteErrors" >> WriteTable(config.catalog, "errors", config.run_id)

    extra = {}
    if config.writeback is not None:   # --write-metadata: the new rows into their files
        decisions = rows | "WriteMetadata" >> WriteAltText(config.writeback,
                                                           config.batch_size)
        extra = {"writeback": decisions,
                 "writeback_files": decisions | "WriteWritebackLog" >> WriteWritebackLog(
                     config.catalog, config.run_id)}

    def count(pcoll, name):
        return beam.pvalue.AsSingleton(pcoll | name >> beam.combiners.Count.Globally())

    summary = (p
               | "RunSummaryTrigger" >> beam.Create([None])
               | "WriteRunSummary" >> beam.Map(
                   write_run_summary, catalog=config.catalog, run_id=config.run_id,
                   started_at=time.time(),
                   # runs/<id>.json is shared like the catalog: an input may be a
                   # signed URL or carry user:password@, so keep no raw URI there.
                   config={"catalog": redact(config.catalog),
                           "inputs": [redact(i) for i in config.inputs],
                           "model": redact(config.model),
                           "model_version": model.version, "image_size": model.image_size,
                           "beam_width": model.beam_width, "batch_size": config.batch_size,
                           "force": config.force, "limit": config.limit},
                   captioned=count(rows, "CountCaptioned"),
                   unchanged=count(unchanged, "CountUnchanged"),
                   failed=count(errors, "CountFailed"),
                   catalog_files=beam.pvalue.AsList(catalog_files),
                   error_files=beam.pvalue.AsList(error_files)))
    return {"rows": rows, "errors": errors, "unchanged": unchanged,
            "catalog_files": catalog_files, "error_files": error_files, "summary": summary,
            **extra}


def local_runner(options: PipelineOptions):
    """The FnApiRunner, as DirectRunner would pick it, minus the Prism detour.

    DirectRunner first tries the Prism runner, which downloads a binary at run time
    (no network on CI) and runs asynchronously; the FnApiRunner blocks in-process and
    honours --direct_running_mode / --direct_num_workers.
    """
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    # multi_processing workers are fresh interpreters: make sure they can import us
    # even when altbeam is run from a source checkout that is not installed.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, paths)])
    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def run(argv: list[str] | None = None) -> dict:
    """Run the caption job; return the run summary (runs/<run_id>.json) plus "exit_code"."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config, beam_argv, args = parse_args(argv)
    try:   # early, as a usage error; build() refuses it anyway (catalog_io.shard_prefix)
        checked_run_id(config.run_id)
    except ValueError as e:
        raise CaptionUsageError(str(e)) from e
    try:
        model = read_model_info(config.model)
    except (OSError, ValueError) as e:
        raise CaptionUsageError(f"cannot use model {config.model}: {e}") from e
    options = PipelineOptions(flags=beam_argv)   # flags=[]: never re-parse sys.argv
    options.view_as(SetupOptions).save_main_session = False
    is_local = options.view_as(StandardOptions).runner in _LOCAL_RUNNERS
    reporter = None
    if is_local and not args.no_progress:
        config.progress_dir = tempfile.mkdtemp(prefix="altbeam-progress-")
        reporter = ProgressReporter(config.progress_dir, args.progress_interval)
    print(f"altbeam: run {config.run_id}: model {model.name or model.path} "
          f"(version {model.version}, {model.image_size}px, {model.beam_width} beams), "
          f"catalog {config.catalog}", file=sys.stderr)
    start = time.monotonic()
    try:
        p = beam.Pipeline(runner=local_runner(options) if is_local else None, options=options)
        build(p, config, model)
        if reporter:
            reporter.start()
        result = p.run()
        state = result.wait_until_finish()
    finally:
        if reporter:
            reporter.stop()
        if config.progress_dir:
            shutil.rmtree(config.progress_dir, ignore_errors=True)
    if state not in (None, "DONE", beam.runners.runner.PipelineState.DONE):
        raise RuntimeError(f"pipeline ended in state {state}")
    summary = read_run_summary(config.catalog, config.run_id)
    summary["wall_seconds"] = round(time.monotonic() - start, 3)
    if config.writeback is not None:
        from altbeam.pipelines.catalog.beam_io import read_table_rows

        counts: dict[str, int] = {}
        for d in read_table_rows(config.catalog, "writeback"):
            if d["run_id"] == config.run_id:
                counts[d["action"]] = counts.get(d["action"], 0) + 1
        summary["writeback"] = counts
    processed = summary["captioned"] + summary["skipped_unchanged"]
    summary["exit_code"] = 0 if processed > 0 else 1
    return summary


def format_summary(s: dict) -> str:
    return (f"altbeam: run {s['run_id']} done in {s['wall_seconds']:.1f}s: "
            f"captioned {s['captioned']}, skipped unchanged {s['skipped_unchanged']}, "
            f"failed {s['failed']}, {s['images_per_second']:.2f} images/s"
            + (f"; failures are listed in {s['catalog']}/errors/" if s["failed"] else "")
            + ("; metadata: " + ", ".join(f"{k} {s['writeback'].get(k, 0)}" for k in
                                          ("written", "skipped", "failed"))
               + f" (see {s['catalog']}/writeback/)" if "writeback" in s else ""))


def main(argv: list[str] | None = None) -> int:
    """CLI entry (`altbeam caption`): 0 done, 1 nothing processed / pipeline failed, 2 usage."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        summary = run(argv)
    except CaptionUsageError as e:
        print(f"altbeam caption: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - report, don't dump a Beam stack on users
        print(f"altbeam caption: pipeline failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(format_summary(summary), file=sys.stderr)
    if summary["exit_code"]:
        if summary["failed"]:
            print("altbeam caption: every input failed; see the errors table", file=sys.stderr)
        else:
            print("altbeam caption: no images found in the inputs", file=sys.stderr)
    return summary["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
