"""The query API over PostgreSQL (FastAPI), its own process: ``ocrstream run api`` (:func:`run_api`).

The store stage only writes (the sink); this process only reads, on a read-only pool of its own
(:func:`ocrstream.storage.db.create_read_pool`: role ``ocrstream_read``, read-only transactions),
on ``OCRSTREAM_HTTP_HOST:OCRSTREAM_QUERY_PORT`` (8081), with ``/metrics``, ``/healthz`` and
``/readyz`` (PostgreSQL answers) on its metrics port (9105) like every stage.

* ``GET /v1/documents?status=&since=&before=&needs_review=&limit=`` - newest first; ``since`` and
  ``before`` are ISO 8601 (``before``: the ``stored_at`` of the last row of the previous page);
  at most 200 rows per page.
* ``GET /v1/documents/{id}?version=N`` - status, text, fields, review flag, pages, regions (raw and
  corrected text, value, validity, verified text), error, ``result_version``; the newest result
  unless ``version`` names an earlier one (kept when the document is read again).
* ``GET /v1/documents/{id}/versions`` - its result versions: version, model, stored time, current.
* ``GET /v1/documents/{id}/export?format=json|txt|hocr|alto|pdf`` - standard exports; ``pdf`` is
  a searchable PDF (original pages, invisible text layer; needs the object store).
* ``GET /v1/search?q=&status=&since=&until=&template=&field=NAME:VALUE&limit=&offset=`` - ranked
  full-text + trigram search (ocrstream/storage/search.py); ``field`` filters on template or receipt
  fields (``total:13.10``), alone or with ``q``.
* ``GET /v1/failures`` - failed documents by stage and error type.
* ``GET /healthz`` - liveness (no key needed).
* Review (scope ``review``; services/store/review.py): ``GET /v1/review``,
  ``POST /v1/regions/{id}/verify``, ``GET /v1/regions/{id}/crop``, ``GET /v1/regions/{id}/corrections``
  and the page ``/review`` (login form, session cookie, CSRF token).
OpenAPI docs at ``/docs`` (schema ``/openapi.json``). Every other ``/v1`` route needs an API key
with the ``query`` scope (:mod:`ocrstream.streaming.auth`), and so do the docs when keys are required;
exports are rendered in a worker thread.

Every parameter is bounded in the schema: names and ids hold no control character (NUL included)
and at most 256 characters, ``q`` at most 500 characters without control characters but
whitespace, ``offset`` at most :data:`MAX_OFFSET`, times must exist in UTC; anything else is a
422 ``InvalidParameterError`` (:func:`ocrstream.streaming.http.create_api`), never a 500.
Request bodies over 64 KiB get 413.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import Counter, Histogram
from pydantic import StringConstraints

from ocrstream.contracts.stages import metrics_port
from ocrstream.errors import ConfigurationError, MissingObjectError
from ocrstream.ocr.decode import Budget
from ocrstream.ocr.document import Document
from ocrstream.ocr.exports import to_alto, to_hocr, to_searchable_pdf
from ocrstream.settings import Settings
from ocrstream.storage import documents
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.storage.search import MAX_LIMIT, SearchQuery, parse_field_filters, search
from ocrstream.streaming.auth import Authenticator
from ocrstream.streaming.http import MAX_NAME_CHARS, NAME_PATTERN, TEXT_PATTERN, BodyLimit, Instant, create_api
from services.store.review import add_review

log = logging.getLogger(__name__)

REQUESTS = Counter("ocrstream_api_requests_total", "Query API requests by route template and status code",
                   ["route", "status"])
REQUEST_SECONDS = Histogram("ocrstream_api_request_seconds", "Query API request latency, seconds", ["route"],
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

MAX_PAGE = 200
#: Request bodies (review corrections, the login form) at most, bytes; larger: 413.
MAX_BODY_BYTES = 64 * 1024
#: Largest ``offset`` of a search: deeper pages are refused (422) rather than ranked for nothing.
MAX_OFFSET = 10_000
#: Most ``field=`` filters of one search.
MAX_FIELD_FILTERS = 20

#: A name parameter (template, error type): bounded, no control characters.
Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)]
#: A document id in the path: bounded, no control characters.
DocumentId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=NAME_PATTERN)]
#: One ``field=NAME:VALUE`` filter.
FieldFilter = Annotated[str, StringConstraints(min_length=2, max_length=2 * MAX_NAME_CHARS, pattern=NAME_PATTERN)]


def create_app(pool: asyncpg.Pool, auth: Authenticator, store: ObjectStore | None = None,
               settings: Settings | None = None, review_pool: asyncpg.Pool | None = None) -> FastAPI:
    """The query API on ``pool``; every ``/v1`` route requires ``auth``'s ``query`` scope;
    ``store`` (the originals' bucket) serves ``format=pdf`` and review crops. With ``settings``,
    the review routes and page too (:func:`services.store.review.add_review`; ``review_pool``
    may store corrections)."""
    app = create_api("ocrstream documents", auth, "query")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if settings is not None:
        add_review(app, pool, auth, settings, store, review_pool)
    api = APIRouter(dependencies=[Depends(auth.require("query"))])

    @app.middleware("http")
    async def count_requests(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = getattr(request.scope.get("route"), "path", "other")  # the template: bounded labels
        REQUESTS.labels(route, str(response.status_code)).inc()
        REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness of the query API (``ocrstream status`` asks it)."""
        return {"ok": True}

    @api.get("/v1/documents")
    async def list_documents(status: Literal["done", "failed"] | None = None,
                             since: Instant | None = None, before: Instant | None = None,
                             needs_review: bool | None = None, error_type: Name | None = None,
                             limit: int = Query(50, ge=1, le=MAX_PAGE)) -> list[dict]:
        """Documents, newest first, filtered by status, stored time, review flag and error type;
        page with ``before`` = the last row's ``stored_at``."""
        return await documents.list_documents(pool, status=status, since=since, before=before,
                                              needs_review=needs_review, error_type=error_type, limit=limit)

    @api.get("/v1/failures")
    async def failures(since: Instant | None = None) -> list[dict]:
        """Failed documents by reason: count per stage and error type, with the newest one."""
        return await documents.failure_groups(pool, since)

    @api.get("/v1/search")
    async def search_documents(q: str = Query("", max_length=500, pattern=TEXT_PATTERN),
                               status: Literal["done", "failed"] | None = None,
                               since: Instant | None = None, until: Instant | None = None,
                               template: Name | None = None,
                               field: list[FieldFilter] = Query([], max_length=MAX_FIELD_FILTERS,
                                                                description="NAME:VALUE, repeatable"),
                               limit: int = Query(20, ge=1, le=MAX_LIMIT),
                               offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> dict:
        """Pages whose text matches ``q`` (full text, or trigram-similar for OCR-noisy words),
        best first, with the matching regions, their boxes and a ``<mark>``-highlighted snippet;
        ``field=NAME:VALUE`` filters on template or receipt fields (``q`` may then be empty)."""
        try:
            query = SearchQuery(q, status, since, until, template, parse_field_filters(field), limit, offset)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        return await search(pool, query)

    @api.get("/v1/documents/{document_id}")
    async def get_document(document_id: DocumentId, version: int | None = Query(None, ge=1, le=1_000_000)) -> dict:
        """One document with its text, pages and regions: the newest result, or result ``version``
        (earlier results are kept when a document is read again: ``ocrstream reprocess``); 404 if
        unknown."""
        if version is None:
            doc = await documents.load_document(pool, document_id)
        else:
            doc = await documents.document_version(pool, document_id, version)
        if doc is None:
            raise HTTPException(404, f"no document {document_id}" + (f" version {version}" if version else ""))
        return doc

    @api.get("/v1/documents/{document_id}/versions")
    async def get_versions(document_id: DocumentId) -> list[dict]:
        """The document's result versions, oldest first: version, model, stored_at, current (404 if unknown)."""
        found = await documents.document_versions(pool, document_id)
        if found is None:
            raise HTTPException(404, f"no document {document_id}")
        return found

    @api.get("/v1/documents/{document_id}/export")
    async def export(document_id: DocumentId, format: Literal["json", "txt", "hocr", "alto", "pdf"] = "json",
                     version: int | None = Query(None, ge=1, le=1_000_000)) -> Response:
        """The document as JSON (document model), plain text, hOCR (XHTML), ALTO v4 XML, or a
        searchable PDF (original pages with an invisible text layer; 409 unless ``done``)."""
        data = await get_document(document_id, version)
        if format == "pdf":
            return await searchable_pdf(data)
        return await asyncio.to_thread(render_export, data, format)

    budget = Budget.from_settings(settings) if settings is not None else Budget()  # the pages as they were read

    async def searchable_pdf(data: dict) -> Response:
        if data["status"] != "done" or not data["object_key"]:
            raise HTTPException(409, f"document {data['document_id']} is {data['status']}: no PDF")
        if store is None:
            raise HTTPException(503, "this query API has no object store (format=pdf unavailable)")
        try:
            original = await store.get(data["object_key"])
        except MissingObjectError as exc:  # the key stays in the log, not in the answer
            log.warning("api: the original of %s is gone: %s", data["document_id"], exc)
            raise HTTPException(410, {"error": MissingObjectError.__name__, "message":
                                      f"the original of document {data['document_id']} is no longer stored"}) from None
        doc = Document.from_results({**data, "document": {"filename": data["filename"]}})
        try:
            pdf = await asyncio.to_thread(to_searchable_pdf, doc, original, budget)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except ConfigurationError as exc:  # the pdf extra is not installed on this server
            raise HTTPException(501, str(exc)) from None
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


def run_api(settings: Settings) -> None:
    """``ocrstream run api``: serve the query API until SIGTERM/SIGINT.

    Its own read-only pool (``api_pool_size`` connections), the originals' bucket for
    ``format=pdf``, the API keys of :mod:`ocrstream.streaming.auth`; ``/metrics``, ``/healthz``,
    ``/readyz`` on ``metrics_port("api", ...)`` (9105). The port opens once the store has
    migrated the database to the schema this code reads (:func:`wait_for_schema`); PostgreSQL
    that does not answer yet is retried with backoff. Exits with status 2 on a configuration
    error (port 0, a public host without API keys).
    """
    from ocrstream.streaming import health
    from ocrstream.streaming.http import serve_until
    from ocrstream.streaming.stage import retry_transient, stop_on_signals

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop, "api", settings.shutdown_grace_s)
        probes = asyncio.create_task(health.HEALTH.run(stop))
        pools: list[asyncpg.Pool] = []

        async def connect() -> None:
            from ocrstream.storage.db import create_read_pool, create_review_pool

            read = await create_read_pool(settings, max_size=settings.api_pool_size)
            try:
                write = await create_review_pool(settings)  # corrections (the review routes)
            except BaseException:
                await read.close()
                raise
            pools.extend((read, write))

        try:
            if await wait_for_schema(settings, stop) and \
                    await retry_transient("connect to PostgreSQL", "api", settings, stop, connect):
                await serve_until(create_app(pools[0], auth, ObjectStore(settings), settings, pools[1]),
                                  settings.http_host, settings.query_port, stop, "api",
                                  header_timeout_s=settings.http_header_timeout_s,
                                  body_timeout_s=settings.http_body_timeout_s)
        finally:
            stop.set()
            await asyncio.gather(probes, return_exceptions=True)
            for pool in pools:
                await pool.close()
        log.info("api: stopped")

    try:
        if not settings.query_port:
            raise ConfigurationError("OCRSTREAM_QUERY_PORT is 0: the query API has no port to serve on")
        auth = Authenticator(settings, settings.http_host)
    except ConfigurationError as exc:
        log.error("api: cannot start: %s: %s", type(exc).__name__, exc)
        sys.exit(2)
    health.serve(metrics_port("api", settings.metrics_port), "api", settings)
    asyncio.run(main())
    if health.HEALTH.stranded:  # crash-only: PostgreSQL stayed unreachable (logged by health)
        sys.exit(health.STRANDED_EXIT_STATUS)


async def wait_for_schema(settings: Settings, stop: asyncio.Event, poll_s: float = 1.0) -> bool:
    """Wait until ``schema_migrations`` holds the newest migration of this code (the store
    applies them at its start; the API only reads a schema it knows). False if ``stop`` came first."""
    from ocrstream.storage.migrate import migration_files

    newest = migration_files()[-1][0]
    dsn = settings.api_postgres_dsn.get_secret_value() if settings.api_postgres_dsn else settings.dsn
    said = False
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn, timeout=settings.postgres_timeout_s)
            try:
                if await conn.fetchval("SELECT true FROM schema_migrations WHERE version = $1", newest):
                    return True
            finally:
                await conn.close()
            reason = f"migration {newest} not applied yet"
        except (OSError, asyncio.TimeoutError, asyncpg.PostgresError) as exc:  # down, or no table/grant yet
            reason = f"{type(exc).__name__}: {exc}"
        if not said:
            log.info("api: waiting for the store to migrate the database (%s)", reason)
            said = True
        try:
            await asyncio.wait_for(stop.wait(), poll_s)
        except asyncio.TimeoutError:
            pass
    return False
