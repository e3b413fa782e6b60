"""Read a catalog from Python: DuckDB views and a PyArrow dataset over its Parquet shards.

A catalog (see :mod:`altbeam.schemas.catalog`) is a folder of per-table shard folders plus run
summaries. This module finds the shards, and gives them to DuckDB as views:

``catalog``          the latest row per ``uri`` (newest ``processed_at``, then greatest
                     ``run_id``: :data:`altbeam.pipelines.catalog.layout.LATEST_BY`);
                     every row of every run when ``all_runs=True``
``catalog_history``  every row of every run, always
``errors``           one row per failed input, all runs
``writeback``        one row per writeback decision, all runs
``runs``             one row per ``runs/<run_id>.json`` summary (known keys as columns,
                     the whole summary as JSON text in ``summary``)
``skipped``          one row per listed file a caption run did not take because it is
                     not an image (or an XMP sidecar, or outside ``--extensions``):
                     uri, extension, reason, run_id (from the summaries'
                     ``skipped_files``)

A missing or empty table folder gives an empty view typed from the schema, so queries
never fail because a run had, say, no errors.

``gs://`` catalogs are copied to a local temporary folder first through Beam's
``FileSystems`` (the pipeline's own credentials path); DuckDB's ``httpfs`` extension is
not used because it must be downloaded at run time.

Notebook use::

    from altbeam.pipelines.catalog.api import open_catalog, connect
    open_catalog("catalog/").filter("existing_alt_text IS NULL").df()
    con = connect("catalog/"); con.sql("SELECT count(*) FROM errors").fetchall()
"""
from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import tempfile

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds

from altbeam.pipelines.catalog.layout import LATEST_ORDER_SQL, run_summaries_glob, shard_glob
from altbeam.pipelines.runtime.uris import is_remote, local_path
from altbeam.schemas.catalog import TABLES, table_dir

VIEWS = ("catalog", "catalog_history", "errors", "writeback", "runs", "skipped")
# Run summary keys promoted to columns of the `runs` view (others stay in `summary`).
RUN_KEYS = {"run_id": pa.string(), "model_version": pa.string(), "started_at": pa.string(),
            "finished_at": pa.string(), "captioned": pa.int64(), "failed": pa.int64(),
            "skipped_unchanged": pa.int64(), "seconds": pa.float64(), "images_per_second": pa.float64()}


class CatalogError(Exception):
    """The catalog cannot be read: missing, not a catalog, or unreadable (message says why)."""


def _stage_remote(path: str) -> str:
    """Copy a gs:// (or other Beam-readable) catalog's tables to a local temp folder."""
    from apache_beam.io.filesystems import FileSystems  # slow import: only when remote

    local = tempfile.mkdtemp(prefix="altbeam-catalog-")
    atexit.register(shutil.rmtree, local, True)
    found = False
    for table, pattern in ([(t, shard_glob(path, t)) for t in TABLES]
                           + [("runs", run_summaries_glob(path))]):
        try:
            matches = FileSystems.match([pattern])[0].metadata_list
        except Exception as exc:  # Beam raises BeamIOError with per-pattern causes
            raise CatalogError(f"cannot list {table_dir(path, table)}: {exc}") from exc
        os.makedirs(os.path.join(local, table), exist_ok=True)
        for meta in matches:
            found = True
            target = os.path.join(local, table, meta.path.rsplit("/", 1)[-1])
            with FileSystems.open(meta.path) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
    if not found:
        raise CatalogError(f"catalog not found: {path} holds no catalog/, errors/, "
                           "writeback/ shards or runs/ summaries")
    return local


def resolve(path: str) -> str:
    """A local folder holding the catalog at ``path`` (staged first when remote)."""
    if is_remote(path):
        return _stage_remote(path)
    path = local_path(path)
    if not os.path.exists(path):
        raise CatalogError(f"catalog not found: {path} (no such directory)")
    if not os.path.isdir(path):
        raise CatalogError(f"catalog not found: {path} is a file, expected a catalog folder")
    if not any(os.path.isdir(os.path.join(path, t)) for t in (*TABLES, "runs")):
        raise CatalogError(f"{path} is not an altbeam catalog: it has none of the folders "
                           "catalog/, errors/, writeback/, runs/")
    return path


def shard_files(local_catalog: str, table: str) -> list[str]:
    """Absolute paths of one table's Parquet shards, sorted (empty when none)."""
    return sorted(os.path.abspath(p) for p in glob.glob(shard_glob(local_catalog, table)))


