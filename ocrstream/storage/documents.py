"""The documents repository: every read of the store's tables (``documents``, ``pages``,
``regions``) by another part of ocrstream goes through these functions.

The store stage owns the schema (migrations in ocrstream/storage/sql/) and is the only writer
(services/store/stage.py). Readers - ingest's duplicate lookup, the query API, the client's
wait, ``ocrstream status``, dead-letter replay - call this module, so a schema change touches
one reader module, and ingest never queries another stage's table itself.

Every function takes ``db``: an asyncpg ``Pool`` or ``Connection`` (both have ``fetch``,
``fetchrow``, ``fetchval``), and raises asyncpg's errors (``UndefinedTableError`` before the
store has migrated; connection errors are transient).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime
from typing import Any

from ocrstream.storage import usage

#: Row fields of a document summary (the query API's list rows), and its timestamps (ISO 8601).
SUMMARY_FIELDS = ("document_id", "status", "source", "filename", "template", "object_key", "content_sha256",
                  "size_bytes", "recognizer", "provider", "model", "error_stage", "error_type", "error_message", "replays")
TIME_FIELDS = ("submitted_at", "ingested_at", "preprocessed_at", "recognized_at", "stored_at", "replayed_at")


async def find_done(db: Any, sha256: str, template: str | None) -> str | None:
    """Id of the newest ``done`` document with these bytes (SHA-256, 64 hex) and template, or None."""
    found: str | None = await db.fetchval(
        "SELECT document_id FROM documents WHERE content_sha256 = $1 AND status = 'done'"
        " AND template IS NOT DISTINCT FROM $2 ORDER BY stored_at DESC LIMIT 1", sha256, template)
    return found


async def done_ids(db: Any, document_ids: Collection[str]) -> set[str]:
    """Those of ``document_ids`` whose row is ``done``."""
    rows = await db.fetch("SELECT document_id FROM documents WHERE document_id = ANY($1::text[])"
                          " AND status = 'done'", list(document_ids))
    return {r["document_id"] for r in rows}


async def count_published(db: Any, document_ids: Collection[str]) -> int:
    """How many of ``document_ids`` have a row whose results event was published (acked)."""
    return int(await db.fetchval("SELECT count(*) FROM documents WHERE document_id = ANY($1::text[])"
                                 " AND published_at IS NOT NULL", list(document_ids)))


async def fetch_rows(db: Any, document_ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """Rows of ``documents`` (all columns plus ``regions``: their region count), keyed by id."""
    rows = await db.fetch(
        "SELECT d.*, (SELECT count(*) FROM regions r WHERE r.document_id = d.document_id) AS regions"
        " FROM documents d WHERE d.document_id = ANY($1::text[])", list(document_ids))
    return {r["document_id"]: dict(r) for r in rows}


def summary(row: Any) -> dict[str, Any]:
    """The summary dict of a ``documents`` row (:data:`SUMMARY_FIELDS`, times as ISO text)."""
    out = {k: row[k] for k in SUMMARY_FIELDS}
    out.update({k: row[k].isoformat() if row[k] else None for k in TIME_FIELDS})
    return out


async def list_documents(db: Any, *, status: str | None = None, since: datetime | None = None,
                         before: datetime | None = None, needs_review: bool | None = None,
                         error_type: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """Summaries, newest ``stored_at`` first, filtered (None: no filter); ``since`` inclusive,
    ``before`` exclusive (keyset paging: the last row's ``stored_at``)."""
    rows = await db.fetch(
        "SELECT * FROM documents WHERE ($1::text IS NULL OR status = $1)"
        " AND ($2::timestamptz IS NULL OR stored_at >= $2)"
        " AND ($3::boolean IS NULL OR needs_review = $3)"
        " AND ($5::timestamptz IS NULL OR stored_at < $5)"
        " AND ($6::text IS NULL OR error_type = $6) ORDER BY stored_at DESC LIMIT $4",
        status, since, needs_review, limit, before, error_type)
    return [summary(r) for r in rows]


async def failure_groups(db: Any, since: datetime | None = None) -> list[dict[str, Any]]:
    """Failed documents grouped by stage and error type, most frequent first: ``{stage,
    error_type, documents, last_at, last_document_id}``."""
    rows = await db.fetch(
        "SELECT error_stage, error_type, count(*) AS documents, max(stored_at) AS last_at,"
        " (array_agg(document_id ORDER BY stored_at DESC))[1] AS last_document_id"
        " FROM documents WHERE status = 'failed' AND ($1::timestamptz IS NULL OR stored_at >= $1)"
        " GROUP BY error_stage, error_type ORDER BY documents DESC", since)
    return [{"stage": r["error_stage"], "error_type": r["error_type"], "documents": r["documents"],
             "last_at": r["last_at"].isoformat(), "last_document_id": r["last_document_id"]} for r in rows]


async def has_documents_table(db: Any) -> bool:
    """Whether the store has created its ``documents`` table yet."""
    return bool(await db.fetchval("SELECT to_regclass('documents') IS NOT NULL"))


async def recent_counts(db: Any, window_s: float) -> dict[str, int]:
    """``{status: documents}`` stored in the last ``window_s`` seconds."""
    return dict(await db.fetch("SELECT status, count(*) FROM documents"
                               " WHERE stored_at > now() - make_interval(secs => $1) GROUP BY status", window_s))


async def recent_page_sources(db: Any, window_s: float) -> dict[str, int]:
    """``{text_source: pages}`` of the documents stored in the last ``window_s`` seconds
    (``pdf-text``: read from the PDF's text layer, ``ocr``; pages stored before migration 0010 are left out)."""
    return dict(await db.fetch(
        "SELECT p.text_source, count(*) FROM pages p JOIN documents d USING (document_id)"
        " WHERE d.stored_at > now() - make_interval(secs => $1) AND p.text_source IS NOT NULL"
        " GROUP BY p.text_source", window_s))


async def last_failures(db: Any, n: int) -> list[Any]:
    """The ``n`` newest failed rows: document_id, filename, error_stage, error_type, error_message, stored_at."""
    return list(await db.fetch("SELECT document_id, filename, error_stage, error_type, error_message, stored_at"
                               " FROM documents WHERE status = 'failed' ORDER BY stored_at DESC NULLS LAST LIMIT $1",
                               n))


async def load_document(pool: Any, document_id: str) -> dict[str, Any] | None:
    """The document as a dict: summary fields, ``text``, ``needs_review``, ``fields``, ``error``,
    ``result_version``, ``costs`` (what each stage spent: ocrstream/storage/usage.py), ``pages`` and
    ``regions`` (reading order; box, words, field, value, validity, verified text); None if unknown.
    ``pool``: an asyncpg Pool (the reads share one connection)."""
    async with pool.acquire() as conn:
        return await read_document(conn, document_id)


async def read_document(conn: Any, document_id: str) -> dict[str, Any] | None:
    """:func:`load_document` on one connection (e.g. inside the store's transaction)."""
    row = await conn.fetchrow("SELECT * FROM documents WHERE document_id = $1", document_id)
    if row is None:
        return None
    pages = await conn.fetch("SELECT page_index, width, height, text_source FROM pages WHERE document_id = $1"
                             " ORDER BY page_index", document_id)
    regions = await conn.fetch(
        "SELECT region_id, page_index, block_index, line_index, reading_order, x0, y0, x1, y1, text, confidence,"
        " words, field, raw_text, value, valid, reason, needs_review, verified_text, source"
        " FROM regions WHERE document_id = $1 ORDER BY page_index, reading_order", document_id)
    return {**summary(row), "text": row["text"], "needs_review": row["needs_review"],
            "fields": json.loads(row["fields"]) if row["fields"] else {},
            "error": ({"stage": row["error_stage"], "type": row["error_type"], "message": row["error_message"]}
                      if row["status"] == "failed" else None),
            "result_version": row["result_version"],
            "costs": await usage.document_cost(conn, document_id, row["version"]),  # None before migration 0017
            "pages": [{k: v for k, v in dict(p).items() if v is not None} for p in pages],  # text_source: NULL before 0010
            "regions": [{"region_id": r["region_id"], "page_index": r["page_index"], "block_index": r["block_index"],
                         "line_index": r["line_index"], "order": r["reading_order"],
                         "box": [r["x0"], r["y0"], r["x1"], r["y1"]], "text": r["text"],
                         "confidence": r["confidence"], "words": json.loads(r["words"]),
                         "raw_text": r["raw_text"], "value": json.loads(r["value"]) if r["value"] else None,
                         "valid": r["valid"], "reason": r["reason"], "needs_review": r["needs_review"],
                         "verified_text": r["verified_text"],
                         **({"field": json.loads(r["field"])} if r["field"] else {}),
                         **({"source": r["source"]} if r["source"] else {})} for r in regions]}


async def document_version(db: Any, document_id: str, version: int) -> dict[str, Any] | None:
    """Result ``version`` of a document (an earlier one from ``document_versions``, or the current
    one when it is the current ``result_version``); None when there is no such version."""
    current = await db.fetchval("SELECT result_version FROM documents WHERE document_id = $1", document_id)
    if current is None:
        return None
    if version == current:
        return await load_document(db, document_id)
    raw = await db.fetchval("SELECT result FROM document_versions WHERE document_id = $1 AND result_version = $2",
                            document_id, version)
    return dict(json.loads(raw)) if raw else None


async def document_versions(db: Any, document_id: str) -> list[dict[str, Any]] | None:
    """Every result version of a document, oldest first: ``{version, model, stored_at, current}``;
    None if the document is unknown."""
    row = await db.fetchrow("SELECT result_version, model, stored_at FROM documents WHERE document_id = $1",
                            document_id)
    if row is None:
        return None
    earlier = await db.fetch("SELECT result_version, model, stored_at FROM document_versions"
                             " WHERE document_id = $1 ORDER BY result_version", document_id)
    return [{"version": r["result_version"], "model": r["model"],
             "stored_at": r["stored_at"].isoformat() if r["stored_at"] else None, "current": False}
            for r in earlier] + [{"version": row["result_version"], "model": row["model"],
                                  "stored_at": row["stored_at"].isoformat() if row["stored_at"] else None,
                                  "current": True}]
