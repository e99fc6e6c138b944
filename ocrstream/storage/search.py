"""Search over the stored text: PostgreSQL full-text search plus trigram similarity.

A hit is one page of one document: the regions of that page whose corrected text matches, with
their boxes (page pixels) and word boxes, and a highlighted snippet. Regions match when

* their ``tsvector`` (``to_tsvector('simple', search_text)``, GIN index, migrations 0005 and 0019)
  matches the query parsed by ``websearch_to_tsquery`` (words, ``"quoted phrases"``, ``or``,
  ``-word``), or
* the query is word-similar to their searchable text (pg_trgm ``word_similarity``, operator ``<%``,
  GIN trigram index) at :data:`WORD_SIMILARITY_THRESHOLD`, set for each search's transaction
  (``SET LOCAL pg_trgm.word_similarity_threshold``), and so is each of its words
  (:func:`trigram_words`), which finds OCR-noisy spellings (``INV0ICE`` for ``invoice``).

A region's searchable text (``regions.search_text``, migration 0019) is its corrected text; for a
template field's region, the field's name (``_`` as a space) before it and its unit after it
(``haemoglobin 13.2 g/dL``), so a templated document is found by its fields' words.

Score of a region: ``ts_rank(tsv, query) + word_similarity(q, search_text)``; of a page: the sum over
its matching regions. Pages are ranked by score (then newest document), ``limit``/``offset``
paginated, ``total`` counts all matching pages. Snippets (HTML-escaped): ``ts_headline`` over the matching
regions' text with ``<mark>``…``</mark>``; trigram-only matches mark the most similar word
(rapidfuzz). References: PostgreSQL manual, chapter 12 "Full Text Search" and F.35 "pg_trgm".
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from rapidfuzz import fuzz, process

TS_CONFIG = "simple"
MARK = ("<mark>", "</mark>")
# ts_headline marks with these private-use characters; the snippet is then HTML-escaped (OCR text
# may hold "<" or "&") and they become MARK.
_SEL = ("\ue000", "\ue001")
MAX_QUERY_CHARS = 500
MAX_LIMIT = 100
#: ``pg_trgm.word_similarity_threshold`` of every search (PostgreSQL's default, 0.6, misses one
#: misread character in a 7-letter word: ``word_similarity('INV0ICE', 'INVOICE')`` = 0.45). Measured
#: on the SROIE dev lines' real OCR errors, ``bench/bench_search.py --ocr-errors`` (README "Search").
WORD_SIMILARITY_THRESHOLD = 0.4

SEARCH_SQL = f"""
WITH q AS (SELECT websearch_to_tsquery('{TS_CONFIG}', $1) AS tsq),
hits AS MATERIALIZED (  -- matching regions, from the two GIN indexes (BitmapOr)
    SELECT r.document_id, r.page_index, r.region_id, r.reading_order, r.x0, r.y0, r.x1, r.y1,
           r.text, r.words,
           r.search_text, ts_rank(r.tsv, q.tsq) + word_similarity($1, r.search_text) AS score,
           r.tsv @@ q.tsq AS exact
    FROM regions r, q
    WHERE (r.tsv @@ q.tsq
           -- the whole query (GIN trigram index), then each of its words, word-similar to the text
           OR ($1 <% r.search_text AND NOT EXISTS (SELECT 1 FROM unnest($9::text[]) w
                                                  WHERE NOT w <% r.search_text))
           -- no words, only field filters: the regions the filtered fields were read from
           OR ($1 = '' AND EXISTS (SELECT 1 FROM jsonb_each($6::jsonb) f(name, v) JOIN documents d2
                                   ON d2.document_id = r.document_id
                                   WHERE coalesce(d2.fields -> f.name -> 'regions' ? r.region_id, false)
                                      OR r.field ->> 'name' = f.name)))
),
pages AS (
    SELECT h.document_id, h.page_index, sum(h.score) AS score, bool_or(h.exact) AS exact,
           max(d.stored_at) AS stored_at
    FROM hits h JOIN documents d USING (document_id)
    WHERE ($2::text IS NULL OR d.status = $2)
      AND ($3::timestamptz IS NULL OR d.stored_at >= $3)
      AND ($4::timestamptz IS NULL OR d.stored_at < $4)
      AND ($5::text IS NULL OR d.template = $5)
      AND ($6::jsonb = '{{}}'::jsonb OR NOT EXISTS (
          SELECT 1 FROM jsonb_each_text($6::jsonb) f(name, value)
          WHERE NOT coalesce(d.fields -> f.name ->> 'text' = f.value
                             OR d.fields -> f.name ->> 'value' = f.value
                             OR CASE WHEN jsonb_typeof(d.fields -> f.name -> 'value') = 'number'
                                      AND f.value ~ '^-?[0-9]{{1,15}}([.][0-9]{{1,6}})?$'
                                     THEN (d.fields -> f.name ->> 'value')::numeric = f.value::numeric END,
                             false)))
    GROUP BY h.document_id, h.page_index
),
ranked AS (  -- one page of results: regions and snippets are built for these rows only
    SELECT p.*, count(*) OVER () AS total FROM pages p
    ORDER BY p.score DESC, p.stored_at DESC, p.document_id, p.page_index
    LIMIT $7 OFFSET $8
),
detail AS (
    SELECT h.document_id, h.page_index,
           jsonb_agg(jsonb_build_object('region_id', h.region_id, 'box', jsonb_build_array(h.x0, h.y0, h.x1, h.y1),
                                        'text', h.text, 'words', h.words, 'score', h.score)
                     ORDER BY h.reading_order) AS regions,
           string_agg(h.search_text, ' … ' ORDER BY h.reading_order) AS page_text
    FROM ranked r JOIN hits h USING (document_id, page_index)
    GROUP BY h.document_id, h.page_index
)
SELECT r.document_id, r.page_index, r.score, r.total, r.stored_at, t.regions, t.page_text,
       CASE WHEN r.exact THEN ts_headline('{TS_CONFIG}', t.page_text, q.tsq,
            'StartSel={_SEL[0]}, StopSel={_SEL[1]}, MaxFragments=3, MaxWords=18, MinWords=5, FragmentDelimiter=" … "')
       END AS headline,
       d.status, d.filename, d.source, d.template, d.fields
