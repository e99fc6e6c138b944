"""``ocrstream reprocess``: read stored documents again, with versioned results.

Selects done documents (``--document ID`` | ``--since T`` | ``--model-not SHA`` | ``--all``) and
sends each one's original through the pipeline again as an ``ocr.ingested.v1`` event naming the
object already in the bucket (``originals/...``: nothing is uploaded again) under the same
document id. The store then keeps the earlier result as a version of its own and serves the new
one (``result_version``; ``GET /v1/documents/{id}/versions``), carrying verified text over to the
new regions by box overlap (services/store/stage.py).

A document already read by the model that would read it now (the promoted model when there is a
promotion, else the configured one) is skipped unless ``force``: it would make an identical
version. (Only the model is compared: a change of other settings, e.g. detection, needs ``force``.)
Sending is paced at ``rate`` documents per second so live documents keep their latency.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ocrstream.contracts import events
from ocrstream.contracts.event_models import DocumentRef, IngestedEvent, Timestamps
from ocrstream.settings import Settings

#: Documents per second at most (``--rate``), and the default.
MAX_RATE = 1000.0
DEFAULT_RATE = 2.0

SELECT = """
SELECT document_id, source, filename, object_key, content_sha256, size_bytes, template, model, result_version
FROM documents
WHERE status = 'done' AND object_key IS NOT NULL AND content_sha256 IS NOT NULL
  AND ($1::text IS NULL OR document_id = $1)
  AND ($2::timestamptz IS NULL OR stored_at >= $2)
  AND ($3::text IS NULL OR model IS DISTINCT FROM $3)
ORDER BY stored_at, document_id
LIMIT $4
"""


@dataclass
class Plan:
    """What a reprocess would send: the documents, and those skipped because the model that
    would read them is the one that did (``current_model``)."""

    current_model: str
    documents: list[dict[str, Any]] = field(default_factory=list)
    same_model: list[str] = field(default_factory=list)


async def current_model(settings: Settings, db: Any) -> str:
    """The model a document would be read with now: the promoted one (newest ``model_promotions``
    row) when there is one, else ``OCRSTREAM_PPOCR_MODEL``'s id, else the shipped model's name."""
    from ocrstream.storage.models import live_model

    live = await live_model(db)
    if live is not None:
        return str(live["model_id"])
    from ocrstream.ocr.recognition.ppocr import REC_MODEL, _resolve_model

    return _resolve_model(settings.ppocr_model)[1] if settings.ppocr_model else REC_MODEL.rsplit(".", 1)[0]


async def plan(settings: Settings, db: Any, *, document: str | None = None, since: datetime | None = None,
               model_not: str | None = None, every: bool = False, force: bool = False,
               limit: int = 1_000_000) -> Plan:
    """The documents to read again. ``model_not``: a model id, or a registered model's sha256
    (prefix) / id (documents read by another model). One of the selectors, or ``every``.

    Raises ValueError without any selector; the registry's UnknownModelError is not raised for
    ``model_not`` (an unregistered value is taken as a model id).
    """
    if not (document or since or model_not or every):
        raise ValueError("name what to reprocess: --document ID, --since T, --model-not SHA or --all")
    if model_not:
        from ocrstream.storage.models import UnknownModelError, resolve

        try:
            model_not = (await resolve(settings, model_not)).model_id
        except UnknownModelError:
            pass
    now = await current_model(settings, db)
    result = Plan(now)
    for row in await db.fetch(SELECT, document, since, model_not, limit):
        if row["model"] == now and not force:
            result.same_model.append(row["document_id"])
        else:
            result.documents.append(dict(row))
    return result


def ingested_event(row: dict[str, Any]) -> IngestedEvent:
    """The ``ocr.ingested.v1`` event that sends a stored document's original through the pipeline again."""
    return IngestedEvent(
        document_id=row["document_id"],
        document=DocumentRef(object_key=row["object_key"], content_sha256=row["content_sha256"],
                             size_bytes=row["size_bytes"] or 0, filename=row["filename"],
                             source=row["source"] or "cli", template=row["template"]),
        timestamps=Timestamps(submitted=events.now_iso(), ingested=events.now_iso()))


async def send(settings: Settings, documents: list[dict[str, Any]], *, rate: float = DEFAULT_RATE) -> int:
    """Produce :func:`ingested_event` of each document to ``ocr.ingested.v1``, at most ``rate``
    per second (paced from the start, so no burst); returns how many were sent.

    Raises ValueError for a rate outside (0, :data:`MAX_RATE`]; the Kafka client's errors.
    """
    if not 0 < rate <= MAX_RATE:
        raise ValueError(f"--rate must be in (0, {MAX_RATE:g}] documents per second, got {rate}")
    from ocrstream.streaming.kafka import make_producer

    producer = make_producer(settings)
    await producer.start()
    started = time.monotonic()
    try:
        for n, row in enumerate(documents):
            wait = started + n / rate - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await producer.send_and_wait(events.INGESTED, events.encode(events.INGESTED, ingested_event(row)),
                                         key=row["document_id"].encode())
    finally:
        await producer.stop()
    return len(documents)
