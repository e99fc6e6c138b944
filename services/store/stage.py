"""store: documents, pages and regions into PostgreSQL, then ``ocr.results.v1`` out.

Consumes ``ocr.recognized.v1`` (successes) and ``ocr.dlq.v1`` (failures of any stage).

Each region is post-processed first (:mod:`services.store.postprocess`: NFKC, template field
validation and confusable fixes, confidence-protected lexicon correction, ``needs_review``);
raw and corrected text are both kept.

Writes are an idempotent sink: one transaction per document, upserts keyed on ``document_id``
and ``(document_id, region_id)``; the row records its *version* (the recognized or dead-letter
timestamp) and when its results event was acked (``published_at``). A redelivered event of a
published version writes nothing and emits no second results event; a replay that recognised
the document again is a new version and replaces it. A ``failed`` row never overwrites a
``done`` one. Only after the commit is the results event produced, and only after the broker
acks it (and ``published_at`` is set) is the offset committed (at-least-once).

The results event's ``text`` is the document in reading order: regions of a visual line joined
by a space, lines by ``\\n``, pages by ``\\f``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import datetime

import logging

from aiokafka import ConsumerRecord

from services.core import events, metrics
from services.core.auth import Authenticator
from services.core.db import create_pool
from services.core.errors import is_transient
from services.core.http import serve_until
from services.core.names import clean_text, strip_nul
from services.core.objectstore import ObjectStore
from services.core.stage import Output, Stage
from services.document import Document
from services.pipeline.correct import correct_region
from services.store.api import create_app
from services.store.migrate import apply_migrations
from services.store.postprocess import PostProcessor


log = logging.getLogger(__name__)

PARK = """
INSERT INTO parked_events (topic, part, "offset", payload, error) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (topic, part, "offset") DO NOTHING
"""


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


UPSERT_DONE = """
INSERT INTO documents (document_id, status, source, filename, object_key, content_sha256, size_bytes,
    text, recognizer, provider, submitted_at, ingested_at, preprocessed_at, recognized_at, stored_at,
    version, template, needs_review, fields, published_at, error_stage, error_type, error_message)
VALUES ($1, 'done', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18::jsonb,
    NULL, NULL, NULL, NULL)
ON CONFLICT (document_id) DO UPDATE SET status = 'done', version = EXCLUDED.version,
    template = EXCLUDED.template, needs_review = EXCLUDED.needs_review, fields = EXCLUDED.fields,
    published_at = NULL, source = EXCLUDED.source,
    filename = EXCLUDED.filename, object_key = EXCLUDED.object_key,
    content_sha256 = EXCLUDED.content_sha256, size_bytes = EXCLUDED.size_bytes, text = EXCLUDED.text,
    recognizer = EXCLUDED.recognizer, provider = EXCLUDED.provider,
    submitted_at = EXCLUDED.submitted_at, ingested_at = EXCLUDED.ingested_at,
    preprocessed_at = EXCLUDED.preprocessed_at, recognized_at = EXCLUDED.recognized_at,
    stored_at = EXCLUDED.stored_at, error_stage = NULL, error_type = NULL, error_message = NULL
"""

UPSERT_PAGE = """
INSERT INTO pages (document_id, page_index, width, height) VALUES ($1, $2, $3, $4)
ON CONFLICT (document_id, page_index) DO UPDATE SET width = EXCLUDED.width, height = EXCLUDED.height
"""

UPSERT_REGION = """
INSERT INTO regions (document_id, region_id, page_index, line_index, reading_order, x0, y0, x1, y1,
    quad, crop_key, detection_score, text, confidence, words, field, raw_text, value, valid, reason, needs_review,
    block_index)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15::jsonb, $16::jsonb,
    $17, $18::jsonb, $19, $20, $21, $22)
ON CONFLICT (document_id, region_id) DO UPDATE SET page_index = EXCLUDED.page_index,
    line_index = EXCLUDED.line_index, reading_order = EXCLUDED.reading_order,
    x0 = EXCLUDED.x0, y0 = EXCLUDED.y0, x1 = EXCLUDED.x1, y1 = EXCLUDED.y1, quad = EXCLUDED.quad,
    crop_key = EXCLUDED.crop_key, detection_score = EXCLUDED.detection_score,
    text = EXCLUDED.text, confidence = EXCLUDED.confidence, words = EXCLUDED.words,
    field = EXCLUDED.field, raw_text = EXCLUDED.raw_text, value = EXCLUDED.value, valid = EXCLUDED.valid,
    reason = EXCLUDED.reason, needs_review = EXCLUDED.needs_review, block_index = EXCLUDED.block_index
