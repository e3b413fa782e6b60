"""`altbeam query` (read-only SQL) and `altbeam search` (caption keywords) over a catalog.

Both open the catalog through :func:`altbeam.pipelines.catalog.api.connect` with ``locked=True``:
DuckDB may then read only the catalog's own shard files, and its configuration is
locked. On top of that, ``query`` accepts a single SELECT (``WITH … SELECT``,
``DESCRIBE``, ``SUMMARIZE``, ``EXPLAIN`` included) and nothing else, so ``COPY``,
``ATTACH``, ``INSTALL``, ``LOAD``, ``SET`` and DDL are refused before they reach DuckDB.
Results are written by Python (``--format``/``--out``), never by ``COPY … TO``.

``query`` without SQL lists the catalog (`LISTING_SQL`: file, caption status, caption,
keywords); ``--status`` keeps only the images whose latest caption has those statuses,
for that listing and for any SQL over the ``catalog`` view.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

import duckdb

from altbeam.pipelines.catalog.api import NOT_JUDGED, CatalogError, connect, parse_statuses
from altbeam.pipelines.query.output import FORMATS, write_result
from altbeam.pipelines.query.search import SearchFilters, search
from altbeam.pipelines.runtime.uris import is_remote, local_path
from altbeam.schemas.catalog import TABLES

ALLOWED_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
# What `altbeam query CATALOG` shows without SQL: narrow enough for a terminal.
LISTING_SQL = "SELECT uri, caption_status, caption, keywords FROM catalog ORDER BY uri"


class QueryRefused(ValueError):
    """The SQL is not a single read-only statement."""


def check_read_only(sql: str) -> None:
    """Raise QueryRefused unless ``sql`` is exactly one SELECT/EXPLAIN statement.

    DuckDB's own parser decides (so comments, quoting and case cannot fool it); a
    syntax error surfaces as ``duckdb.ParserException``.
    """
    statements = duckdb.extract_statements(sql)
    if not statements:
        raise QueryRefused("no SQL statement given")
    if len(statements) > 1:
        raise QueryRefused(f"one statement at a time: got {len(statements)} "
                           "(altbeam query runs a single read-only SELECT)")
    kind = statements[0].type
    if kind not in ALLOWED_STATEMENTS:
        words = statements[0].query.split()
        verb = words[0].upper() if words else kind.name
        raise QueryRefused(f"altbeam query is read-only: {verb} statements are not "
                           "allowed (only SELECT / WITH … SELECT / DESCRIBE / EXPLAIN)")
    if kind == duckdb.StatementType.EXPLAIN:
        # EXPLAIN ANALYZE runs the statement it explains: that one must be a SELECT too.
        inner = _explained(statements[0].query)
        inner_kinds = [s.type for s in duckdb.extract_statements(inner)] if inner else []
        if inner_kinds != [duckdb.StatementType.SELECT]:
            words = inner.split()
            verb = words[0].upper() if words else "nothing"
            raise QueryRefused(f"altbeam query is read-only: EXPLAIN of {verb} is not "
                               "allowed (only EXPLAIN [ANALYZE] SELECT …)")


def _explained(sql: str) -> str:
    """The statement an EXPLAIN statement explains (past EXPLAIN, ANALYZE, (options))."""
    tokens = [p for p, t in duckdb.tokenize(sql) if t != duckdb.token_type.comment]
    i = 1                                           # tokens[0] is EXPLAIN
    if i < len(tokens) and sql[tokens[i]:tokens[i] + 7].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i < len(tokens) and sql[tokens[i]] == "(":   # EXPLAIN (FORMAT json, ANALYZE) …
        depth = 0
        while i < len(tokens):
            ch = sql[tokens[i]]
            depth += (ch == "(") - (ch == ")")
            i += 1
            if depth == 0:
                break
    return sql[tokens[i]:] if i < len(tokens) else ""


def _check_out(out: str | None, catalog: str) -> None:
    """Refuse an output file inside the catalog's table folders (it would join a table)."""
    if out is None or is_remote(catalog):
        return
    target = os.path.realpath(out)
    for table in (*TABLES, "runs"):
        folder = os.path.realpath(os.path.join(local_path(catalog), table))
        if os.path.commonpath([target, folder]) == folder:
            raise ValueError(f"--out {out} is inside the catalog's {table}/ folder; "
                             "altbeam query never writes into the catalog")


