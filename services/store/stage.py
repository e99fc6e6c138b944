"""store: documents, pages and regions into PostgreSQL, then ``ocr.results.v1`` out.

Consumes ``ocr.recognized.v1`` (successes) and ``ocr.dlq.v1`` (failures of any stage).

Each region is post-processed first (:mod:`ocrstream.ocr.postprocess.processor`: NFKC, template field
validation and confusable fixes, confidence-protected lexicon correction, ``needs_review``);
raw and corrected text are both kept. A document without a template gets its receipt fields
(vendor, address, date, total, ...: :mod:`ocrstream.ocr.receipt_fields`; off with
``OCRSTREAM_RECEIPT_FIELDS=off``) where template fields go: ``documents.fields`` and the results
event's ``fields``.

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
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
from aiokafka import ConsumerRecord

from ocrstream.contracts import events
from ocrstream.contracts.event_models import (
    UNSET,
    DeadLetterEvent,
    DocumentRef,
    FieldResult,
    RecognizedEvent,
    RecognizedRegion,
    ResultRegion,
    ResultsEvent,
    StageCost,
    Timestamps,
    UnsetType,
)
from ocrstream.ocr.document import Document
from ocrstream.ocr.postprocess.correct import correct_region
from ocrstream.ocr.postprocess.processor import PostProcessor, silent_pages
from ocrstream.ocr.receipt_fields import document_fields
from ocrstream.ocr.receipt_fields import preload as preload_receipt_fields
from ocrstream.settings import Settings
from ocrstream.storage import outbox, usage
from ocrstream.storage.crops import stored_crop
from ocrstream.storage.db import create_pool
from ocrstream.storage.documents import read_document
from ocrstream.storage.migrate import apply_migrations
from ocrstream.streaming import costs, metrics, tracing, webhooks
from ocrstream.streaming.names import clean_text, strip_nul
from ocrstream.streaming.retry import is_transient
from ocrstream.streaming.stage import Output, Stage

log = logging.getLogger(__name__)
T = TypeVar("T")

PARK = """
INSERT INTO parked_events (topic, part, "offset", payload, error) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (topic, part, "offset") DO NOTHING
"""


def _ts(value: str | None | UnsetType) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


UPSERT_DONE = """
INSERT INTO documents (document_id, status, source, filename, object_key, content_sha256, size_bytes,
    text, recognizer, provider, submitted_at, ingested_at, preprocessed_at, recognized_at, stored_at,
    version, template, needs_review, fields, published_at, error_stage, error_type, error_message, model,
    result_version)
VALUES ($1, 'done', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18::jsonb,
    NULL, NULL, NULL, NULL, $19, $20)
ON CONFLICT (document_id) DO UPDATE SET status = 'done', version = EXCLUDED.version,
    template = EXCLUDED.template, needs_review = EXCLUDED.needs_review, fields = EXCLUDED.fields,
    published_at = NULL, source = EXCLUDED.source,
    filename = EXCLUDED.filename, object_key = EXCLUDED.object_key,
    content_sha256 = EXCLUDED.content_sha256, size_bytes = EXCLUDED.size_bytes, text = EXCLUDED.text,
    recognizer = EXCLUDED.recognizer, provider = EXCLUDED.provider, model = EXCLUDED.model,
    result_version = EXCLUDED.result_version,
    submitted_at = EXCLUDED.submitted_at, ingested_at = EXCLUDED.ingested_at,
    preprocessed_at = EXCLUDED.preprocessed_at, recognized_at = EXCLUDED.recognized_at,
    stored_at = EXCLUDED.stored_at, error_stage = NULL, error_type = NULL, error_message = NULL,
    replay_pending_since = NULL
"""

UPSERT_PAGE = """
INSERT INTO pages (document_id, page_index, width, height, text_source) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (document_id, page_index) DO UPDATE SET width = EXCLUDED.width, height = EXCLUDED.height,
    text_source = EXCLUDED.text_source
"""

UPSERT_REGION = """
INSERT INTO regions (document_id, region_id, page_index, line_index, reading_order, x0, y0, x1, y1,
    quad, crop_key, detection_score, text, confidence, words, field, raw_text, value, valid, reason, needs_review,
    block_index, source, char_probs)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, $15::jsonb, $16::jsonb,
    $17, $18::jsonb, $19, $20, $21, $22, $23, $24::jsonb)