"""

UPSERT_FAILED = """
INSERT INTO documents (document_id, status, source, filename, object_key, content_sha256, size_bytes,
    error_stage, error_type, error_message, submitted_at, ingested_at, stored_at, version)
VALUES ($1, 'failed', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (document_id) DO UPDATE SET status = 'failed', version = EXCLUDED.version,
    published_at = NULL, error_stage = EXCLUDED.error_stage,
    error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,
    stored_at = EXCLUDED.stored_at
WHERE documents.status <> 'done' AND documents.version <> EXCLUDED.version
"""

RESULT_REGION_KEYS = ("region_id", "page_index", "block_index", "line_index", "order", "box", "quad", "detection_score",
                      "text", "confidence", "words", "field", "raw_text", "value", "valid", "reason",
                      "needs_review")

PUBLISHED_VERSION = "SELECT 1 FROM documents WHERE document_id = $1 AND version = $2 AND published_at IS NOT NULL"

MARK_PUBLISHED = "UPDATE documents SET published_at = now() WHERE document_id = $1 AND version = $2"


class StoreStage(Stage):
    """The idempotent PostgreSQL sink and producer of ``ocr.results.v1``."""

    name = "store"
    input_topics = (events.RECOGNIZED, events.DLQ)

    async def setup(self) -> None:
        self.postprocessor = PostProcessor(
            review_threshold=self.settings.review_threshold,
            enabled_rules=[r for r in self.settings.postprocess_rules.split(",") if r])
        await asyncio.to_thread(self.postprocessor.preload)  # symspell index: ~4 s once
        if self.settings.query_port:
            Authenticator(self.settings, self.settings.http_host)  # fail start-up on a bad auth setting
        self.pool = await create_pool(self.settings, max_size=4)
        async with self.pool.acquire() as conn:
            await apply_migrations(conn)

    def background(self):
        return [self._serve_api] if self.settings.query_port else []

    async def _serve_api(self, stop) -> None:
        """The query API on its own loop and pool (the sink's loop never serves HTTP); the
        object store serves searchable PDFs from the originals."""
        auth = Authenticator(self.settings, self.settings.http_host)
        pool = await create_pool(self.settings, max_size=4)
        try:
            await serve_until(create_app(pool, auth, ObjectStore(self.settings)), self.settings.http_host,
                              self.settings.query_port, stop, self.name)
        finally:
            await pool.close()

    async def teardown(self) -> None:
        if getattr(self, "pool", None) is not None:
            await self.pool.close()

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        if record.topic == events.DLQ:
            output = await self.store_dead_letter(record)
        else:
            output = await self.store_done(events.decode(events.RECOGNIZED, record.value))
        return [output] if output else []

    async def published(self, outputs: Sequence[Output]) -> None:
        """Mark each results event's document version as published (the broker acked it)."""
        await self.pool.executemany(MARK_PUBLISHED, [
            (o.key, o.event["timestamps"].get("failed") or o.event["timestamps"]["recognized"])
            for o in outputs if o.topic == events.RESULTS])

    async def store_done(self, event: events.Event) -> Output | None:
        """Upsert a recognised document with its pages and regions; its results event.

        None when this version (``timestamps.recognized``) is already stored and published.
        """
        doc, ts = event["document"], dict(event["timestamps"])
        ts["stored"] = events.now_iso()
        doc_id, version = event["document_id"], ts["recognized"]
        if await self.pool.fetchval(PUBLISHED_VERSION, doc_id, version):
            return None  # redelivered: this version is stored and its results event was acked
        regions = [correct_region(self.postprocessor, r) for r in event["regions"]]
        text = Document.from_results({**event, "status": "done", "regions": regions}).render_text()
        fields = {r["field"]["name"]: {k: r[k] for k in ("value", "text", "valid")} for r in regions if "field" in r}
        needs_review = any(r["needs_review"] for r in regions)
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                UPSERT_DONE, doc_id, doc["source"], clean_text(doc.get("filename")), doc["object_key"],
                doc["content_sha256"], doc["size_bytes"], text, event["recognizer"]["name"],
                event["recognizer"]["provider"], _ts(ts.get("submitted")), _ts(ts.get("ingested")),
                _ts(ts.get("preprocessed")), _ts(ts.get("recognized")), _ts(ts["stored"]), version,
                doc.get("template"), needs_review, json.dumps(fields) if fields else None)
            # A new version may have fewer regions/pages: drop what it no longer has.
            await conn.execute("DELETE FROM regions WHERE document_id = $1 AND NOT region_id = ANY($2::text[])",
                               doc_id, [r["region_id"] for r in regions])
            await conn.execute("DELETE FROM pages WHERE document_id = $1 AND NOT page_index = ANY($2::int[])",
                               doc_id, [p["page_index"] for p in event["pages"]])
            await conn.executemany(UPSERT_PAGE, [
                (doc_id, p["page_index"], p["width"], p["height"]) for p in event["pages"]])
            await conn.executemany(UPSERT_REGION, [
                (doc_id, r["region_id"], r["page_index"], r["line_index"], r["order"], *r["box"],
                 json.dumps(r.get("quad")), r.get("crop_key"), r.get("detection_score"),
                 r["text"], r["confidence"], json.dumps(r.get("words", [])),
                 json.dumps(r["field"]) if "field" in r else None, r["raw_text"], json.dumps(r["value"]),
                 r["valid"], r["reason"], r["needs_review"], r.get("block_index", 0)) for r in regions])
        result_regions = [{k: r[k] for k in RESULT_REGION_KEYS if k in r} for r in regions]
        result = self._result(doc_id, "done", doc, ts, text, event["pages"], result_regions, None)
        result.event.update({"needs_review": needs_review, "fields": fields, "recognizer": event["recognizer"]})
        return result

    async def store_dead_letter(self, record: ConsumerRecord) -> Output | None:
        """:meth:`store_failed` for a dead-letter record, which is never dropped: transient
        faults propagate (retried); anything else parks the record whole in ``parked_events``
        (counted in ``ocrstream_dead_letters_parked_total``) and logs it."""
        try:
            return await self.store_failed(events.decode(events.DLQ, record.value))
        except Exception as exc:
            if is_transient(exc):
                raise
            log.error("store: dead letter %s@%d/%d cannot be recorded (%s: %s); parked",
                      record.topic, record.partition, record.offset, type(exc).__name__, exc)
            await self.pool.execute(PARK, record.topic, record.partition, record.offset, record.value or b"",
                                    strip_nul(f"{type(exc).__name__}: {exc}"))
            metrics.DEAD_LETTERS_PARKED.labels(self.name).inc()
            return None

    async def store_failed(self, dead: events.Event) -> Output | None:
        """Upsert a ``failed`` document row from a dead letter; its results event.

        None (no row changed, no event) when the document is already ``done``, or when this
        dead letter was stored and its results event published before (a redelivery).
        """
        original = dead.get("original") or {}
        doc = dict(original.get("document") or {})
        doc.setdefault("filename", original.get("filename"))
        doc["filename"] = clean_text(doc.get("filename"))
        ts = dict(original.get("timestamps") or {})
        ts["stored"] = events.now_iso()
        error = dead["error"]
        status = await self.pool.execute(
            UPSERT_FAILED, dead["document_id"], doc.get("source") or original.get("source"),
            doc.get("filename"), doc.get("object_key"), doc.get("content_sha256"),
            doc.get("size_bytes"), error["stage"], error["type"], strip_nul(error["message"]),
            _ts(ts.get("submitted")), _ts(ts.get("ingested")), _ts(ts["stored"]), dead["failed_at"])
        if status.endswith(" 0"):  # "INSERT 0 0": a done row, or this dead letter already stored
            if not await self.pool.fetchval("SELECT published_at IS NULL FROM documents"
                                            " WHERE document_id = $1 AND version = $2",
                                            dead["document_id"], dead["failed_at"]):
                return None
        ts.setdefault("ingested", dead["failed_at"])
        ts["failed"] = dead["failed_at"]
        return self._result(dead["document_id"], "failed", doc if "object_key" in doc else None, ts,
                            "", [], [], error)

    @staticmethod
    def _result(doc_id, status, doc, ts, text, pages, regions, error) -> Output:
        event = {"schema": events.RESULTS, "version": 1, "document_id": doc_id, "status": status,
                 "timestamps": ts, "text": text, "pages": pages, "regions": regions, "error": error}
        if doc is not None:
            event["document"] = doc
        return Output(events.RESULTS, doc_id, event)
