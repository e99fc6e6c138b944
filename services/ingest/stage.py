"""ingest: originals into the bucket, ``ocr.ingested.v1`` out (claim check).

Three doors, one path (:class:`Ingestor`):

* ``ocrstream submit PATH...`` (files or folders) - :class:`Submitter`, in the caller's process;
* ``POST /v1/documents`` (FastAPI, multipart field ``file``) - served by ``ocrstream run ingest``;
* the raw topic ``ocr.raw.v1`` - messages whose value is the document's bytes (key: optional
  document id; headers ``filename`` and ``template``), consumed by ``ocrstream run ingest``.

A document may name a fixed-layout template (``--template``, form field or header ``template``).

The original is stored under a content-addressed key ``originals/<sha256[:2]>/<sha256>`` (so a
re-submission of the same bytes stores nothing new) and the event carries only that key.
Empty and oversized documents are rejected here with a typed error and a dead letter; whether
the bytes are an image is the preprocess stage's call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import ConsumerRecord
from fastapi import FastAPI, File, Form, HTTPException, UploadFile

from services.core import events, metrics
from services.core.errors import BadInputError, DocumentTooLargeError, EmptyDocumentError
from services.core.http import serve_until
from services.core.objectstore import ObjectStore
from services.core.settings import Settings
from services.core.stage import Output, Stage, dead_letter, ensure_topics, make_producer, produce

log = logging.getLogger(__name__)


def original_key(sha256: str) -> str:
    """Content-addressed object key of an original: ``originals/ab/ab12...`` (64 hex digits)."""
    return f"originals/{sha256[:2]}/{sha256}"


class Ingestor:
    """Validates a document's bytes, stores them once, and builds its ``ingested`` event.

    With ``duplicates="reuse"`` a document whose bytes (and template) were already processed
    to ``done`` is not processed again: :meth:`ingest` returns the earlier document's id instead
    of an event (looked up by content hash in PostgreSQL, the store stage's table).
    """

    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        """Ensure the bucket; connect to PostgreSQL when duplicates are reused."""
        await self.store.ensure_bucket()
        if self.settings.duplicates == "reuse":
            self.pool = await asyncpg.create_pool(self.settings.postgres_dsn, min_size=1, max_size=2)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def find_done(self, sha256: str, template: str | None) -> str | None:
        """Id of the newest ``done`` document with these bytes and template, if reuse is on."""
        if self.pool is None:
            return None
        return await self.pool.fetchval(
            "SELECT document_id FROM documents WHERE content_sha256 = $1 AND status = 'done'"
            " AND template IS NOT DISTINCT FROM $2 ORDER BY stored_at DESC LIMIT 1", sha256, template)

    def check(self, data: bytes) -> None:
        """Raise EmptyDocumentError / DocumentTooLargeError (limit ``max_document_bytes``)."""
        if not data:
            raise EmptyDocumentError("document is empty (0 bytes)")
        if len(data) > self.settings.max_document_bytes:
            raise DocumentTooLargeError(
                f"document is {len(data)} bytes; the limit is {self.settings.max_document_bytes} "
                "(OCRSTREAM_MAX_DOCUMENT_BYTES)")

    async def ingest(self, data: bytes, *, document_id: str, filename: str | None, source: str,
                     submitted: str | None = None, template: str | None = None) -> Output | str:
        """Store ``data`` (if new) and return its ``ocr.ingested.v1`` event, or the id of an
        earlier ``done`` document with the same bytes when duplicates are reused.

        Raises BadInputError (empty, too large).
        """
        try:
            self.check(data)
        except BadInputError as exc:
            metrics.count_rejected(source, exc)
            raise
        sha = hashlib.sha256(data).hexdigest()
        if (earlier := await self.find_done(sha, template)) is not None:
            log.info("ingest: %s has the bytes of done document %s: reused", filename or document_id, earlier)
            return earlier
        key = original_key(sha)
        if not await self.store.exists(key):
            await self.store.put(key, data)
        event = {
            "schema": events.INGESTED,
            "document_id": document_id,
            "document": {"object_key": key, "content_sha256": sha, "size_bytes": len(data),
                         "filename": filename, "source": source, "template": template},
            "timestamps": {"submitted": submitted or events.now_iso(), "ingested": events.now_iso()},
        }
        metrics.count_ingested(source, len(data))
        return Output(events.INGESTED, document_id, event)


def new_document_id() -> str:
    """A fresh document id (UUID4, 32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Receipt:
    """What a submission got: its document id, and either its object key or its error."""

    document_id: str
    filename: str | None
    object_key: str | None = None
    error: BadInputError | None = None
    reused: bool = False  # document_id is an earlier document with the same bytes


class Submitter:
    """Submits documents from this process (CLI, HTTP API): store, then produce the event.

    Bad input is dead-lettered (so the store stage records a ``failed`` row) and reported in
    the :class:`Receipt`; transient faults propagate to the caller.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ingestor = Ingestor(settings, ObjectStore(settings))
        self.producer = make_producer(settings)

    async def __aenter__(self) -> "Submitter":
        await ensure_topics(self.settings)
        await self.ingestor.start()
        await self.producer.start()
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.producer.stop()
        await self.ingestor.close()

    async def submit(self, data: bytes, filename: str | None, source: str,
                     template: str | None = None) -> Receipt:
        """Ingest one document; returns its Receipt (``error`` set when it was rejected).

        ``template`` names a fixed-layout template (see services/preprocess/templates.py).
        """
        document_id = new_document_id()
        submitted = events.now_iso()
        try:
            output = await self.ingestor.ingest(data, document_id=document_id, filename=filename,
                                                source=source, submitted=submitted, template=template)
        except BadInputError as exc:
            original = {"document_id": document_id, "filename": filename, "source": source}
            await produce(self.producer, [dead_letter("ingest", exc, document_id=document_id,
                                                      source={"topic": source}, original=original,
                                                      size_bytes=len(data))])
            return Receipt(document_id, filename, error=exc)
        if isinstance(output, str):
            return Receipt(output, filename, reused=True)
        await produce(self.producer, [output])
        metrics.observe_outputs("ingest", [output])
        return Receipt(document_id, filename, object_key=output.event["document"]["object_key"])


def iter_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named by ``paths``: files as given, folders expanded (sorted, recursively, no dotfiles)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        else:
            found.append(path)
    return found


def create_app(submitter: Submitter) -> FastAPI:
    """The ingest HTTP API: ``POST /v1/documents`` and ``GET /healthz``."""
    app = FastAPI(title="ocrstream ingest", version="1")

    @app.post("/v1/documents", status_code=202)
    async def post_document(file: UploadFile = File(...), template: str | None = Form(None)) -> dict:
        """Submit one document (multipart field ``file``, optional ``template`` name);
        202 with its id, 413/422 with the error if rejected."""
        data = await file.read(submitter.settings.max_document_bytes + 1)
        receipt = await submitter.submit(data, file.filename, "http", template)
        if receipt.error is not None:
            status = 413 if isinstance(receipt.error, DocumentTooLargeError) else 422
            raise HTTPException(status, detail={"document_id": receipt.document_id,
                                                "error": type(receipt.error).__name__,
                                                "message": str(receipt.error)})
        return {"document_id": receipt.document_id, "object_key": receipt.object_key,
                "status": "reused" if receipt.reused else "accepted"}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"ok": True}

    return app


class IngestStage(Stage):
    """Consumes ``ocr.raw.v1`` (document bytes) and serves the HTTP API beside it."""

    name = "ingest"
    input_topics = (events.RAW,)

    async def setup(self) -> None:
        self.ingestor = Ingestor(self.settings, ObjectStore(self.settings))
        await self.ingestor.start()

    async def teardown(self) -> None:
        await self.ingestor.close()

    def background(self):
        return [self._serve_http] if self.settings.http_port else []

    async def _serve_http(self, stop: asyncio.Event) -> None:
        async with Submitter(self.settings) as submitter:
            await serve_until(create_app(submitter), self.settings.http_host, self.settings.http_port,
                              stop, self.name)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        headers = dict(record.headers or ())
        filename = headers.get("filename", b"").decode("utf-8", "replace") or None
        template = headers.get("template", b"").decode("utf-8", "replace") or None
        # Deterministic id: a redelivered raw message maps to the same document.
        document_id = (record.key.decode("utf-8", "replace") if record.key
                       else f"raw-{record.topic}-{record.partition}-{record.offset}")
        output = await self.ingestor.ingest(record.value or b"", document_id=document_id,
                                            filename=filename, source="kafka", template=template)
        return [] if isinstance(output, str) else [output]
