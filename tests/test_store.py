"""The store stage as an idempotent sink, against the real embedded PostgreSQL."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from ocrstream.contracts import events
from ocrstream.contracts.event_models import RecognizedEvent, Source
from ocrstream.errors import NotAnImageError
from ocrstream.ocr.document import Document
from ocrstream.storage.migrate import apply_migrations, migration_files
from ocrstream.streaming.stage import dead_letter
from services.store.stage import StoreStage

pytestmark = pytest.mark.slow


def recognized_dict(doc_id: str, texts: list[tuple[int, str]]) -> dict:
    """A ``recognized`` event as a dict; ``texts`` = (visual line, text) in reading order."""
    regions = [{"region_id": f"p0-r{i}", "page_index": 0, "line_index": line, "order": i,
                "box": [10.0 * i, 20.0 * line, 10.0 * i + 9, 20.0 * line + 15], "crop_key": f"crops/{doc_id}/{i}",
                "text": text, "confidence": 0.9} for i, (line, text) in enumerate(texts)]
    event = {"schema": events.RECOGNIZED, "document_id": doc_id,
             "document": {"object_key": "originals/ab/" + "ab" * 32, "content_sha256": "ab" * 32,
                          "size_bytes": 10, "filename": "x.png", "source": "cli"},
             "timestamps": {"submitted": events.now_iso(), "ingested": events.now_iso(),
                            "preprocessed": events.now_iso(), "recognized": events.now_iso()},
             "pages": [{"page_index": 0, "width": 100, "height": 100}],
             "recognizer": {"name": "ppocr", "provider": "CPUExecutionProvider"}, "regions": regions}
    return event


def recognized_event(doc_id: str, texts: list[tuple[int, str]]) -> RecognizedEvent:
    """A valid ``recognized`` event; ``texts`` = (visual line, text) in reading order."""
    return events.from_json_object(events.RECOGNIZED, recognized_dict(doc_id, texts))


def test_document_text_groups_visual_lines_in_reading_order():
    regions = [{"region_id": f"r{i}", "page_index": p, "line_index": li, "order": o, "text": t,
                "box": [0, 0, 1, 1], "confidence": 1.0}
               for i, (p, li, o, t) in enumerate([(0, 1, 2, "12.50"), (0, 0, 0, "SHOP"),
                                                  (0, 1, 1, "TOTAL"), (1, 0, 0, "PAGE TWO")])]
    pages = [{"page_index": 0, "width": 9, "height": 9}, {"page_index": 1, "width": 9, "height": 9}]
    doc = Document.from_results({"document_id": "d", "status": "done", "pages": pages, "regions": regions})
    assert doc.render_text() == "SHOP\nTOTAL 12.50\fPAGE TWO"


@pytest.fixture
async def store(stack_settings):
    stage = StoreStage(stack_settings)
    await stage.setup()
    yield stage
    await stage.teardown()


async def counts(dsn: str, doc_id: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return tuple([await conn.fetchval(f"SELECT count(*) FROM {t} WHERE document_id = $1", doc_id)
                      for t in ("documents", "pages", "regions")])
    finally:
        await conn.close()


async def test_migrations_apply_once(stack_settings, store):
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        assert await apply_migrations(conn) == []  # store.setup applied them already
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")]
    finally:
        await conn.close()
    assert versions == [v for v, _ in migration_files()]


async def test_the_query_api_pool_reads_but_cannot_write(stack_settings, store):
    """The query API's pool (ocrstream run api) has the read role's rights only, in read-only
    transactions; the repository's reads work through it."""
    from ocrstream.storage import documents
    from ocrstream.storage.db import READ_ROLE, create_read_pool

    doc_id = uuid.uuid4().hex
    await store.store_done(recognized_event(doc_id, [(0, "READ ONLY")]))
    pool = await create_read_pool(stack_settings, max_size=1)
    try:
        assert await pool.fetchval("SELECT current_user") == READ_ROLE
        assert (await documents.load_document(pool, doc_id))["text"] == "READ ONLY"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await pool.execute("UPDATE documents SET text = 'x' WHERE document_id = $1", doc_id)
        async with pool.acquire() as conn:  # even with read-only transactions switched off: no rights
            await conn.execute("SET default_transaction_read_only = off")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM documents WHERE document_id = $1", doc_id)
    finally:
        await pool.close()
    assert await counts(stack_settings.dsn, doc_id) == (1, 1, 1)


async def test_redelivery_writes_the_same_rows_and_one_results_event(stack_settings, store):
    doc_id = uuid.uuid4().hex
    event = recognized_event(doc_id, [(0, "SHOP"), (1, "TOTAL"), (1, "12.50")])
    first = await store.store_done(event)
    # Redelivered before its results event was acked (crash in between): stored again, re-emitted.
    again = await store.store_done(event)
    assert await counts(stack_settings.dsn, doc_id) == (1, 1, 3)
    assert first.event.text == again.event.text == "SHOP\nTOTAL 12.50"
    events.encode(events.RESULTS, first.event)
    await store.published([again])
    # Redelivered after publication: no second results event.
    assert await store.store_done(event) is None
    # A replay that recognised the document again is a new version: stored and published.
    replay = recognized_event(doc_id, [(0, "SHOP"), (1, "TOTAL 12.50")])
    output = await store.store_done(replay)
    assert output is not None and output.event.text == "SHOP\nTOTAL 12.50"
    assert await counts(stack_settings.dsn, doc_id) == (1, 1, 2)  # stale region dropped


