"""Dead-letter replay: list, show and replay the dead letters of ``ocr.dlq.v1`` after a fix.

A dead letter names the stage that failed, our error type, and where its input came from
(``source``: topic, partition, offset) with the input event itself (``original``) when it was
JSON. Replaying a dead letter produces that input again onto its topic, keyed by its document id,
so the failed stage handles it once more (``ocrstream dlq replay``):

* events of the pipeline's own topics (``ocr.ingested.v1``, ``ocr.regions.v1``,
  ``ocr.recognized.v1``) are re-sent as they were (from the dead letter, or read back at their
  source offset when they were too large to ride in it);
* raw-topic documents (bytes on ``ocr.raw.v1``) are re-sent from the raw record itself, read
  back at its offset with its key and headers (possible while the topic retains it), with the
  original position in the ``ocrstream-replay-of`` header and the replayer's mark in the bucket
  (:func:`services.ingest.stage.replay_mark_key`) so that a record without a valid key resolves
  to the same document, even when it is refused again (no new rows);
* replay is idempotent: a document whose row is already ``done`` is skipped, and so is one
  whose previous replay is still pending (sent, its next outcome not stored yet:
  ``documents.replay_pending_since``, claimed atomically before sending, cleared by the store)
  unless ``force``; a dead letter whose ``failed`` row is not stored yet is not replayed either.
  Each replay is recorded on the document (``documents.replays``, ``documents.replayed_at``).

Reading the topic never joins a consumer group: partitions are assigned and read from the
beginning up to the fetch high-water mark (the embedded broker's end offsets are unreliable).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from aiokafka import TopicPartition

from ocrstream.contracts import events
from ocrstream.contracts.event_models import DeadLetterEvent, Source
from ocrstream.errors import InvalidEventError
from ocrstream.settings import Settings
from ocrstream.storage.db import create_pool
from ocrstream.storage.documents import done_ids
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming.ingestor import content_sha256
from ocrstream.streaming.kafka import make_producer
from ocrstream.streaming.offsets import partitions_of, probe_consumer
from services.ingest.stage import REPLAY_OF_HEADER, position_document_id, record_position, replay_mark_key, replay_of

REPLAYABLE_TOPICS = (events.INGESTED, events.REGIONS, events.RECOGNIZED, events.RAW)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter and where it sits on ``ocr.dlq.v1``."""

    partition: int
    offset: int
    event: DeadLetterEvent

    @property
    def document_id(self) -> str:
        return self.event.document_id

    @property
    def error_type(self) -> str:
        return self.event.error.type

    @property
    def failed_at(self) -> datetime:
        return datetime.fromisoformat(self.event.failed_at)


async def read_partitions(settings: Settings, topic: str, *, idle_s: float = 2.0,
                          partitions: Iterable[int] | None = None, start: int | None = None,
                          limit: int | None = None) -> list:
    """Records of ``topic`` (all partitions, or ``partitions``) from ``start`` (default: the
    beginning) up to the fetch high-water mark, without a consumer group; at most ``limit``
    (a :func:`ocrstream.streaming.offsets.probe_consumer`: the security options of every client)."""
    consumer = probe_consumer(settings, fetch_max_wait_ms=500, fetch_max_bytes=settings.max_message_bytes * 2)
    await consumer.start()
    try:
        tps = ([TopicPartition(topic, p) for p in partitions] if partitions is not None
               else await partitions_of(consumer, [topic]))
        consumer.assign(tps)
        for tp in tps:
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
        records = []
        while True:
            polled = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            for batch in polled.values():
                records += batch
            if limit is not None and len(records) >= limit:
                return records[:limit]
            done = [consumer.highwater(tp) is not None and await consumer.position(tp) >= consumer.highwater(tp)
                    for tp in tps]
            if all(done) or not polled:
                return records
    finally:
        await consumer.stop()


async def dead_letters(settings: Settings, *, stage: str | None = None, error_type: str | None = None,
                       since: datetime | None = None, document_id: str | None = None) -> list[DeadLetter]:
    """Dead letters on ``ocr.dlq.v1`` matching every given filter, oldest first (records that
    are not valid dead letters are skipped)."""
    found = []
    for r in await read_partitions(settings, events.DLQ):
        try:
            event = events.decode(events.DLQ, r.value)
        except InvalidEventError:
            continue
        letter = DeadLetter(r.partition, r.offset, event)
        if ((stage and event.stage != stage) or (error_type and letter.error_type != error_type)
                or (since and letter.failed_at < since) or (document_id and letter.document_id != document_id)):
            continue
        found.append(letter)
    return sorted(found, key=lambda d: d.event.failed_at)


#: Every action of :class:`Replay`, in the order the CLI counts them.
ACTIONS = ("replayed", "would-replay", "skipped-done", "skipped-pending", "not-stored-yet", "not-replayable")

#: Claims a document for one replay: not done, no replay pending (unless forced). The old
#: pending time is returned so that a send that fails can give the claim back.
CLAIM = """
UPDATE documents d SET replays = d.replays + 1, replayed_at = now(), replay_pending_since = now()
FROM (SELECT document_id, replay_pending_since FROM documents WHERE document_id = $1 FOR UPDATE) old
WHERE d.document_id = old.document_id AND d.status <> 'done' AND ($2 OR d.replay_pending_since IS NULL)
RETURNING old.replay_pending_since AS previous
"""
RELEASE = ("UPDATE documents SET replays = replays - 1, replay_pending_since = $2"
           " WHERE document_id = $1 AND replay_pending_since IS NOT NULL")


