"""Keyword search over captions: BM25 computed in DuckDB SQL, words as bound parameters.

Scoring (documented in docs/query.md):

* Text is lower-cased and split on anything that is not a letter or digit; a word of
  four or more letters ending in a single ``s`` loses it (``dogs`` -> ``dog``), the same
  rule for captions and for the search words.
* Each image is one document: its best caption, plus its alternative captions
  (beams 2..K) counted at half weight, because alternatives are less likely right.
* ``relevance = sum over search words w of
  idf(w) * tf(w) * (k1 + 1) / (tf(w) + k1 * (1 - b + b * len / avg_len))``
  with ``idf(w) = ln(1 + (N - df(w) + 0.5) / (df(w) + 0.5))``, k1 = 1.2, b = 0.75,
  N = images in the catalog (latest rows) and df(w) = images whose captions hold w.
* Only images matching at least one word are returned, highest relevance first.

The fts extension is not used: it must be downloaded and this works offline.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

import duckdb
import pyarrow as pa

K1 = 1.2
B = 0.75
ALT_WEIGHT = 0.5

_WORD = re.compile(r"[^\W_]+")
_PLURAL = re.compile(r"^(.{2,}[^s])s$")
# The same two rules in DuckDB (RE2): \pL / \pN are Unicode letters / digits.
_SPLIT_SQL = r"[^\pL\pN]+"
_PLURAL_SQL = r"^(.{2,}[^s])s$"


def tokenize(text: str) -> list[str]:
    """Search words as the scorer sees them (lower-case, split, plural ``s`` dropped)."""
    return [_PLURAL.sub(r"\1", w) for w in _WORD.findall(text.lower())]


def _tokens_sql(expr: str) -> str:
    words = f"regexp_split_to_array(lower(coalesce({expr}, '')), '{_SPLIT_SQL}')"
    return (f"list_transform(list_filter({words}, lambda w: w <> ''), "
            f"lambda w: regexp_replace(w, '{_PLURAL_SQL}', '\\1'))")


@dataclasses.dataclass
class SearchFilters:
    min_score: float | None = None           # minimum relevance
    min_caption_score: float | None = None   # minimum model score of the best caption
    since: dt.datetime | None = None         # capture time (else file mtime) on/after
    camera: str | None = None                # substring of "make model", any case
    missing_alt_text: bool = False           # no alt text already in the file
    limit: int = 20


SEARCH_SQL = f"""
WITH docs AS (
    SELECT uri, caption, score, captions, camera_make, camera_model, existing_alt_text,
           coalesce(capture_time, CAST(mtime AS TIMESTAMP)) AS taken,
           {_tokens_sql('caption')} AS best,
           {_tokens_sql("array_to_string(coalesce(captions[2:], []), ' ')")} AS alts
    FROM catalog
),
stats AS (
    SELECT count(*) AS n, greatest(avg(len(best) + {ALT_WEIGHT} * len(alts)), 1e-9) AS avg_len
    FROM docs
),
terms AS (SELECT DISTINCT unnest(CAST($words AS VARCHAR[])) AS term),
tf AS (
    SELECT d.uri, t.term,
           len(list_filter(d.best, lambda w: w = t.term))
             + {ALT_WEIGHT} * len(list_filter(d.alts, lambda w: w = t.term)) AS tf,
           len(d.best) + {ALT_WEIGHT} * len(d.alts) AS doc_len
    FROM docs d CROSS JOIN terms t
),
df AS (SELECT term, count(*) FILTER (WHERE tf > 0) AS df FROM tf GROUP BY term),
scored AS (
    SELECT tf.uri,
           sum(ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5)) * tf.tf * ({K1} + 1)
               / (tf.tf + {K1} * (1 - {B} + {B} * tf.doc_len / s.avg_len))) AS relevance,
           list(tf.term ORDER BY tf.term) AS matched
    FROM tf JOIN df USING (term) CROSS JOIN stats s
    WHERE tf.tf > 0
    GROUP BY tf.uri
)
SELECT CAST(row_number() OVER (ORDER BY relevance DESC, d.uri) AS INTEGER) AS rank,
       round(relevance, 4) AS relevance, d.uri, d.caption, d.score, matched
FROM scored JOIN docs d USING (uri)
WHERE (CAST($min_score AS DOUBLE) IS NULL OR relevance >= CAST($min_score AS DOUBLE))
  AND (CAST($min_caption_score AS DOUBLE) IS NULL OR d.score >= CAST($min_caption_score AS DOUBLE))
  AND (CAST($since AS TIMESTAMP) IS NULL OR d.taken >= CAST($since AS TIMESTAMP))
  AND (CAST($camera AS VARCHAR) IS NULL OR contains(lower(concat_ws(' ', d.camera_make, d.camera_model)),
                                   lower(CAST($camera AS VARCHAR))))
  AND (NOT CAST($missing_alt AS BOOLEAN) OR nullif(trim(d.existing_alt_text), '') IS NULL)
ORDER BY rank
LIMIT CAST($limit AS BIGINT)
"""


def search(con: duckdb.DuckDBPyConnection, words: list[str],
           filters: SearchFilters | None = None) -> pa.Table:
    """Images whose captions match ``words``, best first (columns: rank, relevance, uri,
    caption, score, matched). Words and filters are bound parameters, never SQL text."""
    filters = filters or SearchFilters()
    terms = sorted({t for w in words for t in tokenize(w)})
    if not terms:
        raise ValueError(f"no searchable words in {' '.join(words)!r} "
                         "(search words need letters or digits)")
    params = {
        "words": terms,
        "min_score": filters.min_score,
        "min_caption_score": filters.min_caption_score,
        "since": filters.since,
        "camera": filters.camera,
        "missing_alt": bool(filters.missing_alt_text),
        "limit": int(filters.limit),
    }
    return con.sql(SEARCH_SQL, params=params).to_arrow_table()