def read_run_summaries(path: str) -> list[dict]:
    """Every ``runs/*.json`` summary as a dict (``run_id`` filled from the file name).

    Read defensively: the pipeline defines the keys; unreadable files are reported in
    the dict as ``{"run_id": ..., "error": "..."}`` rather than raised.
    """
    local = resolve(path)
    summaries = []
    for file in sorted(glob.glob(run_summaries_glob(local))):
        run_id = os.path.basename(file)[: -len(".json")]
        try:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict):
                raise ValueError("top level is not a JSON object")
        except (OSError, ValueError) as exc:
            data = {"error": f"unreadable run summary {file}: {exc}"}
        data.setdefault("run_id", run_id)
        summaries.append(data)
    return summaries


def _coerce(value, type_):
    try:
        if value is None:
            return None
        if pa.types.is_integer(type_):
            return int(value)
        if pa.types.is_floating(type_):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        return None


def _runs_table(summaries: list[dict]) -> pa.Table:
    columns = {k: pa.array([_coerce(s.get(k), t) for s in summaries], t)
               for k, t in RUN_KEYS.items()}
    columns["summary"] = pa.array([json.dumps(s, default=str, sort_keys=True)
                                   for s in summaries], pa.string())
    return pa.table(columns)


SKIPPED_SCHEMA = pa.schema([("uri", pa.string()), ("extension", pa.string()),
                            ("reason", pa.string()), ("run_id", pa.string())])


def _skipped_table(summaries: list[dict]) -> pa.Table:
    """Every run summary's ``skipped_files`` as rows (runs before them have none)."""
    rows = []
    for s in summaries:
        files = s.get("skipped_files")
        for f in files if isinstance(files, list) else []:
            if isinstance(f, dict):
                rows.append({"uri": _coerce(f.get("uri"), pa.string()),
                             "extension": _coerce(f.get("extension"), pa.string()),
                             "reason": _coerce(f.get("reason"), pa.string()),
                             "run_id": _coerce(s.get("run_id"), pa.string())})
    return pa.Table.from_pylist(rows, schema=SKIPPED_SCHEMA)


def _sql_list(files: list[str]) -> str:
    # Paths are our own glob results, but quote them properly anyway.
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "]"


def connect(path: str, *, all_runs: bool = False, locked: bool = False
            ) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views registered.

    ``locked=True`` (what ``altbeam query`` uses) then disables external access, so
    only the catalog's own shard files are readable and nothing can be written,
    attached, installed or loaded, and locks the configuration so that cannot be undone.
    """
    local = resolve(path)
    con = duckdb.connect(":memory:")
    allowed: list[str] = []
    for table, schema in TABLES.items():
        files = shard_files(local, table)
        name = "catalog_history" if table == "catalog" else table
        if files:
            allowed += files
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet("
                        f"{_sql_list(files)}, union_by_name = true)")
        else:
            con.register(f"_empty_{table}", schema.empty_table())
            con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{table}")
    summaries = read_run_summaries(local)
    con.register("_runs", _runs_table(summaries))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    con.register("_skipped", _skipped_table(summaries))
    con.execute("CREATE VIEW skipped AS SELECT * FROM _skipped")
    if all_runs:
        con.execute("CREATE VIEW catalog AS SELECT * FROM catalog_history")
    else:
        con.execute("CREATE VIEW catalog AS SELECT * FROM catalog_history QUALIFY "
                    f"row_number() OVER (PARTITION BY uri ORDER BY {LATEST_ORDER_SQL}) = 1")
    if locked:
        con.execute("SET allowed_paths = ?", [allowed])
        con.execute("SET autoinstall_known_extensions = false")
        con.execute("SET autoload_known_extensions = false")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    return con


def open_catalog(path: str, all_runs: bool = False) -> duckdb.DuckDBPyRelation:
    """The ``catalog`` view as a DuckDB relation (``.df()``, ``.arrow()``, ``.filter()`` …)."""
    return connect(path, all_runs=all_runs).table("catalog")


def catalog_dataset(path: str) -> ds.Dataset:
    """Every catalog row of every run as a PyArrow dataset typed by ``CATALOG_SCHEMA``."""
    from altbeam.schemas.catalog import CATALOG_SCHEMA

    files = shard_files(resolve(path), "catalog")
    if not files:
        return ds.dataset(CATALOG_SCHEMA.empty_table())
    return ds.dataset(files, schema=CATALOG_SCHEMA, format="parquet")
