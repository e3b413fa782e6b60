"""`altbeam caption INPUT... --catalog DIR`: images -> batched captioning -> Parquet catalog.

Pipeline (every step named; see docs/pipeline.md)::

    ListImages -> JoinCatalogIndex -> SkipUnchanged (incremental: caption.incremental)
      -> [Limit] -> CountTodo
      -> Reshuffle -> ReadAndDecode ──errors──┐
      -> HoldBackUndescribable ──too_small / blank (no caption)──┐
      -> Caption (RunInference, fixed batches) ──errors──> WriteErrors
      -> ToCatalogRows (the caption gate: caption_status, objects, keywords)
      -> WriteCatalog -> WriteRunSummary (CATALOG/runs/<run_id>.json)

Beam/Dataflow pipeline options, anywhere among the arguments, pass through to Beam's
PipelineOptions, so ``--runner DataflowRunner --project ...`` or ``--direct_running_mode
multi_processing --direct_num_workers 2`` work as usual; any other unknown flag is
refused (runtime/flags.py). Locally (DirectRunner, the default) a progress
line goes to stderr every few seconds and a summary ends the run.

With ``--write-metadata`` the new catalog rows also go through
``altbeam.pipelines.writeback.pipeline.WriteAltText`` (alt text into the files, same rules as
``altbeam writeback``), logged to CATALOG/writeback under the same run id.

Exit status: 0 when the run completed, even if some files failed (their count is
printed and each has a row in CATALOG/errors); 1 when the pipeline failed or nothing
could be processed (no image found, or every image failed); 2 for bad usage.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from altbeam.model.serving.caption_status import CAPTIONED
from altbeam.pipelines.caption.decode import ReadAndDecode
from altbeam.pipelines.caption.gate import HELD_BACK, HoldBackUndescribable, StatusCounts
from altbeam.pipelines.caption.incremental import (
    AddOwnWrites,
    JoinCatalogIndex,
    ReadCatalogIndex,
    SkipUnchanged,
)
from altbeam.pipelines.caption.inference import (
    CaptionImages,
    ModelInfo,
    NoGpuError,
    read_model_info,
    require_gpu,
)
from altbeam.pipelines.caption.options import CaptionConfig, CaptionUsageError, parse_args
from altbeam.pipelines.caption.sources import ListImages
from altbeam.pipelines.catalog.beam_io import (
    ToCatalogRows,
    WriteTable,
    error_row,
    read_run_summary,
    read_table_rows,
    write_run_summary,
)
from altbeam.pipelines.catalog.layout import check_run_id
from altbeam.pipelines.runtime.progress import ProgressReporter, TallyEach
from altbeam.pipelines.runtime.redact import redact
from altbeam.pipelines.runtime.runner import new_pipeline, run_pipeline, runs_locally
from altbeam.pipelines.writeback.pipeline import WriteAltText, WriteWritebackLog


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
        checked = ((todo, index)
                   | "JoinCatalogIndex" >> JoinCatalogIndex()
                   | "SkipUnchanged" >> beam.ParDo(SkipUnchanged(pd)).with_outputs(
                       "unchanged", main="todo"))
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

    gated = decoded.images | "HoldBackUndescribable" >> beam.ParDo(
        HoldBackUndescribable()).with_outputs(HELD_BACK, main="images")
    inferred = gated.images | "Caption" >> CaptionImages(
        model, config.batch_size, large_model=config.share_model,
        require_gpu=config.require_gpu, progress_dir=pd)
    rows = ((inferred["captioned"], gated[HELD_BACK])
            | "CaptionedAndHeldBack" >> beam.Flatten()
            | "ToCatalogRows" >> beam.ParDo(
                ToCatalogRows(model.version, config.run_id, pd, model.judged,
                              model.thresholds)))
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
                   statuses=beam.pvalue.AsSingleton(
                       rows | "CountStatuses" >> beam.CombineGlobally(StatusCounts())),
                   unchanged=count(unchanged, "CountUnchanged"),
                   failed=count(errors, "CountFailed"),
                   skipped=beam.pvalue.AsList(listed["skipped"]),
                   catalog_files=beam.pvalue.AsList(catalog_files),
                   error_files=beam.pvalue.AsList(error_files)))
    return {"rows": rows, "errors": errors, "unchanged": unchanged,
            "catalog_files": catalog_files, "error_files": error_files, "summary": summary,
            **extra}


def run(argv: list[str] | None = None) -> dict:
    """Run the caption job; return the run summary (runs/<run_id>.json) plus "exit_code"."""
    argv = list(sys.argv[1:] if argv is None else argv)
    config, beam_argv, args = parse_args(argv)
    try:   # early, as a usage error; build() refuses it anyway (layout.shard_prefix)
        check_run_id(config.run_id)
    except ValueError as e:
        raise CaptionUsageError(str(e)) from e
    try:
        model = read_model_info(config.model)
    except (OSError, ValueError) as e:
        raise CaptionUsageError(f"cannot use model {config.model}: {e}") from e
    options = PipelineOptions(flags=beam_argv)   # flags=[]: never re-parse sys.argv
    if config.require_gpu and runs_locally(options):
        require_gpu()     # before any image is read (remote workers check when they load)
    reporter = None
    if runs_locally(options) and not args.no_progress:
        config.progress_dir = tempfile.mkdtemp(prefix="altbeam-progress-")
        reporter = ProgressReporter(config.progress_dir, args.progress_interval)
    print(f"altbeam: run {config.run_id}: model {model.name or model.path} "
          f"(version {model.version}, {model.image_size}px, {model.beam_width} beams), "
          f"catalog {config.catalog}", file=sys.stderr)
    start = time.monotonic()
    try:
        p = new_pipeline(options)
        build(p, config, model)
        if reporter:
            reporter.start()
        run_pipeline(p)
    finally:
        if reporter:
            reporter.stop()
        if config.progress_dir:
            shutil.rmtree(config.progress_dir, ignore_errors=True)
    summary = read_run_summary(config.catalog, config.run_id)
    summary["wall_seconds"] = round(time.monotonic() - start, 3)
    if config.writeback is not None:
        counts: dict[str, int] = {}
        for d in read_table_rows(config.catalog, "writeback"):
            if d["run_id"] == config.run_id:
                counts[d["action"]] = counts.get(d["action"], 0) + 1
        summary["writeback"] = counts
    processed = summary["captioned"] + summary["no_caption"] + summary["skipped_unchanged"]
    summary["exit_code"] = 0 if processed > 0 else 1
    return summary


def format_summary(s: dict) -> str:
    return (f"altbeam: run {s['run_id']} done in {s['wall_seconds']:.1f}s: "
            f"captioned {s['captioned']}{status_phrase(s.get('statuses'))}, "
            + (f"no caption {s['no_caption']} (too small or blank), "
               if s.get("no_caption") else "")
            + f"skipped unchanged {s['skipped_unchanged']}, "
            f"failed {s['failed']}, {s['images_per_second']:.2f} images/s"
            + (f"; failures are listed in {s['catalog']}/errors/" if s["failed"] else "")
            + skipped_phrase(s.get("skipped_not_images"), "that are not images",
                             "that is not an image")
            + skipped_phrase(s.get("skipped_not_in_extensions"), "not in --extensions",
                             "not in --extensions")
            + ("; metadata: " + ", ".join(f"{k} {s['writeback'].get(k, 0)}" for k in
                                          ("written", "skipped", "failed"))
               + f" (see {s['catalog']}/writeback/)" if "writeback" in s else ""))


def status_phrase(statuses: dict | None) -> str:
    """E.g. ' (ok 9, unsure 4, contradicted 5)': how the caption gate judged the captions
    ('' when nothing was captioned). Only `ok` captions are written back by default."""
    judged = [(s, (statuses or {}).get(s, 0)) for s in CAPTIONED]
    if not sum(n for _, n in judged):
        return ""
    return " (" + ", ".join(f"{s} {n}" for s, n in judged) + ")"


def skipped_phrase(counts: dict | None, many: str, one: str) -> str:
    """E.g. '; skipped 3 files that are not images: .mp3 ×1, .pdf ×1, .txt ×1' ('' if none)."""
    total = sum((counts or {}).values())
    if not total:
        return ""
    by_extension = ", ".join(f"{ext} ×{n}" for ext, n in sorted(counts.items()))
    what = f"1 file {one}" if total == 1 else f"{total} files {many}"
    return f"; skipped {what}: {by_extension}"


def main(argv: list[str] | None = None) -> int:
    """CLI entry (`altbeam caption`): 0 done, 1 nothing processed / pipeline failed, 2 usage."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        summary = run(argv)
    except CaptionUsageError as e:
        print(f"altbeam caption: {e}", file=sys.stderr)
        return 2
    except NoGpuError as e:
        print(f"altbeam caption: {e}", file=sys.stderr)
        return 1
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
