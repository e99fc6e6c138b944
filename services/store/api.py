"""The query API over PostgreSQL (FastAPI), served by ``ocrstream run store``.

* ``GET /v1/documents?status=&since=&before=&needs_review=&limit=`` - newest first; ``since`` and
  ``before`` are ISO 8601 (``before``: the ``stored_at`` of the last row of the previous page);
  at most 200 rows per page.
* ``GET /v1/documents/{id}`` - status, text, fields, review flag, pages, regions (raw and
  corrected text, value, validity), error.
* ``GET /v1/documents/{id}/export?format=json|txt|hocr|alto|pdf`` - standard exports; ``pdf`` is
  a searchable PDF (original pages, invisible text layer; needs the object store).
* ``GET /v1/search?q=&status=&since=&until=&template=&field=NAME:VALUE&limit=&offset=`` - ranked
  full-text + trigram search (services/store/search.py).
* ``GET /v1/failures`` - failed documents by stage and error type.
* ``GET /healthz`` - liveness (no key needed).
OpenAPI docs at ``/docs``. Every ``/v1`` route needs an API key with the ``query`` scope
(:mod:`services.core.auth`); exports are rendered in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Literal

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from services.core.auth import Authenticator
from services.core.errors import MissingObjectError
from services.core.objectstore import ObjectStore
from services.document import Document
from services.exports import to_alto, to_hocr, to_searchable_pdf
from services.store.search import MAX_LIMIT, SearchQuery, parse_field_filters, search

DOC_FIELDS = ("document_id", "status", "source", "filename", "template", "object_key", "content_sha256", "size_bytes",
              "recognizer", "provider", "error_stage", "error_type", "error_message", "replays")
TIME_FIELDS = ("submitted_at", "ingested_at", "preprocessed_at", "recognized_at", "stored_at", "replayed_at")


def _summary(row: asyncpg.Record) -> dict:
    out = {k: row[k] for k in DOC_FIELDS}
    out.update({k: row[k].isoformat() if row[k] else None for k in TIME_FIELDS})
    return out


async def load_document(pool: asyncpg.Pool, document_id: str) -> dict | None:
    """The document as a dict: row fields, ``text``, ``pages``, ``regions`` (None if unknown)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM documents WHERE document_id = $1", document_id)
        if row is None:
            return None
        pages = await conn.fetch("SELECT page_index, width, height FROM pages WHERE document_id = $1"
                                 " ORDER BY page_index", document_id)
        regions = await conn.fetch(
            "SELECT region_id, page_index, block_index, line_index, reading_order, x0, y0, x1, y1, text, confidence,"
            " words, field, raw_text, value, valid, reason, needs_review"
            " FROM regions WHERE document_id = $1 ORDER BY page_index, reading_order", document_id)
    return {**_summary(row), "text": row["text"], "needs_review": row["needs_review"],
            "fields": json.loads(row["fields"]) if row["fields"] else {},
            "error": ({"stage": row["error_stage"], "type": row["error_type"], "message": row["error_message"]}
                      if row["status"] == "failed" else None),
            "pages": [dict(p) for p in pages],
            "regions": [{"region_id": r["region_id"], "page_index": r["page_index"], "block_index": r["block_index"],
                         "line_index": r["line_index"], "order": r["reading_order"],
                         "box": [r["x0"], r["y0"], r["x1"], r["y1"]], "text": r["text"],
                         "confidence": r["confidence"], "words": json.loads(r["words"]),
                         "raw_text": r["raw_text"], "value": json.loads(r["value"]) if r["value"] else None,
                         "valid": r["valid"], "reason": r["reason"], "needs_review": r["needs_review"],
                         **({"field": json.loads(r["field"])} if r["field"] else {})} for r in regions]}


MAX_PAGE = 200