FROM ranked r JOIN detail t USING (document_id, page_index) JOIN documents d USING (document_id), q
ORDER BY r.score DESC, r.stored_at DESC, r.document_id, r.page_index
"""


@dataclass(frozen=True)
class SearchQuery:
    """What to find: words ``q`` (may be blank when there are field filters: then a hit is a page
    of a document whose fields match, with the regions those fields were read from). ``fields``:
    field name (a template's, or a receipt field found without a template: ``total``, ``date``,
    ``vendor_name``, ...) -> value: the field's text, or its typed
    value (an ISO date; a number compared as a number, so ``total:13.1`` finds ``13.10``);
    ``since``/``until``: stored time, [since, until)."""

    q: str
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    template: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    limit: int = 20
    offset: int = 0

    def __post_init__(self) -> None:
        if not self.q.strip() and not self.fields:
            raise ValueError("the query is empty (give words, field filters or both)")
        if len(self.q) > MAX_QUERY_CHARS:
            raise ValueError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if not 1 <= self.limit <= MAX_LIMIT or self.offset < 0:
            raise ValueError(f"limit must be in 1..{MAX_LIMIT} and offset >= 0")


def trigram_words(q: str) -> list[str]:
    """The words of ``q`` that must each be word-similar to a region's text for a trigram match: runs
    of letters and digits (pg_trgm's own word characters), without ``or`` and ``-excluded`` words of
    the websearch syntax. So ``zephyrine acme`` does not match a region that only says ``acme``."""
    words = []
    for token in q.split():
        if token.startswith("-") or token.lower() == "or":
            continue
        words += re.findall(r"[^\W_]+", token)
    return words


def parse_field_filters(items: list[str]) -> dict[str, str]:
    """``["name:value", ...]`` -> ``{"name": "value"}``; raises ValueError without a ``:``."""
    out = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name:
            raise ValueError(f"field filter {item!r} is not NAME:VALUE")
        out[name] = value
    return out


async def search(pool: asyncpg.Pool, query: SearchQuery) -> dict[str, Any]:
    """Ranked, paginated hits: ``{"q", "total", "limit", "offset", "hits": [...]}``; each hit has
    ``document_id``, ``page_index``, ``score``, ``snippet`` (HTML-marked), ``regions`` (id, box
    ``[x0, y0, x1, y1]`` in page pixels, text, words) and the document's status, filename,
    template, fields and ``stored_at``. A field filter matches the field's corrected text, its
    typed value as text (``glucose:5.4``, ``date:2018-03-01``) or, for a number, its value as a
    number (``total:13.10`` finds 13.1)."""
    async with pool.acquire() as conn, conn.transaction():
        # A generic plan (asyncpg prepares statements) cannot use the trigram index for an
        # unknown $1: always plan for the actual query.
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        # The threshold of `<%` for this transaction only (the GIN index honours it).
        await conn.execute(f"SET LOCAL pg_trgm.word_similarity_threshold = {float(WORD_SIMILARITY_THRESHOLD)}")
        args = (query.q.strip(), query.status, query.since, query.until, query.template, json.dumps(query.fields))
        rows = await conn.fetch(SEARCH_SQL, *args, query.limit, query.offset, trigram_words(query.q))
        total = rows[0]["total"] if rows else 0
        if not rows and query.offset:  # past the last page: still say how many pages match
            first = await conn.fetch(SEARCH_SQL, *args, 1, 0, trigram_words(query.q))
            total = first[0]["total"] if first else 0
    return {"q": query.q, "total": total, "limit": query.limit,
            "offset": query.offset, "hits": [_hit(r, query.q) for r in rows]}


def _hit(row: asyncpg.Record, q: str) -> dict[str, Any]:
    regions = json.loads(row["regions"])
    for r in regions:
        r["words"] = r["words"] if isinstance(r["words"], list) else json.loads(r["words"])
    return {"document_id": row["document_id"], "page_index": row["page_index"],
            "score": round(float(row["score"]), 4),
            "snippet": _marked(row["headline"]) if row["headline"] else mark_similar(row["page_text"], q),
            "status": row["status"], "filename": row["filename"], "source": row["source"],
            "template": row["template"], "fields": json.loads(row["fields"]) if row["fields"] else {},
            "stored_at": row["stored_at"].isoformat(), "regions": regions}


def _marked(headline: str) -> str:
    """A ts_headline result, HTML-escaped, its selections as ``<mark>``…``</mark>``."""
    return html.escape(headline).replace(_SEL[0], MARK[0]).replace(_SEL[1], MARK[1])


def mark_similar(text: str, q: str) -> str:
    """``text`` (HTML-escaped) with the word most similar to each query word wrapped in
    ``<mark>``…``</mark>`` (for trigram-only hits, where ``ts_headline`` has no exact lexeme)."""
    words = text.split()
    marked = set()
    for term in q.split():
        best = process.extractOne(term, words, scorer=fuzz.ratio, processor=str.lower)
        if best is not None:
            marked.add(best[2])
    return " ".join(f"{MARK[0]}{html.escape(w)}{MARK[1]}" if i in marked else html.escape(w)
                    for i, w in enumerate(words))
