"""Caption statuses and keywords (catalog schema v2) in `altbeam query` and `altbeam search`.

On real Parquet: a gated run written by the caption job's catalog_row + WriteTable beside
a version-1 shard (no v2 columns at all), read by DuckDB through the catalog views.
"""
from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest

from altbeam.pipelines.catalog.api import catalog_dataset, connect, parse_statuses
from altbeam.pipelines.query import commands as query
from altbeam.pipelines.query.search import ALT_WEIGHT, K1, KEYWORD_WEIGHT, B, tokenize
from altbeam.schemas.catalog import CATALOG_SCHEMA
from tests.pipelines.query import gated


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, sample_photos):
    """A version-1 shard (r0: dog, old1, old2) and a gated run (r1: six images)."""
    return gated.mixed_catalog(tmp_path_factory.mktemp("mixed"), sample_photos)


@pytest.fixture
def v1_only(tmp_path, sample_photos):
    files = gated.photos(tmp_path / "photos", sample_photos)
    catalog = tmp_path / "cat"
    gated.write_v1(catalog, files)
    return catalog


def cli(capsys, main, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def as_json(capsys, main, *argv):
    status, out, err = cli(capsys, main, *argv, "--format", "json")
    assert status == 0, err
    return json.loads(out)


def name(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


# --- the views ---------------------------------------------------------------------

def test_a_version_1_catalog_reads_with_null_status_and_keywords(v1_only, capsys):
    shard = next((v1_only / "catalog").glob("*.parquet"))
    assert "caption_status" not in pq.read_schema(shard).names        # really version 1
    con = connect(str(v1_only), locked=True)
    assert [c[0] for c in con.sql("DESCRIBE catalog").fetchall()] == CATALOG_SCHEMA.names
    rows = con.sql("SELECT caption, caption_status, objects, keywords, keyword_scores "
                   "FROM catalog ORDER BY uri").fetchall()
    assert len(rows) == 3 and all(r[0] and r[1:] == (None,) * 4 for r in rows)
    statuses = as_json(capsys, query.main_query, v1_only, "SELECT * FROM statuses")
    assert [(s["status"], s["images"]) for s in statuses] == [
        ("ok", 0), ("unsure", 0), ("contradicted", 0), ("too_small", 0), ("blank", 0),
        ("not_judged", 3)]
    assert "before the caption gate" in statuses[-1]["meaning"]
    listing = as_json(capsys, query.main_query, v1_only)
    assert {r["caption_status"] for r in listing} == {None} and len(listing) == 3
    assert catalog_dataset(str(v1_only)).to_table(["caption_status"]).column(0).null_count == 3


def test_statuses_view_counts_the_latest_rows(mixed, capsys):
    rows = as_json(capsys, query.main_query, mixed, "SELECT * FROM statuses")
    assert [(r["status"], r["images"]) for r in rows] == [
        ("ok", 2), ("unsure", 1), ("contradicted", 1), ("too_small", 1), ("blank", 1),
        ("not_judged", 2)]                   # dog.jpg's r0 row is superseded by its r1 row
    meaning = {r["status"]: r["meaning"] for r in rows}
    assert meaning["contradicted"].startswith("not trusted")
    assert meaning["unsure"].startswith("not trusted")
    assert meaning["too_small"] == "no caption: image too small"
    assert meaning["blank"].startswith("no caption: image blank")


def test_mixed_shards_keep_the_gated_columns(mixed):
    con = connect(str(mixed), locked=True)
    snow = con.sql("SELECT caption_status, objects, keywords, keyword_scores FROM catalog "
                   "WHERE uri LIKE '%/snow.jpg'").fetchall()[0]
    assert snow[:3] == ("contradicted", ["dog", "snow"], ["bear"])
    assert snow[3] == [pytest.approx(0.83)]
    tiny = con.sql("SELECT caption, captions, caption_status FROM catalog "
                   "WHERE uri LIKE '%/tiny.png'").fetchall()[0]
    assert tiny == (None, [], "too_small")
    old = con.sql("SELECT caption_status, keywords FROM catalog_history "
                  "WHERE run_id = 'r0'").fetchall()
    assert old == [(None, None)] * 3


# --- altbeam query -----------------------------------------------------------------

def test_query_without_sql_lists_status_caption_and_keywords(mixed, capsys):
    status, out, err = cli(capsys, query.main_query, mixed)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["uri", "caption_status", "caption", "keywords"]
    snow = next(line for line in lines if "snow.jpg" in line)
    assert "contradicted" in snow and "a dog sitting in the snow" in snow and '["bear"]' in snow
    tiny = next(line for line in lines if "tiny.png" in line)
    assert "too_small" in tiny and "NULL" in tiny
    assert lines[-1] == "(8 rows)"
    rows = as_json(capsys, query.main_query, mixed)
    assert [name(r["uri"]) for r in rows] == sorted(name(r["uri"]) for r in rows)
    assert {name(r["uri"]): r["caption_status"] for r in rows}["old1.jpg"] is None


def test_status_filter_on_the_listing_and_on_sql(mixed, capsys):
    untrusted = as_json(capsys, query.main_query, mixed, "--status", "unsure,contradicted")
    assert [(name(r["uri"]), r["caption_status"]) for r in untrusted] == [
        ("bike.jpg", "unsure"), ("snow.jpg", "contradicted")]
    old = as_json(capsys, query.main_query, mixed, "--status", "not_judged")
    assert [name(r["uri"]) for r in old] == ["old1.jpg", "old2.jpg"]    # latest rows only
    every_run = as_json(capsys, query.main_query, mixed, "--status", "not_judged",
                        "--all-runs")
    assert sorted(name(r["uri"]) for r in every_run) == ["dog.jpg", "old1.jpg", "old2.jpg"]
    counted = as_json(capsys, query.main_query, mixed, "SELECT count(*) AS n FROM catalog",
                      "--status", " OK , blank")
    assert counted == [{"n": 3}]


def test_options_may_come_before_the_sql(mixed, capsys):
    rows = as_json(capsys, query.main_query, mixed, "--status", "contradicted",
                   "SELECT * FROM statuses")
    assert [(r["status"], r["images"]) for r in rows if r["images"]] == [("contradicted", 1)]


def test_table_rounds_float32_scores_in_lists(mixed, capsys):
    status, out, _ = cli(capsys, query.main_query, mixed, "SELECT keyword_scores FROM "
                         "catalog WHERE uri LIKE '%/dog.jpg'")
    assert status == 0 and out.splitlines()[2].strip() == "[0.91, 0.62]"
    exact = as_json(capsys, query.main_query, mixed, "SELECT keyword_scores FROM catalog "
                    "WHERE uri LIKE '%/dog.jpg'")
    assert exact[0]["keyword_scores"][0] != 0.91          # json keeps the float32 value
    assert exact[0]["keyword_scores"][0] == pytest.approx(0.91)


def test_unknown_status_is_a_usage_error(mixed, capsys):
    with pytest.raises(SystemExit) as exit_:
        query.main_query([str(mixed), "--status", "ok,trusted"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "unknown caption status trusted" in err and "not_judged" in err
    with pytest.raises(ValueError, match="unknown caption status"):
        parse_statuses(" , ")


# --- altbeam search ----------------------------------------------------------------

def test_search_matches_keywords_and_says_when_only_keywords_matched(mixed, capsys):
    hits = as_json(capsys, query.main_search, mixed, "bear")
    found = {name(h["uri"]): h for h in hits}
    assert set(found) == {"bear.jpg", "snow.jpg", "old2.jpg"}
    assert found["snow.jpg"]["matched_on"] == "keywords only"           # caption says dog
    assert found["snow.jpg"]["caption"] == "a dog sitting in the snow"
    assert found["snow.jpg"]["caption_status"] == "contradicted"
    assert found["bear.jpg"]["matched_on"] == "caption and keywords"
    assert found["old2.jpg"]["matched_on"] == "caption"
    assert found["old2.jpg"]["caption_status"] is None
    assert hits[0]["uri"] == found["bear.jpg"]["uri"]          # caption and keyword: first
    status, out, _ = cli(capsys, query.main_search, mixed, "bear")
    assert status == 0
    assert "keywords only" in next(line for line in out.splitlines() if "snow.jpg" in line)
    assert out.splitlines()[0].split()[:5] == ["rank", "relevance", "uri", "caption_status",
                                               "caption"]


def test_search_status_filter_leaves_scores_alone(mixed, capsys):
    every = {h["uri"]: h["relevance"] for h in as_json(capsys, query.main_search, mixed,
                                                       "dog")}
    trusted = as_json(capsys, query.main_search, mixed, "dog", "--status", "ok")
    assert [name(h["uri"]) for h in trusted] == ["dog.jpg"]
    assert trusted[0]["relevance"] == every[trusted[0]["uri"]]


def _bm25(docs: dict[str, tuple[list, list, list]], terms: list[str]) -> dict[str, float]:
    """The documented formula, in Python: best caption + half-weighted alternatives +
    keywords, one document per image."""
    def weight(doc, term):
        best, alts, kw = doc
        return best.count(term) + ALT_WEIGHT * alts.count(term) + KEYWORD_WEIGHT * kw.count(term)

    lengths = {u: len(b) + ALT_WEIGHT * len(a) + KEYWORD_WEIGHT * len(k)
               for u, (b, a, k) in docs.items()}
    avg = sum(lengths.values()) / len(docs)
    out = {}
    for uri, doc in docs.items():
        score = 0.0
        for term in terms:
            df = sum(weight(d, term) > 0 for d in docs.values())
            tf = weight(doc, term)
            if tf:
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                score += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * lengths[uri] / avg))
        if score:
            out[uri] = round(score, 4)
    return out


def test_keyword_relevance_is_the_documented_bm25(mixed, capsys):
    rows = connect(str(mixed)).sql("SELECT uri, caption, captions, keywords FROM catalog"
                                   ).to_arrow_table().to_pylist()
    docs = {r["uri"]: (tokenize(r["caption"] or ""),
                       tokenize(" ".join((r["captions"] or [])[1:])),
                       tokenize(" ".join(r["keywords"] or []))) for r in rows}
    for words in (["bear"], ["dog", "grass"], ["bears", "walking"]):
        hits = as_json(capsys, query.main_search, mixed, *words)
        terms = sorted({t for w in words for t in tokenize(w)})
        assert {h["uri"]: h["relevance"] for h in hits} == \
            pytest.approx(_bm25(docs, terms), abs=1e-4)
