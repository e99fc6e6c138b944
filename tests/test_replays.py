"""Idempotent dead-letter replays (``ocrstream dlq replay``) against the real ingest and store
processes on the embedded stack: raw-topic records refused for a bad key are replayed twice and
still resolve to their original failed documents (no new rows); a replay pending (ingest stopped)
is not sent again unless forced; a forged ``ocrstream-replay-of`` header on the raw topic does not
merge a submission into another's document; the failed rows of the raw door keep its source,
file name and content hash."""

from __future__ import annotations

import asyncio
import io
import random
import time
import uuid

import asyncpg
import pytest
from PIL import Image

from ocrstream.contracts import events
from ocrstream.ops import dlq
from ocrstream.ops.launcher import StageProcesses
from ocrstream.streaming.ingestor import content_sha256
from ocrstream.streaming.kafka import make_producer
from services.ingest.stage import REPLAY_OF_HEADER, position_document_id
from services.store.api import wait_for_schema

pytestmark = pytest.mark.slow

WAIT_S = 180  # bound of every wait for the stages below


@pytest.fixture(scope="module")
def stages(stack_env, tmp_path_factory):
    """ingest and store only: what a raw-topic refusal and its replays go through."""
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": "0", "OCRSTREAM_QUERY_PORT": "0",
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"replays-{uuid.uuid4().hex[:6]}"}
    with StageProcesses(env, tmp_path_factory.mktemp("replay-logs"), stages=("ingest", "store")) as running:
        yield running


def png(seed: int) -> bytes:
    """A small PNG no other test sends (random pixels)."""
    rng = random.Random(seed)
    image = Image.new("L", (16, 16))
    image.putdata([rng.randrange(256) for _ in range(256)])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


async def poll(what: str, check, timeout_s: float = WAIT_S, every_s: float = 0.5):
    """Await ``check()`` until it returns something truthy (bounded by ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while not (result := await check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(every_s)
    return result


async def test_replays_are_idempotent(stages, stack_settings):
    seed = random.randrange(1 << 30)
    lengths = [300 + seed % 5000, 5400 + seed % 5000]  # over the 256-byte key limit: refused, unique messages
    originals = [png(seed + i) for i in range(2)]
    producer = make_producer(stack_settings)
    await producer.start()
    try:
        for length, data in zip(lengths, originals):
            await producer.send_and_wait(events.RAW, data, key=b"k" * length,
                                         headers=[("filename", f"scan-{length}.png".encode())])
        # a forged replay header: other bytes' position, then the same bytes as another submission
        victim = png(seed + 7)
        sent = await producer.send_and_wait(events.RAW, victim, timestamp_ms=int(time.time() * 1000))
        forged = f"{events.RAW}:{sent.partition}:{sent.offset}:{sent.timestamp}".encode()
        await producer.send_and_wait(events.RAW, victim, headers=[(REPLAY_OF_HEADER, forged)])
    finally:
        await producer.stop()

    assert await asyncio.wait_for(wait_for_schema(stack_settings, asyncio.Event()), WAIT_S)  # the store migrated
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        async def rows_of(length: int) -> list:
            return await conn.fetch(
                "SELECT document_id, replays, replay_pending_since, source, filename, content_sha256"
                " FROM documents WHERE status = 'failed'"
                " AND error_type = 'InvalidSubmissionError' AND error_message LIKE $1", f"raw-topic key of {length} bytes%")

        async def one_row_each():
            found = [await rows_of(n) for n in lengths]
            return found if all(found) else None

        found = await poll("the refused records' failed rows", one_row_each)
        ids = [rows[0]["document_id"] for rows in found]
        # the failed rows of the raw door keep what is known: source, file name, content hash
        assert [(r[0]["source"], r[0]["filename"], r[0]["content_sha256"]) for r in found] == [
            ("kafka", f"scan-{n}.png", content_sha256(data)) for n, data in zip(lengths, originals)]
        letters = [d for d in await dlq.dead_letters(stack_settings, error_type="InvalidSubmissionError")
                   if d.document_id in ids]
        assert {d.document_id for d in letters} == set(ids)

        # A replay in flight (ingest stopped: nothing resolves it) is not sent twice, unless forced.
        stages.stop_one("ingest")
        try:
            assert [o.action for o in await dlq.replay(stack_settings, letters)] == ["replayed"] * 2
            assert [o.action for o in await dlq.replay(stack_settings, letters)] == ["skipped-pending"] * 2
            assert [o.action for o in await dlq.replay(stack_settings, letters, dry_run=True)] == ["skipped-pending"] * 2
            first = [d for d in letters if d.document_id == ids[0]]
            assert [o.action for o in await dlq.replay(stack_settings, first, force=True)] == ["replayed"]
        finally:
            stages.start_one("ingest")

        async def resolved():
            rows = [await rows_of(n) for n in lengths]
            assert [len(r) for r in rows] == [1, 1], "a replay made a new failed document"
            return rows if all(len(r) == 1 and r[0]["replay_pending_since"] is None for r in rows) else None

        # Refused again, the replays resolve to the original documents: their rows, no new ones.
        rows = await poll("the replays to be stored", resolved)
        assert [r[0]["document_id"] for r in rows] == ids and [r[0]["replays"] for r in rows] == [2, 1]
        # A second round, once the first is stored: the same documents again.
        assert [o.action for o in await dlq.replay(stack_settings, letters)] == ["replayed"] * 2
        rows = await poll("the second replays to be stored", resolved)
        assert [r[0]["document_id"] for r in rows] == ids and [r[0]["replays"] for r in rows] == [3, 2]
    finally:
        await conn.close()

    # The forged header was not trusted: two submissions of the same bytes, two documents.
    sha = content_sha256(victim)

    async def ingested_victims():
        found = [events.decode(events.INGESTED, r.value) for r in await dlq.read_partitions(stack_settings, events.INGESTED)]
        mine = {e.document_id for e in found if e.document.content_sha256 == sha}
        return mine if len(mine) >= 2 else None

    victims = await poll("both submissions of the same bytes", ingested_victims, every_s=2)
    assert len(victims) == 2 and position_document_id(forged.decode(), sha) in victims
