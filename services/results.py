"""Reading the pipeline's output: the ``ocr.results.v1`` topic and the documents table.

Used by ``ocrstream submit --wait``, ``ocrstream tail-results`` and the demo; also an example
for downstream consumers: a consumer group of your own, ``auto_offset_reset="earliest"``, JSON
values keyed by document id, and a ``schema``/``version`` field to check (v1 only grows by
optional fields).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Collection

import asyncpg
from aiokafka import AIOKafkaConsumer

from services.core import events
from services.core.settings import Settings


async def iter_results(settings: Settings, *, group_id: str | None = None,
                       timeout_s: float | None = None) -> AsyncIterator[events.Event]:
    """Yield results events from the earliest uncommitted offset of ``group_id``.

    A fresh random group (the default) reads the topic from its beginning. Offsets are
    committed after each yielded event. Stops after ``timeout_s`` seconds without a message.
    """
    consumer = AIOKafkaConsumer(
        events.RESULTS, bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id or f"ocrstream-reader-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=settings.heartbeat_interval_ms,
        max_partition_fetch_bytes=settings.max_message_bytes)
    await consumer.start()
    try:
        while True:
            polled = await consumer.getmany(timeout_ms=int((timeout_s or 3600) * 1000))
            if not polled:
                if timeout_s is not None:
                    return
                continue
            for batch in polled.values():
                for record in batch:
                    yield events.decode(events.RESULTS, record.value)
            await consumer.commit()
    finally:
        await consumer.stop()


async def wait_for_results(settings: Settings, document_ids: Collection[str], *, timeout_s: float,
                           on_result: Callable[[events.Event], None] = lambda e: None,
                           ) -> dict[str, events.Event]:
    """Read the results topic until every id in ``document_ids`` has a results event.

    Returns ``{document_id: last results event}``; raises TimeoutError with the missing ids.
    """
    wanted, seen = set(document_ids), {}

    async def collect() -> None:
        async for event in iter_results(settings):
            if event["document_id"] in wanted:
                if event["document_id"] not in seen:
                    on_result(event)
                seen[event["document_id"]] = event
                if len(seen) == len(wanted):
                    return

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except asyncio.TimeoutError:
        missing = sorted(wanted - seen.keys())
        raise TimeoutError(f"{len(missing)} document(s) without a result after {timeout_s:.0f} s: "
                           f"{', '.join(missing[:5])}") from None
    return seen


async def fetch_documents(settings: Settings, document_ids: Collection[str]) -> dict[str, dict]:
    """Rows of ``documents`` (plus ``regions`` count) for ``document_ids``, keyed by id."""
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch(
            "SELECT d.*, (SELECT count(*) FROM regions r WHERE r.document_id = d.document_id) AS regions"
            " FROM documents d WHERE d.document_id = ANY($1::text[])", list(document_ids))
    finally:
        await conn.close()
    return {r["document_id"]: dict(r) for r in rows}


def format_result(event: events.Event) -> str:
    """One result as JSON text (compact), for ``tail-results``."""
    return json.dumps(event, ensure_ascii=False)
