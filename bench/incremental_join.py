"""Peak memory of the incremental caption run's join with the catalog, old vs new.

The caption job reads the catalog's latest row per uri (ReadCatalogIndex + AddOwnWrites)
and decides each listed file against it (listing_decision). Two ways to bring the two
together, measured side by side:

* ``side_input``: the index as a dict side input of the listing's DoFn (the way it was
  done before; re-implemented here for the comparison): every worker holds the whole
  index;
* ``shuffle``: CoGroupByKey by uri (``JoinCatalogIndex`` + ``SkipUnchanged``, what the
  caption job runs now): a worker holds one uri's group at a time.

For each catalog size N a synthetic catalog is written with pyarrow in the catalog's
layout (``CATALOG/catalog/run-bench-SSSSS-of-NNNNN.parquet``, CATALOG_SCHEMA, zstd,
100,000 rows a shard), and a listing of ``--listing`` files is decided against it:
70% catalogued and unchanged, 10% catalogued but changed (size differs), 20% new.
Each (mode, N) runs in a fresh interpreter on the local runner; reported: wall time,
the RSS after imports and graph construction (baseline), the peak RSS of the largest
process (``wait4``'s ``ru_maxrss``) and of the whole process tree (sampled), and the
decision counts (both modes must agree). A configuration past ``--timeout`` is killed
and reported as such.

    .venv/bin/python bench/incremental_join.py --catalogued 10000,100000,1000000

Unknown flags go to Beam (e.g. ``--direct_running_mode multi_processing
--direct_num_workers 2``: the DoFns then run in worker processes, and the largest
process is the one holding the most).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import _common as bc  # noqa: E402

MODES = ("side_input", "shuffle")
ROWS_PER_SHARD = 100_000
MTIME_US = 1_767_225_600_000_000            # 2026-01-01T00:00:00Z
SIZE_BYTES = 250_000


def uri_of(i: int) -> str:
    return f"/archive/photos/{i // 1000:05d}/{i:09d}.jpg"


# -- the synthetic catalog and listing ------------------------------------------------------
def write_catalog(catalog: str, n: int) -> None:
    """n catalogued images, one row each, in the catalog's shard layout."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from altbeam.pipelines.catalog.layout import SHARD_SUFFIX, shard_prefix
    from altbeam.schemas import CATALOG_SCHEMA

    shards = max(1, -(-n // ROWS_PER_SHARD))
    prefix = shard_prefix(catalog, "catalog", "bench")
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    for s in range(shards):
        ids = range(s * ROWS_PER_SHARD, min(n, (s + 1) * ROWS_PER_SHARD))
        rows = len(ids)
        known = {
            "uri": pa.array([uri_of(i) for i in ids], pa.string()),
            "sha256": pa.array([f"{i:064x}" for i in ids], pa.string()),
            "size_bytes": pa.array([SIZE_BYTES] * rows, pa.int64()),
            "mtime": pa.array([MTIME_US] * rows, pa.int64()).cast(
                CATALOG_SCHEMA.field("mtime").type),
            "caption": pa.array([f"a photo number {i}" for i in ids], pa.string()),
            "run_id": pa.array(["bench"] * rows, pa.string()),
            "processed_at": pa.array([MTIME_US] * rows, pa.int64()).cast(
                CATALOG_SCHEMA.field("processed_at").type),
        }
        columns = [known.get(f.name, pa.nulls(rows, f.type)) for f in CATALOG_SCHEMA]
        pq.write_table(pa.Table.from_arrays(columns, schema=CATALOG_SCHEMA),
                       f"{prefix}-{s:05d}-of-{shards:05d}{SHARD_SUFFIX}", compression="zstd")


def listing(n_catalogued: int, n_files: int) -> tuple[list, dict]:
    """The listed FileRecords and the decisions they must get."""
    from altbeam.pipelines.caption.sources import FileRecord

    unchanged, changed = n_files * 7 // 10, n_files // 10
    new = n_files - unchanged - changed
    step = max(1, n_catalogued // (unchanged + changed))
    catalogued = [uri_of(i * step) for i in range(unchanged + changed)]
    records = ([FileRecord(u, SIZE_BYTES, MTIME_US) for u in catalogued[:unchanged]]
               + [FileRecord(u, SIZE_BYTES + 1, MTIME_US) for u in catalogued[unchanged:]]
               + [FileRecord(uri_of(n_catalogued + i), SIZE_BYTES, MTIME_US)
                  for i in range(new)])
    return records, {"unchanged": unchanged, "todo": changed + new}


# -- one configuration, in the child interpreter ------------------------------------------
def child(mode: str, catalog: str, n_catalogued: int, n_files: int, beam_flags: list[str],
          result_path: str) -> None:
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    from altbeam.pipelines.caption import incremental as inc
    from altbeam.pipelines.runtime.runner import new_pipeline

    held = beam.metrics.Metrics.distribution("bench", "held_bytes")

    class SkipUnchangedSideInput(beam.DoFn):
        """The join as it was: the whole index as a dict side input of every worker."""

        def start_bundle(self):
            self._sized = False

        def process(self, record, index):
            if not self._sized:    # what this DoFn holds: the whole index, once a bundle
                held.update(deep_size(index))
                self._sized = True
            entry = index.get(record.uri)
            decision = inc.listing_decision(record, entry)
            if decision == inc.UNCHANGED:
                yield beam.pvalue.TaggedOutput("unchanged", record.uri)
            else:
                yield record if decision == inc.NEW else inc.to_confirm(record, entry)

    def count(name):
        return beam.Map(lambda x: beam.metrics.Metrics.counter("bench", name).inc())

    records, _ = listing(n_catalogued, n_files)
    p = new_pipeline(PipelineOptions(flags=beam_flags))
    files = p | "ListImages" >> beam.Create(records)
    index = (p
             | "ReadCatalogIndex" >> inc.ReadCatalogIndex(catalog)
             | "AddOwnWrites" >> inc.AddOwnWrites(catalog))
    if mode == "side_input":
        checked = files | "SkipUnchanged" >> beam.ParDo(
            SkipUnchangedSideInput(), index=beam.pvalue.AsDict(index)).with_outputs(
                "unchanged", main="todo")
    else:
        def sized(group):          # what the DoFn holds: one uri's group at a time
            held.update(deep_size(group))
            return group

        checked = ((files, index)
                   | "JoinCatalogIndex" >> inc.JoinCatalogIndex()
                   | "SizeGroup" >> beam.Map(sized)
                   | "SkipUnchanged" >> beam.ParDo(inc.SkipUnchanged()).with_outputs(
                       "unchanged", main="todo"))
    checked.todo | "CountTodo" >> count("todo")
    checked.unchanged | "CountUnchanged" >> count("unchanged")
    baseline_kb = rss_kb()
    start = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    wall = time.perf_counter() - start
    metrics = result.metrics().query(MetricsFilter().with_namespace("bench"))
    counts = {c.key.metric.name: c.committed for c in metrics["counters"]}
    held_max = max((d.committed.max for d in metrics["distributions"]), default=0)
    with open(result_path, "w", encoding="utf-8") as f:
        json.dump({"pipeline_seconds": wall, "baseline_rss_kb": baseline_kb,
                   "held_bytes": held_max,
                   "todo": counts.get("todo", 0), "unchanged": counts.get("unchanged", 0)}, f)


def deep_size(value) -> int:
    """Bytes of a value and everything it holds (dicts, lists, tuples, dataclasses,
    strings): what a DoFn keeps alive while it decides, without the interpreter's
    allocator slack."""
    import dataclasses

    seen, todo, total = set(), [value], 0
    while todo:
        v = todo.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        total += sys.getsizeof(v)
        if isinstance(v, dict):
            todo.extend(v.keys())
            todo.extend(v.values())
        elif isinstance(v, (list, tuple, set)):
            todo.extend(v)
        elif dataclasses.is_dataclass(v):
            todo.extend(getattr(v, f.name) for f in dataclasses.fields(v))
    return total


def rss_kb(pid: int | str = "self") -> int:
    """VmRSS of one process in KiB (0 once it has ended)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


# -- the parent: one fresh interpreter per configuration -----------------------------------
def measure(mode: str, catalog: str, n: int, n_files: int, beam_flags: list[str],
            timeout: float, poll: float) -> dict:
    result_path = os.path.join(tempfile.mkdtemp(prefix="altbeam-bench-join-"), "result.json")
    cmd = [sys.executable, __file__, "--child", mode, "--catalog", catalog,
           "--catalogued", str(n), "--listing", str(n_files), "--result", result_path,
           *beam_flags]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(bc.REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]))
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, cwd=bc.REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        peak_tree = peak_runner = peak_workers = 0
        usage, status = None, None
        while status is None:
            pid, code, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                status, usage = code, ru
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                os.wait4(proc.pid, 0)
                return {"mode": mode, "catalogued": n, "timed_out": True,
                        "wall_seconds": time.perf_counter() - start}
            runner, tree = rss_kb(proc.pid), bc._tree_rss_kb(proc.pid)
            peak_runner, peak_tree = max(peak_runner, runner), max(peak_tree, tree)
            peak_workers = max(peak_workers, tree - runner)   # SDK worker processes, if any
            time.sleep(poll)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            log.seek(0)
            raise SystemExit(f"{mode} at {n:,} failed:\n"
                             + log.read().decode("utf-8", "replace")[-3000:])
    with open(result_path, encoding="utf-8") as f:
        child_result = json.load(f)
    shutil.rmtree(os.path.dirname(result_path), ignore_errors=True)
    return {"mode": mode, "catalogued": n, "timed_out": False, "wall_seconds": wall,
            "max_rss_mib": usage.ru_maxrss / 1024, "peak_tree_rss_mib": peak_tree / 1024,
            "peak_runner_rss_mib": peak_runner / 1024, "peak_workers_rss_mib": peak_workers / 1024,
            "baseline_rss_mib": child_result["baseline_rss_kb"] / 1024,
            "pipeline_seconds": child_result["pipeline_seconds"],
            "held_kib": child_result["held_bytes"] / 1024,
            "todo": child_result["todo"], "unchanged": child_result["unchanged"]}


def report(runs: list[dict], expected: dict, env: dict, command: str, args,
           beam_flags: list[str]) -> str:
    rows = []
    for r in runs:
        if r["timed_out"]:
            rows.append([f"{r['catalogued']:,}", r["mode"], f"> {args.timeout:.0f}",
                         *["-"] * 6, "timed out"])
            continue
        agrees = (r["todo"], r["unchanged"]) == (expected["todo"], expected["unchanged"])
        workers = r["peak_workers_rss_mib"] if "multi_processing" in beam_flags else "-"
        rows.append([f"{r['catalogued']:,}", r["mode"], r["wall_seconds"], f"{r['held_kib']:,.1f}",
                     r["baseline_rss_mib"], r["max_rss_mib"], r["peak_runner_rss_mib"],
                     workers, r["peak_tree_rss_mib"],
                     f"{r['todo']}/{r['unchanged']}" + ("" if agrees else " WRONG")])
    return "\n".join([
        bc.header("incremental join with the catalog: peak memory, side input vs shuffle",
                  env, command),
        f"listing:  {args.listing:,} files ({expected['unchanged']} unchanged, "
        f"{expected['todo']} to caption); beam flags: {' '.join(beam_flags) or '(none)'}",
        "",
        bc.table(["catalogued", "join", "wall s", "held by the DoFn KiB", "baseline MiB",
                  "peak MiB (largest process)", "runner peak MiB", "workers peak MiB",
                  "tree peak MiB", "todo/unchanged"], rows, "llrrrrrrrr"),
        "",
        "held by the DoFn: the most the deciding step keeps alive at once (side input: "
        "the whole index dict, on every worker; shuffle: one uri's group); "
        "baseline: the pipeline process after imports and graph construction; largest "
        "process: wait4 ru_maxrss; runner, workers (SDK worker processes, multi_processing "
        f"only) and tree: sampled every {args.poll} s.",
    ])


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalogued", type=bc.int_list, default=[10_000, 100_000, 1_000_000],
                    help="catalog sizes, e.g. 10000,100000,1000000")
    ap.add_argument("--listing", type=int, default=1000, help="files listed by the run")
    ap.add_argument("--modes", default=",".join(MODES), help="side_input,shuffle")
    ap.add_argument("--timeout", type=float, default=600.0,
                    help="seconds one configuration may run before it is killed")
    ap.add_argument("--poll", type=float, default=0.2, help="process-tree RSS sample interval")
    ap.add_argument("--json", help="write the raw figures here")
    ap.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--catalog", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    return ap.parse_known_args(argv)


def main(argv=None) -> int:
    args, beam_flags = parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        child(args.child, args.catalog, args.catalogued[0], args.listing, beam_flags,
              args.result)
        return 0
    if args.catalogued[0] < args.listing:   # the listing's catalogued files must exist
        raise SystemExit("--catalogued: each catalog must hold at least --listing images")
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= set(MODES) or not modes:
        raise SystemExit(f"--modes: choose from {', '.join(MODES)}")
    env = bc.environment()
    command = bc.command_line(None if argv is None else [sys.argv[0], *argv])
    work = pathlib.Path(tempfile.mkdtemp(prefix="altbeam-bench-join-"))
    runs = []
    try:
        for n in args.catalogued:
            catalog = str(work / f"catalog-{n}")
            with bc.Stopwatch() as written:
                write_catalog(catalog, n)
            print(f"catalog of {n:,} written in {written.seconds:.1f} s", file=sys.stderr)
            for mode in modes:
                runs.append(measure(mode, catalog, n, args.listing, beam_flags,
                                    args.timeout, args.poll))
                print(f"  {mode}: {runs[-1]['wall_seconds']:.1f} s", file=sys.stderr)
            shutil.rmtree(catalog, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _, expected = listing(max(args.catalogued), args.listing)
    print(report(runs, expected, env, command, args, beam_flags))
    bc.write_json(args.json, {"benchmark": "incremental_join", "environment": env,
                              "command": command, "listing": args.listing,
                              "expected": expected, "beam_flags": beam_flags, "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
