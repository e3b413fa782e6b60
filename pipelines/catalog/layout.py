"""Where a catalog keeps its files, which run ids may name them, and which row is current.

The one definition of each, used by the Beam jobs (caption, writeback), the DuckDB
views (:mod:`altbeam.pipelines.catalog.api`) and the CLI:

* shards: ``CATALOG/<table>/run-<run_id>-SSSSS-of-NNNNN.parquet`` (``shard_prefix`` +
  Beam's shard name + ``SHARD_SUFFIX``); ``shard_glob`` matches only finalized ones,
  never Beam's ``beam-temp-*`` leftovers of a killed run;
* run summaries: ``CATALOG/runs/<run_id>.json``;
* run ids: ``check_run_id`` (they name files, so they cannot name one outside the catalog);
* the current row of an image: the latest row per ``uri`` by ``LATEST_BY``.

Nothing heavy is imported at the top: the CLI imports this module before it knows
whether Beam is needed.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from altbeam.schemas.catalog import table_dir, table_prefix

SHARD_SUFFIX = ".parquet"
SHARD_GLOB = "run-*" + SHARD_SUFFIX        # the file names shard_prefix + Beam produce

# Run ids name files (CATALOG/<table>/run-<id>-….parquet, CATALOG/runs/<id>.json), so
# they may hold no path separator and no "..": a crafted id cannot leave the catalog.
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

# The latest row per uri: the newest processed_at; on a tie, the greater run_id (default
# run ids start with their UTC start time: the later run). Both columns are
# non-null in CATALOG_SCHEMA. latest_key (Beam) and LATEST_ORDER_SQL (DuckDB) are
# both built from this tuple, so the two readers cannot disagree.
LATEST_BY = ("processed_at", "run_id")
LATEST_ORDER_SQL = ", ".join(f"{column} DESC" for column in LATEST_BY)


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe as part of a file name; ValueError naming the rule if not.

    Every file a run writes into the catalog is named through `shard_prefix` or
    `run_summary_path`, which both call this, so a run id from the CLI, the Python API
    (CaptionConfig, WritebackOptions) or a caller's own pipeline always passes here.
    """
    if not RUN_ID.fullmatch(run_id or "") or ".." in run_id:
        raise ValueError(f"--run-id {run_id!r}: use 1-128 letters, digits, '_', '-' or "
                         "'.', starting with a letter or digit, without '..' (it names "
                         "the catalog's files)")
    return run_id


def shard_prefix(catalog: str, table: str, run_id: str) -> str:
    """``CATALOG/<table>/run-<run_id>``, the shard prefix of one run's output of a table."""
    return table_prefix(catalog, table, check_run_id(run_id))


def shard_glob(catalog: str, table: str) -> str:
    """``CATALOG/<table>/run-*.parquet``: every run's finalized shards of one table."""
    return f"{table_dir(catalog, table)}/{SHARD_GLOB}"


def run_summary_path(catalog: str, run_id: str) -> str:
    """``CATALOG/runs/<run_id>.json``."""
    return f"{table_dir(catalog, 'runs')}/{check_run_id(run_id)}.json"


def run_summaries_glob(catalog: str) -> str:
    return f"{table_dir(catalog, 'runs')}/*.json"


def finalized_shards(catalog: str, table: str = "catalog") -> list[str]:
    """Finalized Parquet shards of a table, sorted, on any Beam filesystem (empty if none)."""
    from apache_beam.io.filesystems import FileSystems  # slow import: only when listing

    try:
        return sorted(m.path for m in
                      FileSystems.match([shard_glob(catalog, table)])[0].metadata_list)
    except Exception:  # noqa: BLE001 - a missing catalog folder simply has no shards
        return []


def latest_key(row: Mapping) -> tuple:
    """Sort key of a catalog row: the greatest is the latest row of its uri."""
    return tuple(row[column] for column in LATEST_BY)


def latest_row(rows: Iterable[Mapping]) -> Mapping:
    """The latest of one uri's catalog rows (a ``CombinePerKey`` combiner)."""
    return max(rows, key=latest_key)
