"""Reading the pipeline's output: the ``ocr.results.v1`` topic and the documents table.

* :class:`ResultsReader` reads the results topic without a consumer group: every partition is
  assigned directly, starting at a position taken *before* anything is submitted (the fetch
  high-water mark, :mod:`ocrstream.streaming.offsets`) or at the beginning. No group join means no
  JoinGroup/SyncGroup round and no rebalance wait (~3-5 s per call before issue 15): a result is
  read ~10 ms after the store produced it. Used by ``ocrstream submit --wait`` and the demo
  (through :mod:`ocrstream.client.client`) and by :func:`wait_for_results`.
* :class:`ResultWaiters` keeps one such reader running in a long-lived process and hands each
  result to whoever awaits that document: ``POST /v1/documents?wait=SECONDS`` on the ingest API.
* :func:`iter_results` is the example downstream consumer (``ocrstream tail-results``): a
  consumer group of your own, ``auto_offset_reset="earliest"``, offsets committed after each
  event, JSON values keyed by document id with a ``schema``/``version`` field to check (v1 only
  grows by optional fields).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from ocrstream.contracts import events
from ocrstream.contracts.event_models import ResultsEvent
from ocrstream.errors import InvalidEventError
from ocrstream.settings import Settings
from ocrstream.streaming.kafka import client_options
from ocrstream.streaming.loops import close_within
from ocrstream.streaming.offsets import fetch_highwaters, partitions_of, probe_consumer
from ocrstream.streaming.retry import Backoff

log = logging.getLogger(__name__)


class ResultsTimeoutError(TimeoutError):
    """Some documents have no result yet: ``results`` holds those that have, ``missing`` the others' ids."""

    def __init__(self, results: dict[str, ResultsEvent], missing: list[str], timeout_s: float):
        self.results, self.missing = results, missing
        super().__init__(f"{len(missing)} document(s) without a result after {timeout_s:.0f} s: "
                         f"{', '.join(missing[:5])}")


class ResultsReader:
    """``ocr.results.v1`` read with every partition assigned (no consumer group, no commits).

    ``start()`` positions the reader at the current end of each partition (fetch high-water
    mark) or, with ``from_beginning=True``, at the first retained record; results produced after
    ``start()`` returned are never missed. ``fetch_max_wait_ms`` (default
    ``OCRSTREAM_KAFKA_FETCH_MAX_WAIT_MS``) bounds a fetch on an idle partition; real Kafka answers a
    waiting fetch as soon as a record arrives, tansu only after up to ~100 ms (measured). Raises KafkaConnectionError
    (no broker) and KafkaTimeoutError from ``start()``.
    """

    def __init__(self, settings: Settings, *, from_beginning: bool = False, fetch_max_wait_ms: int | None = None):
        self.settings, self.from_beginning = settings, from_beginning
        wait_ms = settings.kafka_fetch_max_wait_ms if fetch_max_wait_ms is None else fetch_max_wait_ms
        self.consumer = probe_consumer(settings, fetch_max_wait_ms=wait_ms)

    async def start(self) -> "ResultsReader":
        """Connect, assign every partition of the results topic and take the start position."""
        try:
            await self.consumer.start()
            partitions = await partitions_of(self.consumer, [events.RESULTS])
            if not partitions:  # a fresh broker: create the pipeline's topics first
                from ocrstream.streaming.stage import ensure_topics

                await ensure_topics(self.settings)
                partitions = await partitions_of(self.consumer, [events.RESULTS])
            self.consumer.assign(partitions)
            if self.from_beginning:
                await self.consumer.seek_to_beginning(*partitions)
            else:
                for tp, offset in (await fetch_highwaters(self.consumer, partitions)).items():
                    self.consumer.seek(tp, offset)
        except BaseException:
            await self.consumer.stop()
            raise
        return self

    async def stop(self) -> None:
        await self.consumer.stop()

    async def __aenter__(self) -> "ResultsReader":
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def poll(self, timeout_s: float) -> list[ConsumerRecord]:
        """Records that arrived (undecoded: see :func:`document_id_of`, :func:`decode_result`);
        [] after ``timeout_s`` seconds without any."""
        polled = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000))
        return [record for batch in polled.values() for record in batch]

    async def wait_for(self, document_ids: Collection[str], *, timeout_s: float,
                       on_result: Callable[[ResultsEvent], None] = lambda e: None) -> dict[str, ResultsEvent]:
        """Read until every id in ``document_ids`` has a result; ``{document_id: event}``.

        Only the wanted documents' events are decoded. ``on_result`` is called once per
        document. Raises :class:`ResultsTimeoutError` (a TimeoutError with the results so far
        and the missing ids) after ``timeout_s`` seconds.
        """
        wanted = set(document_ids)
        seen: dict[str, ResultsEvent] = {}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(seen) < len(wanted):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise ResultsTimeoutError(seen, sorted(wanted - seen.keys()), timeout_s)
            for record in await self.poll(min(left, 1.0)):
                if document_id_of(record) in wanted and (event := decode_result(record)) is not None:
                    if event.document_id not in seen:
                        on_result(event)
                    seen[event.document_id] = event
        return seen


def document_id_of(record: ConsumerRecord) -> str | None:
    """The document id of a results record: its key (the store keys every event by document id)."""
    return record.key.decode("utf-8", "replace") if record.key else None


def decode_result(record: ConsumerRecord) -> ResultsEvent | None:
    """The schema-valid results event of ``record``, or None (logged) if it is not one."""
    try:
        return events.decode(events.RESULTS, record.value)
    except InvalidEventError as exc:
        log.warning("skipping %s@%d/%d: %s", record.topic, record.partition, record.offset, exc)
        return None


