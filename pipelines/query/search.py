"""Keyword search over captions and keywords: BM25 in DuckDB SQL, words as bound parameters.

Scoring (documented in docs/query.md):

* Text is lower-cased and split on anything that is not a letter or digit; a word of
  four or more letters ending in a single ``s`` loses it (``dogs`` -> ``dog``), the same
  rule for captions and for the search words.
* Each image is one document: its best caption, plus its alternative captions
  (beams 2..K) counted at half weight, because alternatives are less likely right,
  plus its keywords (the concepts the CNN is confident of) at full weight: a photo
  captioned "a dog" whose keywords hold "bear" is found by "bear". Rows without
  keywords (written before the caption gate) score exactly as they did before.
* ``relevance = sum over search words w of
  idf(w) * tf(w) * (k1 + 1) / (tf(w) + k1 * (1 - b + b * len / avg_len))``
  with ``idf(w) = ln(1 + (N - df(w) + 0.5) / (df(w) + 0.5))``, k1 = 1.2, b = 0.75,
  N = images in the catalog (latest rows) and df(w) = images whose captions hold w.
* Only images matching at least one word are returned, highest relevance first;
  ``matched_on`` says where the words were found: ``caption``, ``caption and
  keywords`` or ``keywords only`` (the caption itself does not say so).

The fts extension is not used: it must be downloaded and this works offline.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import re

import duckdb
import pyarrow as pa

from altbeam.pipelines.catalog.api import status_label_sql

K1 = 1.2
B = 0.75
ALT_WEIGHT = 0.5
KEYWORD_WEIGHT = 1.0

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
    statuses: list[str] | None = None        # caption statuses (api.parse_statuses)
    limit: int = 20


SEARCH_SQL = f"""
WITH docs AS (
    SELECT uri, caption, score, caption_status, keywords, camera_make, camera_model,
           existing_alt_text, coalesce(capture_time, CAST(mtime AS TIMESTAMP)) AS taken,
           {_tokens_sql('caption')} AS best,
           {_tokens_sql("array_to_string(coalesce(captions[2:], []), ' ')")} AS alts,
           {_tokens_sql("array_to_string(coalesce(keywords, []), ' ')")} AS kw
    FROM catalog
),
stats AS (
    SELECT count(*) AS n,
           greatest(avg(len(best) + {ALT_WEIGHT} * len(alts) + {KEYWORD_WEIGHT} * len(kw)),
                    1e-9) AS avg_len
    FROM docs
),
terms AS (SELECT DISTINCT unnest(CAST($words AS VARCHAR[])) AS term),
parts AS (
    SELECT d.uri, t.term,
           len(list_filter(d.best, lambda w: w = t.term))
             + {ALT_WEIGHT} * len(list_filter(d.alts, lambda w: w = t.term)) AS in_caption,
           len(list_filter(d.kw, lambda w: w = t.term)) AS in_keywords,
           len(d.best) + {ALT_WEIGHT} * len(d.alts) + {KEYWORD_WEIGHT} * len(d.kw) AS doc_len
    FROM docs d CROSS JOIN terms t
),
tf AS (SELECT *, in_caption + {KEYWORD_WEIGHT} * in_keywords AS tf FROM parts),
df AS (SELECT term, count(*) FILTER (WHERE tf > 0) AS df FROM tf GROUP BY term),
scored AS (
    SELECT tf.uri,
           sum(ln(1 + (s.n - df.df + 0.5) / (df.df + 0.5)) * tf.tf * ({K1} + 1)
               / (tf.tf + {K1} * (1 - {B} + {B} * tf.doc_len / s.avg_len))) AS relevance,
           list(tf.term ORDER BY tf.term) AS matched,
           bool_or(tf.in_caption > 0) AS by_caption, bool_or(tf.in_keywords > 0) AS by_keywords
    FROM tf JOIN df USING (term) CROSS JOIN stats s
    WHERE tf.tf > 0
    GROUP BY tf.uri
)
SELECT CAST(row_number() OVER (ORDER BY relevance DESC, d.uri) AS INTEGER) AS rank,
       round(relevance, 4) AS relevance, d.uri, d.caption_status, d.caption, d.score,
       d.keywords, matched,
       CASE WHEN NOT by_caption THEN 'keywords only'
            WHEN by_keywords THEN 'caption and keywords' ELSE 'caption' END AS matched_on
FROM scored JOIN docs d USING (uri)
WHERE (CAST($min_score AS DOUBLE) IS NULL OR relevance >= CAST($min_score AS DOUBLE))
  AND (CAST($min_caption_score AS DOUBLE) IS NULL OR d.score >= CAST($min_caption_score AS DOUBLE))
  AND (CAST($since AS TIMESTAMP) IS NULL OR d.taken >= CAST($since AS TIMESTAMP))
  AND (CAST($camera AS VARCHAR) IS NULL OR contains(lower(concat_ws(' ', d.camera_make, d.camera_model)),
                                   lower(CAST($camera AS VARCHAR))))
  AND (NOT CAST($missing_alt AS BOOLEAN) OR nullif(trim(d.existing_alt_text), '') IS NULL)
  AND (CAST($statuses AS VARCHAR[]) IS NULL
       OR list_contains(CAST($statuses AS VARCHAR[]), {status_label_sql('d.caption_status')}))
ORDER BY rank
LIMIT CAST($limit AS BIGINT)
"""


def search(con: duckdb.DuckDBPyConnection, words: list[str],
           filters: SearchFilters | None = None) -> pa.Table:
    """Images whose captions or keywords match ``words``, best first (columns: rank,
    relevance, uri, caption_status, caption, score, keywords, matched, matched_on).
    Words and filters are bound parameters, never SQL text."""
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
        "statuses": filters.statuses,
        "limit": int(filters.limit),
    }
    return con.sql(SEARCH_SQL, params=params).to_arrow_table()