@dataclass(frozen=True)
class Replay:
    """What replaying one dead letter did: ``action`` is one of :data:`ACTIONS`: replayed,
    would-replay (dry run), skipped-done, skipped-pending (a replay of it is in flight),
    not-stored-yet (its failed row is not in PostgreSQL yet: try again), not-replayable."""

    letter: DeadLetter
    action: str
    topic: str | None = None


async def replay(settings: Settings, letters: list[DeadLetter], *, dry_run: bool = False,
                 force: bool = False) -> list[Replay]:
    """Re-send the input of each dead letter (newest letter per document only); see module doc.
    ``force``: send even when a previous replay of the document is still pending.

    Raises the clients' connection errors.
    """
    newest: dict[str, DeadLetter] = {}
    for letter in letters:
        newest[letter.document_id] = letter
    pool = await create_pool(settings, max_size=2)
    producer = make_producer(settings)
    store = ObjectStore(settings)
    await producer.start()
    try:
        done = await done_ids(pool, newest)
        pending = {r["document_id"] for r in await pool.fetch(
            "SELECT document_id FROM documents WHERE document_id = ANY($1::text[])"
            " AND replay_pending_since IS NOT NULL", list(newest))}
        stored = {r["document_id"] for r in await pool.fetch(
            "SELECT document_id FROM documents WHERE document_id = ANY($1::text[])", list(newest))}
        outcomes = []
        for letter in newest.values():
            source = letter.event.source
            topic = source.topic
            if letter.document_id in done:
                outcomes.append(Replay(letter, "skipped-done", topic))
                continue
            if letter.document_id not in stored:
                outcomes.append(Replay(letter, "not-stored-yet", topic))
                continue
            if letter.document_id in pending and not force:
                outcomes.append(Replay(letter, "skipped-pending", topic))
                continue
            message = await _input_of(settings, letter, topic, source)
            if message is None:
                outcomes.append(Replay(letter, "not-replayable", topic))
                continue
            if dry_run:
                outcomes.append(Replay(letter, "would-replay", topic))
                continue
            outcomes.append(Replay(letter, await _send_once(pool, store, producer, letter, topic, message, force),
                                   topic))
        return outcomes
    finally:
        await producer.stop()
        await pool.close()


async def _send_once(pool, store: ObjectStore, producer, letter: DeadLetter, topic: str,
                     message: tuple[bytes, bytes | None, list], force: bool) -> str:
    """Claim the document (:data:`CLAIM`), leave the replay mark of a raw record, send; the
    claim is given back when the send fails. The action: replayed, skipped-pending or skipped-done."""
    value, key, headers = message
    claim = await pool.fetchrow(CLAIM, letter.document_id, force)
    if claim is None:  # another replayer claimed it meanwhile, or it became done
        done = await done_ids(pool, [letter.document_id])
        return "skipped-done" if done else "skipped-pending"
    try:
        if topic == events.RAW:
            where = dict(headers)[REPLAY_OF_HEADER].decode()
            sha = await asyncio.to_thread(content_sha256, value)
            mark = position_document_id(where, sha)
            await store.put(replay_mark_key(mark), json.dumps({"document_id": letter.document_id, "replay_of": where,
                                                               "content_sha256": sha}).encode(), "application/json")
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    except BaseException:
        await pool.execute(RELEASE, letter.document_id, claim["previous"])
        raise
    return "replayed"


async def _input_of(settings: Settings, letter: DeadLetter, topic: str | None,
                    source: Source) -> tuple[bytes, bytes | None, list] | None:
    """``(value, key, headers)`` to re-send for ``letter``, or None when it cannot be rebuilt."""
    if topic not in REPLAYABLE_TOPICS:
        return None
    original = letter.event.original
    if topic != events.RAW and isinstance(original, dict):
        return events.encode(topic, events.from_json_object(topic, original)), letter.document_id.encode(), []
    if not isinstance(source.partition, int) or not isinstance(source.offset, int):
        return None
    records = await read_partitions(settings, topic, partitions=[source.partition],
                                    start=source.offset, limit=1, idle_s=1.0)
    if not records or records[0].offset != source.offset:
        return None
    raw = records[0]
    if topic != events.RAW:  # an event too large to ride in its dead letter: re-sent as it was
        return raw.value, raw.key, list(raw.headers or ())
    # A record without a valid key takes its id from its position: the header carries the first
    # one (a replay of a replay names the original, if that is where the document's id came from:
    # a forged header is not carried on), keyed or not (a key refused again falls back to it too).
    headers = [(k, v) for k, v in (raw.headers or ()) if k != REPLAY_OF_HEADER]
    claimed = replay_of(raw)
    sha = await asyncio.to_thread(content_sha256, raw.value or b"")
    trusted = claimed is not None and position_document_id(claimed, sha) == letter.document_id
    where = claimed if trusted and claimed else record_position(raw)
    headers.append((REPLAY_OF_HEADER, where.encode()))
    return raw.value, raw.key, headers


def run(coro):
    """Run a coroutine of this module from the CLI."""
    return asyncio.run(coro)