def _output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="table (aligned text, the default), csv, json or parquet")
    parser.add_argument("--out", metavar="FILE",
                        help="write the result to FILE instead of stdout")
    parser.add_argument("--max-rows", type=int, default=1000, metavar="N",
                        help="rows shown by --format table on a terminal (default 1000)")


def _statuses(text: str) -> list[str]:
    try:
        return parse_statuses(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _status_arg(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--status", type=_statuses, metavar="STATUS[,STATUS]",
                        help=f"only {what} whose caption status is one of these: ok, unsure, "
                             f"contradicted, too_small, blank, or {NOT_JUDGED} (rows written "
                             "before the caption gate)")


def _fail(command: str, message: str, status: int = 1) -> int:
    print(f"altbeam {command}: {message}", file=sys.stderr)
    return status


def main_query(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="altbeam query",
        description="Run one read-only SQL SELECT (DuckDB) over a catalog. Views: catalog "
                    "(latest row per uri), catalog_history (all rows), errors, writeback, "
                    "runs, skipped, statuses (images per caption status). Without SQL: "
                    "each image's file, caption status, caption and keywords. "
                    "See docs/query.md.")
    parser.add_argument("catalog", help="catalog folder (local path or gs://…)")
    parser.add_argument("sql", nargs="?", default=LISTING_SQL,
                        help='e.g. "SELECT uri, caption FROM catalog LIMIT 5" (default: '
                             "list uri, caption_status, caption, keywords)")
    parser.add_argument("--all-runs", action="store_true",
                        help="the catalog view holds every run's rows, not only the latest")
    _status_arg(parser, "images (the catalog view's rows)")
    _output_args(parser)
    # intermixed: options may come between CATALOG and the optional SQL.
    args = parser.parse_intermixed_args(argv)
    try:
        check_read_only(args.sql)
        _check_out(args.out, args.catalog)
        con = connect(args.catalog, all_runs=args.all_runs, locked=True, statuses=args.status)
        result = con.sql(args.sql).to_arrow_table()
        write_result(result, args.format, args.out, args.max_rows)
    except QueryRefused as exc:
        return _fail("query", f"refused: {exc}", 2)
    except CatalogError as exc:
        return _fail("query", str(exc))
    except duckdb.Error as exc:
        return _fail("query", f"SQL error: {exc}")
    except (OSError, ValueError) as exc:
        return _fail("query", str(exc))
    return 0


def _date(text: str) -> dt.datetime:
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None


def main_search(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="altbeam search",
        description="Rank catalogued images by how well their captions and keywords match "
                    "the words (BM25 over the best caption, half-weighted alternatives and "
                    "the keywords); each hit shows its caption status and whether it "
                    "matched on keywords only.")
    parser.add_argument("catalog", help="catalog folder (local path or gs://…)")
    parser.add_argument("words", nargs="+", help="words to look for in captions and keywords")
    parser.add_argument("--limit", type=int, default=20, help="most results (default 20)")
    parser.add_argument("--min-score", type=float, metavar="X",
                        help="only results with relevance >= X")
    parser.add_argument("--min-caption-score", type=float, metavar="X",
                        help="only images whose best caption's model score is >= X")
    parser.add_argument("--since", type=_date, metavar="DATE",
                        help="only photos taken (EXIF date, else file time) on/after DATE")
    parser.add_argument("--camera", metavar="TEXT",
                        help="only photos whose camera make/model contains TEXT")
    parser.add_argument("--missing-alt-text", action="store_true",
                        help="only photos without alt text already in the file")
    _status_arg(parser, "hits")
    _output_args(parser)
    args = parser.parse_args(argv)
    if args.limit < 1:
        parser.error("--limit must be at least 1")
    filters = SearchFilters(min_score=args.min_score, min_caption_score=args.min_caption_score,
                            since=args.since, camera=args.camera,
                            missing_alt_text=args.missing_alt_text, statuses=args.status,
                            limit=args.limit)
    try:
        _check_out(args.out, args.catalog)
        con = connect(args.catalog, locked=True)
        result = search(con, args.words, filters)
        write_result(result, args.format, args.out, args.max_rows)
    except CatalogError as exc:
        return _fail("search", str(exc))
    except duckdb.Error as exc:
        return _fail("search", f"query failed: {exc}")
    except (OSError, ValueError) as exc:
        return _fail("search", str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main_query())
