"""ocrstream/ops/audit.py against the real embedded broker and PostgreSQL: rows and results events
written by hand, the audit must count done, failed as expected, wrong, lost and duplicated
results events (same document and version twice) and read a group's lag without joining it."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ocrstream.contracts import events
from ocrstream.errors import BadInputError
from ocrstream.ops.audit import Expectation, audit, stage_lag
from ocrstream.storage.migrate import apply_migrations
from ocrstream.streaming.kafka import client_options, ensure_topics, make_producer
from ocrstream.streaming.stage import dead_letter

pytestmark = pytest.mark.slow


async def test_audit_counts_each_outcome(stack_settings):
    settings = stack_settings.model_copy(update={"consumer_group_prefix": f"audit-{uuid.uuid4().hex[:6]}"})
    tag = uuid.uuid4().hex[:8]
    done, dup, failed, wrong, no_row, no_event = (f"{tag}-{n}" for n in
                                                 ("done", "dup", "failed", "wrong", "norow", "noevent"))
    conn = await asyncpg.connect(settings.dsn)
    try:
        await apply_migrations(conn)
        for doc_id, status, error in ((done, "done", None), (dup, "done", None), (failed, "failed", "TruncatedImageError"),
                                      (wrong, "done", None), (no_event, "done", None)):
            await conn.execute("INSERT INTO documents (document_id, status, error_type, version, published_at)"
                               " VALUES ($1, $2, $3, 'v1', now())", doc_id, status, error)
    finally:
        await conn.close()
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        def result(doc_id, status, version):  # schema-valid: other tests read the whole topic
            ts = {"ingested": events.now_iso(), "failed" if status == "failed" else "recognized": version}
            error = {"stage": "preprocess", "type": "TruncatedImageError", "message": "x"} if status == "failed" else None
            return events.encode(events.RESULTS, events.from_json_object(events.RESULTS, {
                "schema": events.RESULTS, "version": 1, "document_id": doc_id, "status": status, "timestamps": ts,
                "text": "", "pages": [], "regions": [], "error": error}))
        for doc_id, status, version in ((done, "done", "v1"), (dup, "done", "v1"), (dup, "done", "v1"),
                                        (dup, "done", "v2"), (failed, "failed", "v1"), (wrong, "done", "v1"),
                                        (no_row, "done", "v1")):
            await producer.send_and_wait(events.RESULTS, result(doc_id, status, version), key=doc_id.encode())
    finally:
        await producer.stop()

    truncated = Expectation("failed", "TruncatedImageError")
    report = await audit(settings, {done: Expectation(), dup: Expectation(), failed: truncated,
                                    wrong: truncated, no_row: Expectation(), no_event: Expectation()})
    assert (report.submitted, report.done, report.failed, report.failed_as_expected) == (6, 3, 1, 1)
    assert sorted(report.lost) == sorted([no_row, no_event])
    assert report.wrong == [(wrong, "failed:TruncatedImageError", "done:")]
    assert (report.duplicated, report.duplicated_documents) == (1, [dup])  # v2 is a new version, not a duplicate
    # The audit's fresh groups never committed: their lag is whatever earlier tests left in the shared
    # input topics (0 when this test runs alone), never negative, one figure per stage.
    assert set(report.lag) == {"ingest", "preprocess", "recognize", "store"} and not report.complete
    assert all(lag >= 0 for lag in report.lag.values())


async def test_stage_lag_is_highwater_minus_committed(stack_settings):
    """Three records on the store's input, one committed by its group: lag 2."""
    settings = stack_settings.model_copy(update={"consumer_group_prefix": f"lag-{uuid.uuid4().hex[:6]}"})
    topic = events.DLQ
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        letter = dead_letter("test", BadInputError("audit lag test"), document_id=f"lag-{uuid.uuid4().hex}",
                             source={"topic": "test"})  # schema-valid, keyed by its id: other tests read the topic
        sent = [await producer.send_and_wait(topic, letter.payload, key=letter.key.encode(), partition=0)
                for _ in range(3)]
    finally:
        await producer.stop()
    before = (await stage_lag(settings, ["store"]))["store"]  # nothing committed: the whole topic
    consumer = AIOKafkaConsumer(**client_options(settings), group_id=f"{settings.consumer_group_prefix}-store",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): sent[-1].offset - 1})
    finally:
        await consumer.stop()
    after = (await stage_lag(settings, ["store"]))["store"]
    assert before >= 3 and before - after == sent[-1].offset - 1 and after >= 2