async def iter_results(settings: Settings, *, group_id: str | None = None,
                       timeout_s: float | None = None) -> AsyncIterator[ResultsEvent]:
    """Yield results events from the earliest uncommitted offset of ``group_id``.

    A fresh random group (the default) reads the topic from its beginning. Offsets are
    committed after each yielded event. Stops after ``timeout_s`` seconds without a message.
    """
    consumer = AIOKafkaConsumer(
        events.RESULTS, **client_options(settings),
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
                           on_result: Callable[[ResultsEvent], None] = lambda e: None,
                           ) -> dict[str, ResultsEvent]:
    """Read the results topic from its beginning until every id in ``document_ids`` has a
    result (for documents submitted before the call; a :class:`ResultsReader` started before
    submitting reads far less). Returns ``{document_id: last results event}``; raises
    TimeoutError with the missing ids.
    """
    async with ResultsReader(settings, from_beginning=True) as reader:
        return await reader.wait_for(document_ids, timeout_s=timeout_s, on_result=on_result)


class ResultWaiters:
    """Results for the callers awaiting them, in a long-lived process (the ingest API's ``?wait=``).

    One :class:`ResultsReader` (started at the high-water mark when entered) runs in the
    background and only looks at record keys; the event of a document someone awaits is
    decoded and schema-checked in a worker thread (a large event costs CPU-seconds, which must
    not stall the event loop that serves HTTP and Kafka). :meth:`wait` returns it as soon as it
    is read. The last records read are kept (up to ``keep_bytes`` and for at most ``keep_s`` seconds)
    so a caller who starts waiting just after its result went by still gets it: the door registers
    its waiter right after the submission, before any stage can have read it, so 10 s suffice; a
    bytes bound alone kept 16 MiB of results for ever in a long run (issue 24's soak: ingest's PSS
    rose by ~20 MiB over 3,000 documents), and 60 s of results at 5 documents per second made
    ingest's PSS move by ~7 MiB with the sizes of the results in that window. If the broker cannot
    be reached, the reader is retried in the background with backoff, and waits end as timeouts
    meanwhile.
    """

    def __init__(self, settings: Settings, *, keep_bytes: int = 16 * 1024 * 1024, keep_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.settings, self.keep_bytes, self.keep_s, self.clock = settings, keep_bytes, keep_s, clock
        self.reader: ResultsReader | None = None
        self._waiting: dict[str, list[asyncio.Future[ConsumerRecord]]] = {}
        self._recent: OrderedDict[str, ConsumerRecord] = OrderedDict()
        self._kept_at: dict[str, float] = {}  # document id -> when its record was kept (clock s)
        self._recent_bytes = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "ResultWaiters":
        try:
            self.reader = await ResultsReader(self.settings).start()
        except Exception as exc:  # noqa: BLE001 - ?wait= is a convenience: serve without it for now
            log.warning("results reader not started (%s: %s); retrying in the background", type(exc).__name__, exc)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.reader is not None:  # bounded: a frozen or gone broker must not hold up a graceful stop
            await close_within(self.reader.stop(), "the results reader")

    async def _run(self) -> None:
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while True:
            try:
                if self.reader is None:
                    self.reader = await ResultsReader(self.settings).start()
                for record in await self.reader.poll(1.0):
                    self._keep(record)
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep the API up; log and retry
                delay = backoff.next_delay(exc)
                log.warning("results reader: %s: %s; retrying in %.1f s", type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    def _keep(self, record: ConsumerRecord) -> None:
        """Remember ``record`` (bounded by bytes and age) and hand it to whoever awaits its document."""
        doc_id = document_id_of(record)
        if doc_id is None:
            return
        if doc_id in self._recent:
            self._recent_bytes -= len(self._recent.pop(doc_id).value or b"")
        now = self.clock()
        self._recent[doc_id], self._kept_at[doc_id] = record, now
        self._recent_bytes += len(record.value or b"")
        while len(self._recent) > 1 and (self._recent_bytes > self.keep_bytes
                                         or now - self._kept_at[next(iter(self._recent))] > self.keep_s):
            old_id, old = self._recent.popitem(last=False)
            self._recent_bytes -= len(old.value or b"")
            del self._kept_at[old_id]
        for future in self._waiting.pop(doc_id, []):
            if not future.done():
                future.set_result(record)

    async def wait(self, document_id: str, timeout_s: float) -> ResultsEvent | None:
        """The results event of ``document_id``, or None if none is read within ``timeout_s`` seconds."""
        record = self._recent.get(document_id)
        if record is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(document_id, []).append(future)
            try:
                record = await asyncio.wait_for(future, timeout_s)
            except asyncio.TimeoutError:
                return None
            finally:
                waiting = self._waiting.get(document_id, [])
                if future in waiting:
                    waiting.remove(future)
                if not waiting:
                    self._waiting.pop(document_id, None)
        return await asyncio.to_thread(decode_result, record)


async def fetch_documents(settings: Settings, document_ids: Collection[str]) -> dict[str, dict[str, Any]]:
    """Rows of ``documents`` (plus ``regions`` count) for ``document_ids``, keyed by id
    (:func:`ocrstream.storage.documents.fetch_rows` on a connection of its own)."""
    import asyncpg  # here: the submit path imports this module and needs no database

    from ocrstream.storage.documents import fetch_rows

    conn = await asyncpg.connect(settings.dsn)
    try:
        return await fetch_rows(conn, document_ids)
    finally:
        await conn.close()


def format_result(event: ResultsEvent) -> str:
    """One result as JSON text (one line), for ``tail-results``."""
    return json.dumps(events.to_json_object(event), ensure_ascii=False)
