"""`altbeam query` / `altbeam search` / the notebook API, on real Parquet shards."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import pathlib
import shutil

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from altbeam.pipelines.catalog.api import CatalogError, catalog_dataset, connect, open_catalog
from altbeam.pipelines.query import commands as query
from altbeam.pipelines.query.search import SearchFilters, search, tokenize
from altbeam.schemas.catalog import CATALOG_SCHEMA, ERRORS_SCHEMA, WRITEBACK_SCHEMA

pytest_plugins = ["tests.support.gcs_emulator"]

UTC = dt.UTC
CAPTIONS = [
    "a dog running on the beach", "a cat sitting on a couch", "a man riding a surfboard",
    "a red bus parked on the street", "two dogs playing in the grass", "a plate of food",
    "a kitchen with a wooden table", "a train at the station", "a bird on a branch",
    "a woman holding an umbrella", "a boat on the river", "a pizza on a table",
    "a horse in a field", "a clock tower in a city", "a person skiing down a hill",
    "an elephant walking", "a stop sign on a corner", "a laptop on a desk",
]


def make_catalog(root: pathlib.Path, photos: list[pathlib.Path], *, writeback: bool = False,
                 errors: bool = True, captions: list[str] | None = None) -> pathlib.Path:
    """A two-run catalog over ``photos``: run r1 captions all, r2 re-captions the first
    three with a newer model; one input fails for good, one failed in r1 and succeeded in r2."""
    captions = captions or CAPTIONS
    t1 = dt.datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    t2 = dt.datetime(2026, 2, 10, 12, 0, tzinfo=UTC)

    def row(i, photo, run, at, version, caption):
        alts = [caption, f"{caption} in the sun", "a blurry picture"]
        data = photo.read_bytes() if photo.exists() else b""   # may be gone since
        return dict(
            uri=str(photo), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data), mtime=dt.datetime(2020, 1, 1, tzinfo=UTC),
            width=640, height=480, format="JPEG", caption=caption, score=-0.5 - i / 10,
            captions=alts, scores=[-0.5 - i / 10, -1.0 - i / 10, -3.0],
            model_version=version, run_id=run, processed_at=at + dt.timedelta(seconds=i),
            capture_time=dt.datetime(2015 + i % 8, 6, 1, 9, 30),
            camera_make="Canon" if i % 2 == 0 else "NIKON CORPORATION",
            camera_model="EOS 5D" if i % 2 == 0 else "D750",
            existing_alt_text="A human-written description" if i % 5 == 0 else None,
            existing_description=None)

    r1 = [row(i, p, "r1", t1, "m-1", captions[i % len(captions)])
          for i, p in enumerate(photos)]
    r2 = [row(i, p, "r2", t2, "m-2", "new " + captions[i % len(captions)])
          for i, p in enumerate(photos[:3])]
    for folder in ("catalog", "errors", "writeback", "runs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(r1[:10], schema=CATALOG_SCHEMA),
                   root / "catalog" / "run-r1-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(r1[10:], schema=CATALOG_SCHEMA),
                   root / "catalog" / "run-r1-00001-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist(r2, schema=CATALOG_SCHEMA),
                   root / "catalog" / "run-r2-00000-of-00001.parquet")
    if errors:
        errs = [dict(uri=str(root / "broken.jpg"), stage="decode", error_type="UnidentifiedImageError",
                     message=f"cannot decode {root / 'broken.jpg'}: not an image file",
                     run_id="r1", occurred_at=t1),
                dict(uri=str(photos[0]), stage="read", error_type="OSError",
                     message="transient read failure", run_id="r1", occurred_at=t1)]
        pq.write_table(pa.Table.from_pylist(errs, schema=ERRORS_SCHEMA),
                       root / "errors" / "run-r1-00000-of-00001.parquet")
    if writeback:
        wb = [dict(uri=str(p), action="written" if i else "skipped",
                   reason=None if i else "human-written alt text present",
                   fields=["XMP-dc:Description"], target=str(p), caption=captions[i],
                   score=-0.5, model_version="m-1", sha256_before="a", sha256_after="b",
                   run_id="w1", at=t2) for i, p in enumerate(photos[:4])]
        pq.write_table(pa.Table.from_pylist(wb, schema=WRITEBACK_SCHEMA),
                       root / "writeback" / "run-w1-00000-of-00001.parquet")
    (root / "runs" / "r1.json").write_text(json.dumps(
        {"run_id": "r1", "captioned": len(r1), "failed": 2, "seconds": 9.0,
         "images_per_second": len(r1) / 9.0, "model_version": "m-1"}))
    (root / "runs" / "r2.json").write_text(json.dumps(
        {"captioned": 3, "failed": 0, "seconds": 1.5, "model_version": "m-2", "extra": [1]}))
    return root


@pytest.fixture
def catalog(tmp_path, sample_photos) -> pathlib.Path:
    return make_catalog(tmp_path / "cat", sorted(sample_photos.glob("*.jpg")))


def run_query(capsys, *argv) -> tuple[int, str, str]:
    status = query.main_query([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def run_search(capsys, *argv) -> tuple[int, str, str]:
    status = query.main_search([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _digest(folder: pathlib.Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- views -------------------------------------------------------------------------

def test_views_latest_row_per_uri_and_history(catalog):
    con = connect(str(catalog))
    assert con.sql("SELECT count(*) FROM catalog").fetchall()[0][0] == 18
    assert con.sql("SELECT count(*) FROM catalog_history").fetchall()[0][0] == 21
    latest = dict(con.sql("SELECT run_id, count(*) FROM catalog GROUP BY ALL").fetchall())
    assert latest == {"r1": 15, "r2": 3}
    assert con.sql("SELECT count(*) FROM catalog WHERE caption LIKE 'new %'").fetchall()[0][0] == 3
    everything = connect(str(catalog), all_runs=True)
    assert everything.sql("SELECT count(*) FROM catalog").fetchall()[0][0] == 21


def test_empty_table_folder_gives_typed_empty_view(catalog):
    shutil.rmtree(catalog / "writeback")        # no writeback ever ran
    con = connect(str(catalog), locked=True)
    cols = con.sql("DESCRIBE writeback").fetchall()
    assert [c[0] for c in cols] == WRITEBACK_SCHEMA.names
    assert dict((c[0], c[1]) for c in cols)["at"] == "TIMESTAMP WITH TIME ZONE"
    assert con.sql("SELECT count(*) FROM writeback").fetchall()[0][0] == 0


def test_runs_view_reads_summaries_defensively(catalog):
    (catalog / "runs" / "r3.json").write_text("{not json")
    rows = connect(str(catalog)).sql(
        "SELECT run_id, captioned, seconds, model_version, summary FROM runs ORDER BY run_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["r1", "r2", "r3"]
    assert rows[0][1:4] == (18, 9.0, "m-1")
    assert rows[1][1:4] == (3, 1.5, "m-2")            # run_id came from the file name
    assert "unreadable run summary" in json.loads(rows[2][4])["error"]


# --- altbeam query -------------------------------------------------------------------

def test_query_prints_aligned_table(catalog, capsys):
    status, out, _ = run_query(capsys, catalog,
                               "SELECT run_id, count(*) AS n FROM catalog GROUP BY 1 ORDER BY 1")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["run_id", "n"]
    assert lines[2].split() == ["r1", "15"] and lines[3].split() == ["r2", "3"]
    assert len(lines[2]) == len(lines[3]) == len(lines[0])     # numbers right-aligned
    assert lines[-1] == "(2 rows)"


def test_query_missing_alt_text_and_low_scores(catalog, capsys):
    status, out, _ = run_query(
        capsys, catalog, "SELECT uri, caption FROM catalog WHERE "
        "nullif(trim(existing_alt_text), '') IS NULL ORDER BY uri", "--format", "json")
    assert status == 0
    rows = json.loads(out)
    assert len(rows) == 18 - 4                   # i = 0, 5, 10, 15 have alt text
    status, out, _ = run_query(capsys, catalog, "SELECT uri, score FROM catalog "
                               "WHERE score < -1.95 ORDER BY score", "--format", "csv")
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == "uri,score" and len(lines) == 1 + 3    # i = 15, 16, 17


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_query_writes_each_format_to_out(catalog, capsys, tmp_path, fmt):
    out_file = tmp_path / f"result.{fmt}"
    status, out, err = run_query(capsys, catalog, "SELECT uri, captions, processed_at "
                                 "FROM catalog ORDER BY uri", "--format", fmt, "--out", out_file)
    assert status == 0, err
    if fmt == "parquet":
        table = pq.read_table(out_file)
        assert table.schema.field("captions").type == pa.list_(pa.string())
    elif fmt == "csv":
        table = pacsv.read_csv(out_file)
        assert json.loads(table.column("captions")[0].as_py())[2] == "a blurry picture"
    else:
        rows = json.loads(out_file.read_text())
        assert rows[0]["captions"][2] == "a blurry picture"
        assert dt.datetime.fromisoformat(rows[0]["processed_at"]).year == 2026
        table = pa.Table.from_pylist(rows)
    assert table.num_rows == 18


def test_table_output_neutralises_terminal_control_characters(tmp_path, sample_photos, capsys):
    cat = make_catalog(tmp_path / "cat", sorted(sample_photos.glob("*.jpg"))[:2],
                       captions=["evil \x1b[2J caption\nsecond line", "fine"])
    status, out, _ = run_query(capsys, cat, "SELECT caption FROM catalog ORDER BY uri")
    assert status == 0
    assert "\x1b" not in out and "\\x1b[2J" in out and "\\n" in out


@pytest.mark.parametrize("sql, word", [
    ("COPY catalog TO 'stolen.csv'", "COPY"),
    ("ATTACH 'other.duckdb' AS other", "ATTACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("SET enable_external_access = true", "SET"),
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("DROP VIEW catalog", "DROP"),
    ("PRAGMA version", "PRAGMA"),
    ("SELECT 1; DROP VIEW catalog", "one statement at a time"),
])
def test_query_refuses_anything_but_one_select(catalog, capsys, tmp_path, monkeypatch, sql, word):
    monkeypatch.chdir(tmp_path)
    before = _digest(catalog)
    status, out, err = run_query(capsys, catalog, sql)
    assert status == 2 and out == ""
    assert "refused" in err and word in err
    assert _digest(catalog) == before
    assert not (tmp_path / "stolen.csv").exists()


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM read_text('{catalog}/runs/r1.json')",
    "SELECT * FROM query('COPY (SELECT 1) TO ''x.csv''')",
])
def test_select_cannot_reach_other_files(catalog, capsys, tmp_path, monkeypatch, sql):
    monkeypatch.chdir(tmp_path)
    status, _, err = run_query(capsys, catalog, sql.format(catalog=catalog))
    assert status == 1
    assert "SQL error" in err and ("Permission" in err or "single SELECT" in err)
    assert not (tmp_path / "x.csv").exists()


def test_select_may_read_the_catalog_shards_directly(catalog, capsys):
    shard = sorted((catalog / "catalog").glob("run-r2-*.parquet"))[0]
    status, out, _ = run_query(capsys, catalog, f"SELECT count(*) AS n FROM '{shard}'")
    assert status == 0 and out.splitlines()[2].strip() == "3"


def test_bad_sql_and_missing_catalog_fail_clearly(catalog, tmp_path, capsys):
    status, _, err = run_query(capsys, catalog, "SELEC uri FROM catalog")
    assert status == 1 and "SQL error" in err and "syntax error" in err
    status, _, err = run_query(capsys, catalog, "SELECT nope FROM catalog")
    assert status == 1 and "nope" in err
    status, _, err = run_query(capsys, tmp_path / "nowhere", "SELECT 1")
    assert status == 1 and "catalog not found" in err and "nowhere" in err
    (tmp_path / "plain").mkdir()
    status, _, err = run_query(capsys, tmp_path / "plain", "SELECT 1")
    assert status == 1 and "not an altbeam catalog" in err


@pytest.mark.parametrize("as_uri", [False, True])
def test_out_inside_catalog_is_refused(catalog, capsys, as_uri):
    target = catalog / "catalog" / "run-evil-00000-of-00001.parquet"
    where = f"file://{catalog}" if as_uri else catalog     # file:// is the same local folder
    status, _, err = run_query(capsys, where, "SELECT * FROM catalog",
                               "--format", "parquet", "--out", target)
    assert status == 1 and "never writes into the catalog" in err
    assert not target.exists()


def test_cli_dispatch_runs_query(catalog, capsys):
    from altbeam.pipelines.cli import main

    assert main(["query", str(catalog), "SELECT 42 AS answer"]) == 0
    assert "42" in capsys.readouterr().out
    assert main(["query", str(catalog), "SELECT count(*) AS n FROM catalog", "--all-runs",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 21}]


# --- altbeam search ------------------------------------------------------------------

def test_tokenize_matches_sql_rules():
    assert tokenize("Two DOGS, a bus; glasses & café's") == \
        ["two", "dog", "a", "bus", "glasse", "café", "s"]


def test_search_ranks_best_caption_matches_first(catalog, capsys):
    status, out, err = run_search(capsys, catalog, "dogs", "--format", "json")
    assert status == 0, err
    rows = json.loads(out)
    # BM25 favours the shorter caption; the first photo's latest caption is run r2's.
    assert [r["caption"] for r in rows] == ["two dogs playing in the grass",
                                            "new a dog running on the beach"]
    assert rows[0]["rank"] == 1 and rows[0]["relevance"] > 0 and rows[0]["matched"] == ["dog"]


def test_alternatives_count_at_half_weight(catalog):
    con = connect(str(catalog), locked=True)
    # "sun" appears only in alternatives ("… in the sun"), "table" in two best captions.
    sun = search(con, ["sun"], SearchFilters(limit=100)).to_pylist()
    table = search(con, ["table"], SearchFilters(limit=100)).to_pylist()
    assert len(sun) == 18 and len(table) == 2
    both = search(con, ["table", "sun"], SearchFilters(limit=3)).to_pylist()
    assert {r["caption"] for r in both[:2]} == {"a kitchen with a wooden table",
                                                "a pizza on a table"}


def test_search_filters(catalog, capsys):
    def captions(*extra):
        status, out, err = run_search(capsys, catalog, "a", "--format", "json",
                                      "--limit", "100", *extra)
        assert status == 0, err
        return json.loads(out)

    everything = captions()
    assert len(everything) == 18
    nikon = captions("--camera", "nikon")
    assert len(nikon) == 9
    assert captions("--camera", "%") == []          # a literal, not a LIKE wildcard
    assert len(captions("--missing-alt-text")) == 14
    assert len(captions("--since", "2020-01-01")) == 6   # i % 8 in 5..7: taken 2020..2022
    assert len(captions("--limit", "5")) == 5
    strong = captions("--min-caption-score", "-1.0")
    assert len(strong) == 6 and all(r["score"] >= -1.0 for r in strong)   # i = 0..5
    cut = sorted(r["relevance"] for r in everything)[9]
    rel = captions("--min-score", str(cut))
    assert len(rel) == sum(r["relevance"] >= cut for r in everything) < 18
    assert all(r["relevance"] >= cut for r in rel)


def test_search_words_are_data_not_sql(catalog, capsys):
    status, out, err = run_search(capsys, catalog, "'; DROP TABLE catalog; --",
                                  "--format", "json")
    assert status == 0, err
    rows = json.loads(out)
    assert {r["caption"] for r in rows} == {"a kitchen with a wooden table",
                                            "a pizza on a table"}
    assert rows[0]["matched"] == ["table"]
    status, out, _ = run_query(capsys, catalog, "SELECT count(*) FROM catalog")
    assert status == 0 and "18" in out


def test_search_without_words_or_catalog_fails_clearly(catalog, tmp_path, capsys):
    status, _, err = run_search(capsys, catalog, "%", "--")
    assert status == 1 and "no searchable words" in err
    status, _, err = run_search(capsys, tmp_path / "missing", "dog")
    assert status == 1 and "catalog not found" in err
    with pytest.raises(SystemExit):
        query.main_search([str(catalog), "dog", "--since", "last tuesday"])
    assert "not a date" in capsys.readouterr().err


# --- Python API --------------------------------------------------------------------

def test_python_api(catalog):
    rel = open_catalog(str(catalog))
    assert rel.filter("run_id = 'r2'").count("*").fetchall()[0][0] == 3
    assert open_catalog(str(catalog), all_runs=True).count("*").fetchall()[0][0] == 21
    dataset = catalog_dataset(str(catalog))
    assert dataset.schema.equals(CATALOG_SCHEMA) and dataset.count_rows() == 21
    empty = tmp = catalog.parent / "empty"
    (tmp / "catalog").mkdir(parents=True)
    assert catalog_dataset(str(empty)).count_rows() == 0
    with pytest.raises(CatalogError, match="catalog not found"):
        open_catalog(str(catalog.parent / "absent"))


@pytest.mark.slow   # Beam retries Google credentials ~25 s once per process without ADC
def test_gcs_catalog_is_staged_and_queried(catalog, gcs_bucket, gcs_emulator, capsys):
    gcs_emulator.upload_dir(gcs_bucket, catalog, prefix="archive/cat")
    uri = f"gs://{gcs_bucket.name}/archive/cat"
    status, out, err = run_query(capsys, uri, "SELECT (SELECT count(*) FROM catalog) AS c, "
                                 "(SELECT count(*) FROM errors) AS e, "
                                 "(SELECT count(*) FROM runs) AS r", "--format", "json")
    assert status == 0, err
    assert json.loads(out) == [{"c": 18, "e": 2, "r": 2}]
    status, _, err = run_query(capsys, f"gs://{gcs_bucket.name}/nothing-here", "SELECT 1")
    assert status == 1 and "catalog not found" in err


# --- against the real caption pipeline, when it exists ------------------------------

@pytest.mark.slow
def test_query_real_caption_pipeline_output(sample_photos, contract_model, tmp_path, capsys):
    from altbeam.pipelines.caption import pipeline as caption

    out = tmp_path / "catalog"
    status = caption.main([str(sample_photos), "--catalog", str(out),
                           "--model", str(contract_model), "--no-progress"])
    assert status in (0, None)
    capsys.readouterr()
    status, text, err = run_query(capsys, out, "SELECT count(*) AS n, "
                                  "count(DISTINCT model_version) AS v FROM catalog",
                                  "--format", "json")
    assert status == 0, err
    assert json.loads(text) == [{"n": 18, "v": 1}]
    status, text, err = run_search(capsys, out, "picture", "--format", "json", "--limit", "50")
    assert status == 0, err
    assert len(json.loads(text)) == 18     # every fixture caption ends "in a picture"
