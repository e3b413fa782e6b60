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
``statuses``         images per caption status in ``catalog``: status, images, meaning
                     (every status of the gate, 0 when none; ``not_judged`` for rows
                     written before the gate, when there are any)

A missing or empty table folder gives an empty view typed from the schema, so queries
never fail because a run had, say, no errors. Every table view has all of its schema's
columns, whatever version wrote the shards: a column a shard lacks (a version-1 shard
has no ``caption_status``, ``keywords`` …) reads as null.

``connect(path, statuses=[...])`` keeps in ``catalog`` only the latest rows with those
caption statuses (``not_judged``: a null status); see :func:`parse_statuses`.

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

from altbeam.model.serving.caption_status import (
    BLANK,
    CONTRADICTED,
    OK,
    STATUSES,
    TOO_SMALL,
    UNSURE,
)
from altbeam.pipelines.catalog.layout import LATEST_ORDER_SQL, run_summaries_glob, shard_glob
from altbeam.pipelines.runtime.uris import is_remote, local_path
from altbeam.schemas.catalog import TABLES, table_dir

VIEWS = ("catalog", "catalog_history", "errors", "writeback", "runs", "skipped", "statuses")
# A null caption_status: a row written before the caption gate (a version-1 shard).
NOT_JUDGED = "not_judged"
# What each status means to a reader: the `statuses` view, the report's badges.
STATUS_MEANINGS = {
    OK: "trusted: nothing the model sees disagrees with this caption",
    UNSURE: "not trusted: the model is not sure of this caption",
    CONTRADICTED: "not trusted: what the model sees contradicts this caption",
    TOO_SMALL: "no caption: image too small",
    BLANK: "no caption: image blank (nearly uniform)",
    NOT_JUDGED: "not judged: written before the caption gate",
}
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


def _sql_list(items: list[str]) -> str:
    # Paths are our own glob results, statuses checked words, but quote them properly anyway.
    return "[" + ", ".join("'" + f.replace("'", "''") + "'" for f in items) + "]"


def status_label_sql(column: str = "caption_status") -> str:
    """SQL for a row's status as `--status` names it (``not_judged`` for null)."""
    return f"coalesce({column}, '{NOT_JUDGED}')"


def parse_statuses(text: str) -> list[str]:
    """``"unsure,contradicted"`` -> ``["unsure", "contradicted"]``; ValueError naming the
    known statuses for anything else (``not_judged`` selects rows without a status)."""
    known = (*STATUSES, NOT_JUDGED)
    wanted = [w.strip().lower() for w in text.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in known]
    if unknown or not wanted:
        raise ValueError(f"unknown caption status {', '.join(unknown) or repr(text)}; "
                         f"expected one or more of {', '.join(known)} (comma-separated)")
    return list(dict.fromkeys(wanted))


def _statuses_table() -> pa.Table:
    labels = [*STATUSES, NOT_JUDGED]
    return pa.table({"status": labels, "position": list(range(len(labels))),
                     "meaning": [STATUS_MEANINGS[s] for s in labels]})


# Every gate status (0 images when none), not_judged only when some rows have no status,
# and any status this version does not know (a newer writer's), by name.
STATUSES_VIEW_SQL = f"""
CREATE VIEW statuses AS
WITH counts AS (SELECT {status_label_sql()} AS status, count(*) AS images
                FROM catalog GROUP BY 1)
SELECT status, coalesce(c.images, 0) AS images,
       coalesce(k.meaning, 'unknown status') AS meaning
FROM _status_meanings k FULL JOIN counts c USING (status)
WHERE status <> '{NOT_JUDGED}' OR c.images > 0
ORDER BY k.position NULLS LAST, status
"""


def connect(path: str, *, all_runs: bool = False, locked: bool = False,
            statuses: list[str] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the catalog's views registered.

    ``statuses`` (checked words, see :func:`parse_statuses`) keeps only the ``catalog``
    rows with those caption statuses: the latest row of each image, then filtered.

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
        # The schema's empty table first: its columns, in its order, whatever the shards
        # hold (an older version's shards lack the newer columns: null there).
        con.register(f"_empty_{table}", schema.empty_table())
        shards = ""
        if files:
            allowed += files
            shards = (" UNION ALL BY NAME SELECT * FROM read_parquet("
                      f"{_sql_list(files)}, union_by_name = true)")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM _empty_{table}{shards}")
    summaries = read_run_summaries(local)
    con.register("_runs", _runs_table(summaries))
    con.execute("CREATE VIEW runs AS SELECT * FROM _runs")
    con.register("_skipped", _skipped_table(summaries))
    con.execute("CREATE VIEW skipped AS SELECT * FROM _skipped")
    rows = "catalog_history"
    if not all_runs:
        rows = ("(SELECT * FROM catalog_history QUALIFY row_number() OVER "
                f"(PARTITION BY uri ORDER BY {LATEST_ORDER_SQL}) = 1)")
    where = ""
    if statuses is not None:
        where = f" WHERE list_contains({_sql_list(parse_statuses(','.join(statuses)))}, " \
                f"{status_label_sql()})"
    con.execute(f"CREATE VIEW catalog AS SELECT * FROM {rows}{where}")
    con.register("_status_meanings", _statuses_table())
    con.execute(STATUSES_VIEW_SQL)
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
