"""`altbeam report CATALOG --out report.html`: the catalog as one static HTML page.

Thumbnails (small inline JPEGs) with the best caption as their alt text, its caption
status and keywords, alternatives and scores, unresolved errors with their reasons,
writeback counts and a run summary with images per caption status.
The page is self-contained (no network), paginates client-side, and keeps to a size
budget (``--max-mb``): past it, cards show a placeholder instead of a thumbnail.
``--attention`` adds per-word attention heatmaps (pipelines/report/attention.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

import duckdb

from altbeam.pipelines.catalog.api import CatalogError, connect
from altbeam.pipelines.report.attention import ModelUnusable, attention_fragments
from altbeam.pipelines.report.html import ReportData, render
from altbeam.pipelines.report.thumbs import fit_side, make_thumbnails

IMAGE_COLUMNS = ("uri, caption, score, captions, scores, model_version, capture_time, "
                 "camera_make, camera_model, existing_alt_text, caption_status, objects, "
                 "keywords, keyword_scores")

# Latest error per uri that no later catalog row superseded (fixed by a re-run).
UNRESOLVED_ERRORS_SQL = """
SELECT e.uri, e.stage, e.error_type, e.message, e.run_id, e.occurred_at
FROM errors e
WHERE NOT EXISTS (SELECT 1 FROM catalog c WHERE c.uri = e.uri
                  AND c.processed_at >= e.occurred_at)
QUALIFY row_number() OVER (PARTITION BY e.uri ORDER BY e.occurred_at DESC) = 1
ORDER BY e.occurred_at DESC, e.uri
"""

# One row per run, from the shards themselves, joined to run summaries where present.
RUNS_SQL = """
WITH rows AS (
    SELECT run_id, count(*) AS images, max(processed_at) AS finished,
           string_agg(DISTINCT model_version, ', ') AS model_version
    FROM catalog_history GROUP BY run_id),
errs AS (SELECT run_id, count(*) AS errors FROM errors GROUP BY run_id),
ids AS (SELECT run_id FROM rows UNION SELECT run_id FROM errs UNION SELECT run_id FROM runs)
SELECT ids.run_id,
       coalesce(s.model_version, rows.model_version) AS model_version,
       coalesce(s.captioned, rows.images, 0) AS images,
       coalesce(s.failed, errs.errors, 0) AS errors,
       s.seconds,
       coalesce(s.images_per_second,
                CASE WHEN s.seconds > 0 THEN coalesce(s.captioned, rows.images) / s.seconds
                END) AS images_per_second,
       CAST(rows.finished AS VARCHAR) AS finished