ON CONFLICT (document_id, region_id) DO UPDATE SET page_index = EXCLUDED.page_index,
    line_index = EXCLUDED.line_index, reading_order = EXCLUDED.reading_order,
    x0 = EXCLUDED.x0, y0 = EXCLUDED.y0, x1 = EXCLUDED.x1, y1 = EXCLUDED.y1, quad = EXCLUDED.quad,
    crop_key = EXCLUDED.crop_key, detection_score = EXCLUDED.detection_score,
    text = EXCLUDED.text, confidence = EXCLUDED.confidence, words = EXCLUDED.words,
    field = EXCLUDED.field, raw_text = EXCLUDED.raw_text, value = EXCLUDED.value, valid = EXCLUDED.valid,
    reason = EXCLUDED.reason, needs_review = EXCLUDED.needs_review, block_index = EXCLUDED.block_index,
    source = EXCLUDED.source, char_probs = EXCLUDED.char_probs
"""

UPSERT_FAILED = """
INSERT INTO documents (document_id, status, source, filename, object_key, content_sha256, size_bytes,
    error_stage, error_type, error_message, submitted_at, ingested_at, stored_at, version)
VALUES ($1, 'failed', $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (document_id) DO UPDATE SET status = 'failed', version = EXCLUDED.version,
    published_at = NULL, error_stage = EXCLUDED.error_stage,
    error_type = EXCLUDED.error_type, error_message = EXCLUDED.error_message,
    stored_at = EXCLUDED.stored_at, replay_pending_since = NULL
WHERE documents.status <> 'done' AND documents.version <> EXCLUDED.version
"""

#: Attributes of the ``db write`` span (OpenTelemetry database conventions).
DB_ATTRIBUTES = {"db.system.name": "postgresql", "db.operation.name": "upsert"}

PUBLISHED_VERSION = "SELECT 1 FROM documents WHERE document_id = $1 AND version = $2 AND published_at IS NOT NULL"

MARK_PUBLISHED = "UPDATE documents SET published_at = now() WHERE document_id = $1 AND version = $2"


class StoreStage(Stage):
    """The idempotent PostgreSQL sink and producer of ``ocr.results.v1`` (only a sink: the query
    API over these tables is its own process, ``ocrstream run api``, services/store/api.py)."""

    name = "store"
    input_topics = (events.RECOGNIZED, events.DLQ)

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.tenants = costs.TenantLabels(settings.cost_max_key_labels)  # bounded api_key labels

    async def setup(self) -> None:
        self.postprocessor = PostProcessor(
            review_threshold=self.settings.review_threshold,
            enabled_rules=[r for r in self.settings.postprocess_rules.split(",") if r])
        await asyncio.to_thread(self.postprocessor.preload)  # symspell index: ~4 s once
        if self.settings.receipt_fields:
            await asyncio.to_thread(preload_receipt_fields)  # its word list, before the first document
        self.pool = await create_pool(self.settings, max_size=4)
        async with self.pool.acquire() as conn:
            await apply_migrations(conn)

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
            (o.key, o.event.timestamps.failed or o.event.timestamps.recognized)
            for o in outputs if isinstance(o.event, ResultsEvent)])

    async def store_done(self, event: RecognizedEvent) -> Output | None:
        """Upsert a recognised document with its pages and regions; its results event.

        None when this version (``timestamps.recognized``) is already stored and published.
        """
        doc = event.document
        ts = msgspec.structs.replace(event.timestamps, stored=events.now_iso())
        doc_id, version = event.document_id, ts.recognized
        if await self.pool.fetchval(PUBLISHED_VERSION, doc_id, version):
            return None  # redelivered: this version is stored and its results event was acked
        # CPU work (symspell lookups, field rules, reading order): in a worker thread, so the
        # handler loop keeps serving its PostgreSQL pool and the runtime's calls meanwhile.
        async with tracing.span("postprocess", {"ocrstream.regions": len(event.regions)}):
            regions, text, fields = await asyncio.to_thread(self.postprocess_document, event)
        silent = silent_pages([(p.page_index, p.ink if isinstance(p.ink, (int, float)) else None)
                               for p in event.pages if p.text_source != "pdf-text"],
                              [(r.page_index, r.text) for r in regions], self.settings.review_ink_fraction)
        if silent:
            log.info("store: %s page(s) %s hold ink but no text: needs_review", doc_id, [i + 1 for i in silent])
        needs_review = bool(silent) or any(r.needs_review for r in regions)
        async with tracing.span("db write", DB_ATTRIBUTES), self.pool.acquire() as conn, conn.transaction():
            previous = await self._keep_previous_result(conn, doc_id, version)
            result_version = previous + 1 if previous else await conn.fetchval(
                "SELECT result_version FROM documents WHERE document_id = $1", doc_id) or 1
            result = ResultsEvent(
                version=1, document_id=doc_id, status="done", timestamps=ts, text=text, pages=event.pages,
                regions=regions, error=None, document=doc, needs_review=needs_review, fields=fields,
                recognizer=event.recognizer, result_version=result_version, previous_version=previous or None)
            await conn.execute(
                UPSERT_DONE, doc_id, doc.source, clean_text(doc.filename or None), doc.object_key,
                doc.content_sha256, doc.size_bytes, text, event.recognizer.name,
                event.recognizer.provider, _ts(ts.submitted), _ts(ts.ingested),
                _ts(ts.preprocessed), _ts(ts.recognized), _ts(ts.stored), version,
                doc.template or None, needs_review,
                _json(fields) if fields else None, _opt(event.recognizer.model), result_version)
            # A new version may have fewer regions/pages: drop what it no longer has (verified
            # regions of an earlier result, renamed kept-N-..., stay until matched below).
            await conn.execute("DELETE FROM regions WHERE document_id = $1 AND NOT region_id = ANY($2::text[])"
                               " AND NOT (region_id LIKE 'kept-%' AND verified_text IS NOT NULL)",
                               doc_id, [r.region_id for r in regions])
            await conn.execute("DELETE FROM pages WHERE document_id = $1 AND NOT page_index = ANY($2::int[])",
                               doc_id, [p.page_index for p in event.pages])
            await conn.executemany(UPSERT_PAGE, [
                (doc_id, p.page_index, p.width, p.height, _opt(p.text_source)) for p in event.pages])
            await conn.executemany(UPSERT_REGION, [
                (doc_id, r.region_id, r.page_index, r.line_index, r.order, *r.box,
                 _json(_opt(r.quad)), stored_crop(seen), _opt(r.detection_score),
                 r.text, r.confidence, _json(r.words or []),
                 _json(r.field) if r.field else None, r.raw_text,
                 json.dumps(r.value), r.valid, r.reason, r.needs_review, r.block_index or 0, _opt(r.source),
                 _json(seen.char_probs) if seen.char_probs is not UNSET else None)
                for r, seen in zip(regions, event.regions)])
            if previous:
                await self._carry_verified(conn, doc_id, regions)
            # the store's own cost: up to here (its commit, produce and offset commit follow)
            result = msgspec.structs.replace(result, costs=[*(event.costs or []), self.cost_so_far()])
            await self.enqueue_webhook(conn, result, str(version), webhooks.callback_of(doc)  # same transaction
                                       or await outbox.key_webhook(conn, doc.api_key or None))
            await self.record_cost(conn, result, str(version), doc)
        self.count_cost(result)
        return Output(events.RESULTS, doc_id, result)

    def cost_so_far(self) -> StageCost:
        """This stage's cost of the document in hand so far (:mod:`ocrstream.streaming.costs`)."""
        return (costs.current() or costs.Meter(self.name)).read()

    async def record_cost(self, conn: Any, result: ResultsEvent, version: str, doc: DocumentRef | dict) -> None:
        """The result's costs into ``document_costs`` (ocrstream/storage/usage.py; caller's transaction)."""
        ref = events.to_json_object(doc) if isinstance(doc, DocumentRef) else doc
        await usage.record(conn, result.document_id, version, result.status, api_key=ref.get("api_key"),
                           door=ref.get("source"), template=ref.get("template"), pages=len(result.pages),
                           stages=[events.to_json_object(c) for c in result.costs or []])

    def count_cost(self, result: ResultsEvent) -> None:
        """Count the stored result's pages and CPU seconds per API key and door (Prometheus)."""
        doc = result.document or None
        costs.count_tenant(self.tenants, doc.api_key or None if doc else None, doc.source if doc else None,
                           len(result.pages), costs.totals(result.costs)["cpu_s"])

    async def _keep_previous_result(self, conn: Any, doc_id: str, version: str | UnsetType) -> int:
        """When ``version`` replaces a done result of another version: snapshot that result into
        ``document_versions``, rename its verified regions ``kept-<n>-<region_id>`` (with their
        correction history) so the new regions cannot take their ids; returns its result version
        ``n``. 0 when there is no earlier done result (first store, a redelivery, failed before)."""
        row = await conn.fetchrow("SELECT status, version, result_version, model, stored_at FROM documents"
                                  " WHERE document_id = $1 FOR UPDATE", doc_id)
        if row is None or row["status"] != "done" or row["version"] == version:
            return 0
        n = int(row["result_version"])
        snapshot = await read_document(conn, doc_id)
        await conn.execute("INSERT INTO document_versions (document_id, result_version, model, stored_at, result)"
                           " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING", doc_id, n, row["model"],
                           row["stored_at"], json.dumps(snapshot, default=str))
        renamed = await conn.fetch(
            "UPDATE regions SET region_id = 'kept-' || $2::int || '-' || region_id WHERE document_id = $1"
            " AND verified_text IS NOT NULL AND region_id NOT LIKE 'kept-%' RETURNING region_id", doc_id, n)
        for r in renamed:
            old = r["region_id"].split("-", 2)[2]
            await conn.execute("UPDATE region_corrections SET region_id = $3 WHERE document_id = $1 AND region_id = $2",
                               doc_id, old, r["region_id"])
        return n

    async def _carry_verified(self, conn: Any, doc_id: str, regions: Sequence[ResultRegion]) -> None:
        """Give each verified region of the earlier result (``kept-...``) to the new region on
        its page that overlaps it most (box IoU >= :data:`CARRY_MIN_IOU`, each new region once):
        verified text, who, when and correction history move; the kept row goes. A verified
        region without such a match stays as it is (never lost)."""
        kept = await conn.fetch("SELECT region_id, page_index, x0, y0, x1, y1, verified_text, verified_by, verified_at"
                                " FROM regions WHERE document_id = $1 AND region_id LIKE 'kept-%'"
                                " AND verified_text IS NOT NULL ORDER BY verified_at", doc_id)
        taken: set[str] = set()
        for k in kept:
            box = (k["x0"], k["y0"], k["x1"], k["y1"])
            scored = [(iou(box, tuple(r.box)), r.region_id) for r in regions
                      if r.page_index == k["page_index"] and r.region_id not in taken]
            best = max(scored, default=(0.0, ""))
            if best[0] < CARRY_MIN_IOU:
                continue
            taken.add(best[1])
            await conn.execute("UPDATE regions SET verified_text = $3, verified_by = $4, verified_at = $5"
                               " WHERE document_id = $1 AND region_id = $2", doc_id, best[1], k["verified_text"],
                               k["verified_by"], k["verified_at"])
            await conn.execute("UPDATE region_corrections SET region_id = $3 WHERE document_id = $1 AND region_id = $2",
                               doc_id, k["region_id"], best[1])
            await conn.execute("DELETE FROM regions WHERE document_id = $1 AND region_id = $2", doc_id, k["region_id"])

    def postprocess_document(self, event: RecognizedEvent) -> tuple[list[ResultRegion], str, dict[str, FieldResult]]:
        """Every region of a recognized event post-processed (:meth:`postprocess`), the
        document's text in reading order (lines by ``\\n``, pages by ``\\f``) and its fields:
        the template fields of its regions, else (``OCRSTREAM_RECEIPT_FIELDS``, a document
        without a template) the receipt fields (:func:`ocrstream.ocr.receipt_fields.document_fields`,
        as :class:`~ocrstream.ocr.predictor.OCRPipeline`). Pure CPU, no I/O."""
        regions = [self.postprocess(r) for r in event.regions]
        doc = Document.from_parts(event.document_id, "done", event.pages, regions)
        fields = {r.field.name: FieldResult(value=r.value, text=r.text, valid=r.valid)
                  for r in regions if r.field}
        if not fields and not event.document.template and self.settings.receipt_fields:
            probs = {r.region_id: r.char_probs for r in event.regions if r.char_probs}
            fields = events.convert(dict[str, FieldResult], document_fields(doc, char_probs=probs), events.RESULTS)
        return regions, doc.render_text(), fields

    def postprocess(self, region: RecognizedRegion) -> ResultRegion:
        """The results region of ``region``: corrected ``text`` and ``raw_text``, ``value``,
        ``valid``, ``reason``, ``needs_review`` (:func:`ocrstream.ocr.postprocess.correct.correct_region`, the
        one implementation :class:`~ocrstream.ocr.predictor.OCRPipeline` uses too)."""
        corrected = correct_region(self.postprocessor, events.to_json_object(region))
        return events.convert(ResultRegion, corrected, events.RESULTS)

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

    async def store_failed(self, dead: DeadLetterEvent) -> Output | None:
        """Upsert a ``failed`` document row from a dead letter; its results event.

        None (no row changed, no event) when the document is already ``done``, or when this
        dead letter was stored and its results event published before (a redelivery).
        ``original`` is any stage's input as JSON (not one model): read by key, leniently.
        """
        original = dead.original or {}
        doc = dict(original.get("document") or {})
        doc.setdefault("filename", original.get("filename"))
        doc["filename"] = clean_text(doc.get("filename"))
        ts = dict(original.get("timestamps") or {})
        ts["stored"] = events.now_iso()
        error = dead.error
        try:  # a malformed original still gets its failed row (then the record is parked)
            result: ResultsEvent | None = self._failed_result(
                dead, doc, ts, [*_lenient_costs(original), self.cost_so_far()])
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the row is written
            result, unbuildable = None, exc
        async with tracing.span("db write", DB_ATTRIBUTES), self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                UPSERT_FAILED, dead.document_id, doc.get("source") or original.get("source"),
                doc.get("filename"), doc.get("object_key"), doc.get("content_sha256"),
                doc.get("size_bytes"), error.stage, error.type, strip_nul(error.message),
                _ts(ts.get("submitted")), _ts(ts.get("ingested")), _ts(ts["stored"]), dead.failed_at)
            if not status.endswith(" 0") and result is not None:
                await self.enqueue_webhook(conn, result, dead.failed_at, webhooks.callback_of(doc)
                                           or await outbox.key_webhook(conn, doc.get("api_key")))
                await self.record_cost(conn, result, dead.failed_at, doc)
        if status.endswith(" 0"):  # "INSERT 0 0": a done row, or this dead letter already stored
            if not await self.pool.fetchval("SELECT published_at IS NULL FROM documents"
                                            " WHERE document_id = $1 AND version = $2",
                                            dead.document_id, dead.failed_at):
                return None
        if result is None:
            raise unbuildable
        if not status.endswith(" 0"):
            self.count_cost(result)
        return Output(events.RESULTS, dead.document_id, result)

    @staticmethod
    def _failed_result(dead: DeadLetterEvent, doc: dict, ts: dict, stage_costs: list[StageCost]) -> ResultsEvent:
        """The ``failed`` results event of a dead letter (``doc``, ``ts``: its original's, read
        leniently; ``stage_costs``: what the stages before the failure spent, and the store)."""
        ts = {**ts, "failed": dead.failed_at}
        ts.setdefault("ingested", dead.failed_at)
        result = ResultsEvent(version=1, document_id=dead.document_id, status="failed",
                              timestamps=events.convert(Timestamps, ts, events.DLQ), text="", pages=[],
                              regions=[], error=dead.error, costs=stage_costs)
        if "object_key" in doc:
            result = msgspec.structs.replace(result, document=events.convert(DocumentRef, doc, events.DLQ))
        return result

    async def enqueue_webhook(self, conn, result: ResultsEvent, version: str, url: str | None) -> None:
        """The completion webhook of ``result`` into the outbox (in the caller's transaction), if
        its submission named ``url`` or its API key has a webhook (ocrstream/streaming/webhooks.py)."""
        if url:
            await outbox.enqueue(conn, result.document_id, version, url,
                                 webhooks.summary(result, self.settings.webhook_max_payload_bytes))

    def background(self):
        """The webhook sender, when OCRSTREAM_WEBHOOK_SECRET is set."""
        return [self._send_webhooks] if self.settings.webhook_secret is not None else []

    async def _send_webhooks(self, stop: asyncio.Event) -> None:
        await webhooks.WebhookSender(self.settings).run(stop)


def _lenient_costs(original: dict) -> list[StageCost]:
    """The ``costs`` of a dead letter's original event (what the stages before the failure spent);
    [] when absent or malformed (a dead letter is never refused for them)."""
    try:
        return events.convert(list[StageCost], original.get("costs") or [], events.DLQ)
    except Exception:  # noqa: BLE001 - lenient: the failure itself is what matters
        return []


def _opt(value: T | UnsetType) -> T | None:
    """An optional event field as None when unset (for a nullable column)."""
    return None if value is UNSET else value


#: Box overlap (intersection over union) a new region needs to take a verified region's text.
CARRY_MIN_IOU = 0.5


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes ``[x0, y0, x1, y1]`` (0.0 when either has no area)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _json(value: object) -> str:
    """``value`` (builtins or event models) as JSON text, for a ``jsonb`` column."""
    return msgspec.json.encode(value).decode()