async def test_dead_letter_marks_failed_but_never_undoes_done(stack_settings, store):
    failed_id, done_id = uuid.uuid4().hex, uuid.uuid4().hex
    letter = dead_letter("preprocess", NotAnImageError("not an image: b'hello'"), document_id=failed_id,
                         source=Source(topic=events.INGESTED, partition=0, offset=7),
                         original={"document_id": failed_id, "filename": "notes.txt", "source": "cli"})
    result = await store.store_failed(letter.event)
    assert result.event.status == "failed"
    await store.published([result])
    assert await store.store_failed(letter.event) is None  # redelivered dead letter
    assert result.event.error.type == "NotAnImageError"
    events.encode(events.RESULTS, result.event)

    await store.store_done(recognized_event(done_id, [(0, "OK")]))
    late = dead_letter("store", RuntimeError("late"), document_id=done_id, source=Source(topic="x"))
    assert await store.store_failed(late.event) is None
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        rows = {r["document_id"]: r for r in await conn.fetch(
            "SELECT document_id, status, error_type, filename FROM documents WHERE document_id = ANY($1::text[])",
            [failed_id, done_id])}
    finally:
        await conn.close()
    assert (rows[failed_id]["status"], rows[failed_id]["error_type"], rows[failed_id]["filename"]) == (
        "failed", "NotAnImageError", "notes.txt")
    assert rows[done_id]["status"] == "done"


async def test_post_processing_keeps_raw_text_and_validates_fields(stack_settings, store):
    doc_id = uuid.uuid4().hex
    event = recognized_dict(doc_id, [(0, "TOTAL"), (0, "RM 12.5O"), (1, "2l/11/2O26")])
    event["regions"][1]["field"] = {"name": "total", "type": "decimal", "unit": "RM", "min": 0, "max": 1000}
    event["regions"][2]["field"] = {"name": "date", "type": "date"}
    event["regions"][2]["confidence"] = 0.6
    output = await store.store_done(events.from_json_object(events.RECOGNIZED, event))
    events.encode(events.RESULTS, output.event)
    result = events.to_json_object(output.event)
    assert result["fields"]["total"] == {"value": 12.5, "text": "RM 12.50", "valid": True}
    assert result["fields"]["date"]["value"] == "2026-11-21"
    total = result["regions"][1]
    assert (total["raw_text"], total["text"], total["valid"]) == ("RM 12.5O", "RM 12.50", True)
    assert result["regions"][2]["needs_review"] and result["needs_review"]  # low confidence
    assert result["text"] == "TOTAL RM 12.50\n21/11/2026"
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        row = await conn.fetchrow("SELECT raw_text, text, valid, value FROM regions"
                                  " WHERE document_id = $1 AND region_id = 'p0-r1'", doc_id)
        flagged = await conn.fetchval("SELECT needs_review FROM documents WHERE document_id = $1", doc_id)
    finally:
        await conn.close()
    assert (row["raw_text"], row["text"], row["valid"], row["value"]) == ("RM 12.5O", "RM 12.50", True, "12.5")
    assert flagged


class _Record:
    """A consumed record as the store sees it (topic, partition, offset, value)."""

    def __init__(self, value: bytes, offset: int):
        self.topic, self.partition, self.offset, self.value, self.key = events.DLQ, 0, offset, value, None


async def test_a_dead_letter_is_never_dropped(stack_settings, store):
    # A NUL byte in a file name and message once failed the database write and the letter vanished.
    doc_id = uuid.uuid4().hex
    letter = dead_letter("preprocess", NotAnImageError("bad \x00 bytes"), document_id=doc_id, source=Source(topic="http"),
                         original={"document_id": doc_id, "filename": "evil\x00name.png", "source": "http"})
    result = await store.store_dead_letter(_Record(letter.payload, 1))
    assert result.event.status == "failed"
    # A dead letter that cannot be a failed row at all is parked whole and counted.
    offset = uuid.uuid4().int % 10**9
    assert await store.store_dead_letter(_Record(b"\xffnot json", offset)) is None
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        row = await conn.fetchrow("SELECT status, filename, error_message FROM documents WHERE document_id = $1",
                                  doc_id)
        parked = await conn.fetchrow('SELECT payload, error FROM parked_events WHERE "offset" = $1', offset)
    finally:
        await conn.close()
    assert (row["status"], row["filename"]) == ("failed", "evilname.png")
    assert "\x00" not in row["error_message"]
    assert parked["payload"] == b"\xffnot json" and parked["error"].startswith("InvalidEventError")