FROM ids LEFT JOIN rows USING (run_id) LEFT JOIN errs USING (run_id)
LEFT JOIN runs s USING (run_id)
ORDER BY rows.finished NULLS LAST, ids.run_id
"""


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> list[dict]:
    return con.sql(sql, params=params).to_arrow_table().to_pylist()


def gather(catalog: str, *, max_images: int = 10000, max_errors: int = 1000,
           thumb_side: int = 160, budget_bytes: int | None = 20 << 20,
           page_size: int = 60, attention: bool = False,
           model: str | None = None) -> ReportData:
    """Everything the page shows, read from the catalog at ``catalog``; with
    ``attention``, heatmaps from ``model`` (default: the latest run's, else the bundled
    one), which then share the size budget half and half with the thumbnails."""
    con = connect(catalog, locked=True)
    total = con.sql("SELECT count(*) FROM catalog").fetchall()[0][0]
    images = _rows(con, f"SELECT {IMAGE_COLUMNS} FROM catalog ORDER BY uri LIMIT $n",
                   {"n": max_images})
    # Many images: smaller thumbnails first, placeholders only past the budget.
    thumb_budget = budget_bytes // 2 if attention and budget_bytes is not None else budget_bytes
    side = fit_side(len(images), thumb_budget, thumb_side)
    thumbs = make_thumbnails([r["uri"] for r in images], side, thumb_budget)
    heatmaps, attention_note = None, None
    if attention:
        summaries = [json.loads(s) for (s,) in con.sql("SELECT summary FROM runs").fetchall()]
        left = None if budget_bytes is None else budget_bytes - sum(t.size for t in thumbs)
        heatmaps, attention_note = attention_fragments(images, model, summaries, left)
    errors = _rows(con, UNRESOLVED_ERRORS_SQL)
    writeback = _rows(con, "SELECT action, count(*) AS n FROM writeback "
                           "GROUP BY action ORDER BY n DESC, action")
    runs = _rows(con, RUNS_SQL)
    headline = con.sql("""
        SELECT count(*) AS images,
               count(*) FILTER (WHERE nullif(trim(existing_alt_text), '') IS NULL),
               count(DISTINCT model_version), median(score)
        FROM catalog""").fetchall()[0]
    rates = [r["images_per_second"] for r in runs if r["images_per_second"]]
    models = [r[0] for r in con.sql("SELECT DISTINCT model_version FROM catalog "
                                    "WHERE model_version IS NOT NULL ORDER BY 1").fetchall()]
    stats = {
        "images catalogued": headline[0],
        "without alt text in the file": headline[1],
        "unresolved errors": len(errors),
        "runs": len(runs),
        "median caption score": headline[3],
        "latest throughput (images/s)": rates[-1] if rates else None,
        "model version" + ("s" if len(models) != 1 else ""): ", ".join(models) or None,
    }
    return ReportData(
        catalog=catalog, generated_at=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        images=images, thumbnails=thumbs, total_images=total, stats=stats, runs=runs,
        errors=errors[:max_errors], total_errors=len(errors), writeback=writeback,
        page_size=page_size, heatmaps=heatmaps, attention_note=attention_note,
        statuses=_rows(con, "SELECT status, images, meaning FROM statuses"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="altbeam report",
        description="Render a catalog as one self-contained HTML page (thumbnails, "
                    "captions, errors, run summary).")
    parser.add_argument("catalog", help="catalog folder (local path or gs://…)")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--max-images", type=int, default=10000,
                        help="most images on the page, by file name (default 10000)")
    parser.add_argument("--max-mb", type=float, default=20.0,
                        help="thumbnail budget in MB; later images get a placeholder "
                             "(default 20)")
    parser.add_argument("--thumb-size", type=int, default=160,
                        help="largest thumbnail side in pixels (default 160; smaller "
                             "when many images must fit --max-mb)")
    parser.add_argument("--page-size", type=int, default=60,
                        help="images per page in the browser (default 60)")
    parser.add_argument("--attention", action="store_true",
                        help="add per-word attention heatmaps of the best caption (runs "
                             "the model's caption_with_attention signature on every image "
                             "shown; heatmaps get half of --max-mb)")
    parser.add_argument("--model", default=None,
                        help="SavedModel for --attention (default: the latest run's model "
                             "when it is still there, else the bundled model)")
    args = parser.parse_args(argv)
    if args.model and not args.attention:
        parser.error("--model is only used with --attention")
    for name in ("max_images", "thumb_size", "page_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        data = gather(args.catalog, max_images=args.max_images, thumb_side=args.thumb_size,
                      budget_bytes=int(args.max_mb * (1 << 20)), page_size=args.page_size,
                      attention=args.attention, model=args.model)
        page = render(data)
        tmp = args.out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, args.out)
    except ModelUnusable as exc:
        print(f"altbeam report: {exc}", file=sys.stderr)
        return 2
    except CatalogError as exc:
        print(f"altbeam report: {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:
        print(f"altbeam report: cannot read catalog {args.catalog}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"altbeam report: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    placeholders = sum(1 for t in data.thumbnails if not t.data_uri)
    print(f"altbeam report: wrote {args.out} ({len(page) / 1e6:.1f} MB, "
          f"{len(data.images)} images, {placeholders} without thumbnail, "
          f"{len(data.errors)} errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