def create_app(pool: asyncpg.Pool, auth: Authenticator, store: ObjectStore | None = None) -> FastAPI:
    """The query API on ``pool``; every ``/v1`` route requires ``auth``'s ``query`` scope;
    ``store`` (the originals' bucket) serves ``format=pdf``."""
    app = FastAPI(title="ocrstream documents", version="1")
    api = APIRouter(dependencies=[Depends(auth.require("query"))])

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness of the query API (``ocrstream status`` asks it)."""
        return {"ok": True}

    @api.get("/v1/documents")
    async def list_documents(status: Literal["done", "failed"] | None = None,
                             since: datetime | None = None, before: datetime | None = None,
                             needs_review: bool | None = None, error_type: str | None = None,
                             limit: int = Query(50, ge=1, le=MAX_PAGE)) -> list[dict]:
        """Documents, newest first, filtered by status, stored time, review flag and error type;
        page with ``before`` = the last row's ``stored_at``."""
        rows = await pool.fetch(
            "SELECT * FROM documents WHERE ($1::text IS NULL OR status = $1)"
            " AND ($2::timestamptz IS NULL OR stored_at >= $2)"
            " AND ($3::boolean IS NULL OR needs_review = $3)"
            " AND ($5::timestamptz IS NULL OR stored_at < $5)"
            " AND ($6::text IS NULL OR error_type = $6) ORDER BY stored_at DESC LIMIT $4",
            status, since, needs_review, limit, before, error_type)
        return [_summary(r) for r in rows]

    @api.get("/v1/failures")
    async def failures(since: datetime | None = None) -> list[dict]:
        """Failed documents by reason: count per stage and error type, with the newest one."""
        rows = await pool.fetch(
            "SELECT error_stage, error_type, count(*) AS documents, max(stored_at) AS last_at,"
            " (array_agg(document_id ORDER BY stored_at DESC))[1] AS last_document_id"
            " FROM documents WHERE status = 'failed' AND ($1::timestamptz IS NULL OR stored_at >= $1)"
            " GROUP BY error_stage, error_type ORDER BY documents DESC", since)
        return [{"stage": r["error_stage"], "error_type": r["error_type"], "documents": r["documents"],
                 "last_at": r["last_at"].isoformat(), "last_document_id": r["last_document_id"]} for r in rows]

    @api.get("/v1/search")
    async def search_documents(q: str = Query(..., min_length=1, max_length=500),
                               status: Literal["done", "failed"] | None = None,
                               since: datetime | None = None, until: datetime | None = None,
                               template: str | None = None,
                               field: list[str] = Query([], description="NAME:VALUE, repeatable"),
                               limit: int = Query(20, ge=1, le=MAX_LIMIT),
                               offset: int = Query(0, ge=0)) -> dict:
        """Pages whose text matches ``q`` (full text, or trigram-similar for OCR-noisy words),
        best first, with the matching regions, their boxes and a ``<mark>``-highlighted snippet."""
        try:
            query = SearchQuery(q, status, since, until, template, parse_field_filters(field), limit, offset)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return await search(pool, query)

    @api.get("/v1/documents/{document_id}")
    async def get_document(document_id: str) -> dict:
        """One document with its text, pages and regions (404 if unknown)."""
        doc = await load_document(pool, document_id)
        if doc is None:
            raise HTTPException(404, f"no document {document_id}")
        return doc

    @api.get("/v1/documents/{document_id}/export")
    async def export(document_id: str, format: Literal["json", "txt", "hocr", "alto", "pdf"] = "json") -> Response:
        """The document as JSON (document model), plain text, hOCR (XHTML), ALTO v4 XML, or a
        searchable PDF (original pages with an invisible text layer; 409 unless ``done``)."""
        data = await get_document(document_id)
        if format == "pdf":
            return await searchable_pdf(data)
        return await asyncio.to_thread(render_export, data, format)

    async def searchable_pdf(data: dict) -> Response:
        if data["status"] != "done" or not data["object_key"]:
            raise HTTPException(409, f"document {data['document_id']} is {data['status']}: no PDF")
        if store is None:
            raise HTTPException(503, "this query API has no object store (format=pdf unavailable)")
        try:
            original = await store.get(data["object_key"])
        except MissingObjectError as exc:
            raise HTTPException(410, str(exc)) from None
        doc = Document.from_results({**data, "document": {"filename": data["filename"]}})
        try:
            pdf = await asyncio.to_thread(to_searchable_pdf, doc, original)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        name = (data["filename"] or data["document_id"]).rsplit("/", 1)[-1].rsplit(".", 1)[0] + ".pdf"
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{name}"'})

    app.include_router(api)
    return app


def render_export(data: dict, format: str) -> Response:
    """The response for ``format`` of a loaded document (CPU work: run it in a thread)."""
    doc = Document.from_results({**data, "document": {"filename": data["filename"]}})
    if format == "txt":
        return PlainTextResponse(doc.render_text())
    if format == "hocr":
        return Response(to_hocr(doc), media_type="application/xhtml+xml")
    if format == "alto":
        return Response(to_alto(doc), media_type="application/xml")
    return JSONResponse(doc.export())
