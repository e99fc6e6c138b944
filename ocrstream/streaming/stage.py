"""The stage runtime every ocrstream stage runs: consume -> handle -> produce -> commit.

Delivery is at-least-once: a polled micro-batch's offsets are committed only after every output
of it is durable (objects written and rows committed by the handler, produced events acked by
the broker with ``acks=all``). A crash before the commit means the batch is redelivered, so
handlers are idempotent (content-addressed keys, upserts keyed by document/region id).

One set of rules for every stage (after arq's jobs and quixstreams' sinks):

* **Off the loop.** The main event loop only talks to Kafka (polls, heartbeats, produce, commit).
  A stage's own code runs on a separate loop in a worker thread (:mod:`ocrstream.streaming.loops`), and
  background servers (HTTP doors) on loops of their own, so CPU work can never starve heartbeats.
* **Paused while busy.** While a batch is handled, the assigned partitions are paused and the
  runtime keeps polling (nothing is returned, but ``max.poll.interval`` is honoured and the
  member stays in its group). A rebalance waits for the batch in hand to be committed.
* **Bounded.** A batch may take ``record_timeout_s`` per record; past that it is cancelled and
  redelivered. Transient faults (:func:`~ocrstream.streaming.retry.is_transient`, e.g.
  ``TransientError(retry_after=...)``) are retried with exponential backoff and full jitter, at
  most ``retry_max_attempts`` times per record, then the record is dead-lettered
  (``RetriesExhaustedError``). A stop request during a retry commits nothing.
* **Poison isolation.** A partition is marked held in the delivery-attempt ledger before its first
  batch (:mod:`ocrstream.streaming.attempts`: one write per assignment, not per batch) and released
  when revoked or stopped. A partition whose batch was begun before and never finished
  (crash, OOM kill, timeout) is handled one record at a time, and its first record, once begun
  ``max_delivery_attempts`` times, is dead-lettered (``PoisonMessageError``, or
  ``HandlerTimeoutError`` when it timed out in this process) without being handled again.
  A batch whose handler raises as a whole is split in halves until the bad record is alone.
* **Nothing to do, nothing written.** Records the stage :meth:`~Stage.ignores` (e.g. ingest's
  bucket notifications of objects outside the inbox) are committed with their batch without
  being handled or recorded in the ledger: a ledger write is itself an object-store write, and
  notified writes that each caused another one kept the embedded stack busy forever (issue 13).
* **Typed dead letters.** Any other failure of one record becomes a dead-letter event on
  ``ocr.dlq.v1`` with one of our error types (:func:`~ocrstream.streaming.retry.as_typed`); the store
  stage turns it into a ``failed`` row and a ``failed`` results event.
* **Fail fast on configuration.** A :class:`~ocrstream.errors.ConfigurationError` (or any
  non-transient error) in ``setup`` ends the process with the message, before consuming.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from ocrstream.contracts import events
from ocrstream.contracts.event_models import DeadLetterEvent, ErrorInfo, Source
from ocrstream.contracts.stages import metrics_port
from ocrstream.errors import (
    ConfigurationError,
    DocumentTooLargeError,
    HandlerTimeoutError,
    InvalidEventError,
    PermanentError,
    PoisonMessageError,
    RetriesExhaustedError,
)
from ocrstream.ocr.runtime import heap
from ocrstream.settings import Settings
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming import costs, health, metrics, tracing
from ocrstream.streaming.attempts import DeliveryAttempts
from ocrstream.streaming.kafka import client_options, ensure_topics, make_producer, produce
from ocrstream.streaming.loops import LoopLagMonitor, LoopThread, close_within, serve_in_thread
from ocrstream.streaming.retry import Backoff, as_typed, is_transient

log = logging.getLogger(__name__)

__all__ = ["Output", "Result", "Stage", "StageRunner", "dead_letter", "dead_letter_record", "ensure_topics",
           "make_producer", "produce", "run_stage"]


@dataclass(frozen=True)
class Output:
    """One event to produce: ``event`` (the model of ``topic``) keyed by ``key``; ``headers``:
    Kafka record headers (the trace context, :mod:`ocrstream.streaming.tracing`)."""

    topic: str
    key: str
    event: events.Event
    headers: list[tuple[str, bytes]] = field(default_factory=list, compare=False, hash=False)

    @cached_property
    def payload(self) -> bytes:
        """The validated JSON bytes (encoded once); raises InvalidEventError."""
        return events.encode(self.topic, self.event)


Result = list[Output] | BaseException


class Stage(ABC):
    """A pipeline stage: subclasses set ``name`` and ``input_topics`` and implement ``handle``.

    All methods run on the stage's handler loop (a worker thread), never on the Kafka loop.
    ``handle_batch`` may be overridden to process a polled micro-batch jointly (the recognize
    stage batches crops across documents); it returns one Result per record, in order, and may
    raise when the batch as a whole fails (the runtime then splits it to find the bad record).
    """

    name: ClassVar[str]
    input_topics: tuple[str, ...]  # a class attribute; the ingest stage sets its own per instance

    @property
    def linger_ms(self) -> int:
        """Once a poll returned records at once, wait up to this many ms for more (micro-batching);
        records a poll waited this long or longer for go on without it (:meth:`StageRunner._poll`)."""
        return 0

    def __init__(self, settings: Settings):
        self.settings = settings

    async def setup(self) -> None:
        """Open clients, load models. Called once before consuming; raise ConfigurationError
        for settings that cannot work (the process exits with the message)."""

    async def teardown(self) -> None:
        """Close what ``setup`` opened."""

    def consumer_group(self) -> str:
        """The stage's Kafka consumer group: ``<OCRSTREAM_CONSUMER_GROUP_PREFIX>-<name>``."""
        return f"{self.settings.consumer_group_prefix}-{self.name}"

    def background(self) -> list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]]:
        """Servers run beside the loop until stop (e.g. ingest's HTTP API), each on its own loop."""
        return []

    async def published(self, outputs: Sequence[Output]) -> None:
        """Called once ``outputs`` of a batch are acked by the broker, before the offset commit."""

    def ignores(self, record: ConsumerRecord) -> bool:
        """True for a record this stage does nothing with (no output, no side effect): it is
        committed without being handled or counted as a delivery attempt. Runs on the Kafka
        loop: it must be cheap (parse a small header or key, never I/O). Default: False."""
        return False

    @abstractmethod
    async def handle(self, record: ConsumerRecord) -> list[Output]:
        """Handle one consumed record; return the events to produce. Raise on failure."""

    async def handle_batch(self, records: Sequence[ConsumerRecord]) -> list[Result]:
        """Handle records one by one, capturing each failure as that record's result; each
        output event gets the stage's cost of its record (:mod:`ocrstream.streaming.costs`)."""
        results: list[Result] = []
        for record in records:
            try:
                # the record's stage span is current while handled; so is its cost meter (costs.py)
                with tracing.use(record), costs.metering(self.name, len(record.value or b"")) as meter:
                    outputs = await self.handle(record)
                results.append(costs.stamp(outputs, meter.read()))
            except Exception as exc:  # noqa: BLE001 - classified by the runner
                results.append(exc)
        return results


def dead_letter(stage: str, exc: BaseException, *, document_id: str | None,
                source: Source, original: events.JSONObject | None = None, size_bytes: int = 0) -> Output:
    """The ``ocr.dlq.v1`` event for an input of ``stage`` that failed with ``exc``.

    ``exc`` is reported as one of our types (:func:`as_typed`). ``source`` says where the input
    came from (topic, partition, offset of a Kafka record; ``Source(topic="http")`` for the
    API); ``original`` is the input event when it was JSON (never pixels: raw image bytes are
    only counted in ``original_size_bytes``).
    """
    typed = as_typed(exc)
    document_id = document_id or (original or {}).get("document_id") or "unknown-" + "-".join(
        str(v) for v in events.to_json_object(source).values())
    event = DeadLetterEvent(
        document_id=str(document_id),
        stage=stage,
        error=ErrorInfo(stage=stage, type=type(typed).__name__, message=str(typed)[:2000] or repr(typed)),
        source=source,
        original=original,
        original_size_bytes=size_bytes,
        failed_at=events.now_iso(),
    )
    return Output(events.DLQ, str(document_id), event)


#: A dead letter carries its input event only up to this size; a larger one is replayed from its
#: source offset (``ocrstream dlq replay`` reads it back), which keeps dead letters cheap to build.
MAX_ORIGINAL_BYTES = 256 * 1024


def dead_letter_record(stage: str, record: ConsumerRecord, exc: BaseException) -> Output:
    """:func:`dead_letter` for a consumed Kafka record: the document id is the one the handler
    attached to the error (``exc.document_id``), else the record's key. A handler that consumed
    bytes rather than an event attaches what it knows of the document (``exc.document_ref``:
    source, filename, content hash, size): that is the dead letter's ``original`` then, so the
    ``failed`` row keeps it (the bytes themselves are never JSON worth carrying)."""
    value = record.value or b""
    document_id = getattr(exc, "document_id", None) or (record.key.decode("utf-8", "replace") if record.key else None)
    ref = getattr(exc, "document_ref", None)
    if isinstance(ref, dict):
        original: events.JSONObject | None = {"document_id": document_id, "document": ref}
    else:
        original = events.try_json(value) if len(value) <= MAX_ORIGINAL_BYTES else None
    return dead_letter(
        stage, exc,
        document_id=document_id,
        source=Source(topic=record.topic, partition=record.partition, offset=record.offset),
        original=original,
        size_bytes=len(value),
    )


def connection_hint(settings: Settings) -> str:
    """What to check when Kafka cannot be reached (logged while retrying the connection)."""
    return (f"cannot reach Kafka at {settings.kafka_bootstrap} (OCRSTREAM_KAFKA_BOOTSTRAP); "
            "is it running? for the embedded stack: ocrstream dev up")


async def retry_transient(what: str, stage: str, settings: Settings, stop: asyncio.Event,
                          fn: Callable[[], Awaitable[Any]], hint: str = "") -> bool:
    """Run ``fn`` until it succeeds, retrying transient faults with backoff and jitter.

    For the runtime's own steps (connect, produce, commit): these retry without limit because
    the whole stage waits on them, not one record. Returns False when ``stop`` was set before
    success. Non-transient errors propagate.
    """
    backoff = Backoff(settings.retry_initial_s, settings.retry_max_s)
    while True:
        try:
            await fn()
            return True
        except Exception as exc:
            if not is_transient(exc):
                raise
            metrics.RETRIES.labels(stage, type(exc).__name__).inc()
            log.warning("%s: %s failed (%s: %s)%s; retrying", stage, what, type(exc).__name__, exc,
                        f"; {hint}" if hint else "")
            if not await backoff.wait(stop, exc):
                return False


class _Rebalance(ConsumerRebalanceListener):
    """Keeps new partitions paused while a batch is in hand; lets revocation wait for its commit."""

    def __init__(self, runner: "StageRunner"):
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.settle(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.runner.busy and assigned:
            self.runner.consumer.pause(*assigned)


class StageRunner:
    """Runs one :class:`Stage` against Kafka until ``stop`` is set.

    ``run`` makes the consumer and producer; ``attempts`` is the delivery-attempt ledger (by
    default the object store's). Unit tests (tests/unit/) set ``consumer``, ``producer`` and
    ``attempts`` to fakes and drive :meth:`deliver` batch by batch.
    """

    def __init__(self, stage: Stage, settings: Settings, *, attempts: DeliveryAttempts | None = None):
        self.stage, self.settings = stage, settings
        self.group = stage.consumer_group()
        # None until run() makes them (aiokafka has no type information: Any to mypy)
        self.consumer: AIOKafkaConsumer = None
        self.producer: AIOKafkaProducer = None
        self.handler = LoopThread(f"{stage.name}-handler")
        self.attempts = attempts if attempts is not None else DeliveryAttempts(
            ObjectStore(settings), self.group, batch_max=settings.poll_max_records)
        self.busy = False
        self._settled = asyncio.Event()
        self._settled.set()
        self._timed_out: set[tuple[str, int, int]] = set()  # (topic, partition, offset) timed out here
        self._trace: tracing.BatchTrace | tracing.PassThrough = tracing.NO_TRACE  # spans of the batch in hand

    async def run(self, stop: asyncio.Event) -> None:
        """Set up, then poll/handle/produce/commit until ``stop``; always tears down.

        Raises ConfigurationError (or the stage's non-transient setup error) before consuming.
        """
        s, name = self.settings, self.stage.name
        servers: list[asyncio.Task[None]] = []
        self.handler.start()
        monitor = LoopLagMonitor(name, metrics.LOOP_LAG.labels(name).set)
        tasks = [asyncio.create_task(monitor.run(stop))]
        tasks.append(asyncio.create_task(health.HEALTH.run(stop)))  # operability hook (issue 10): /readyz probes
        try:
            if not await retry_transient("create topics", name, s, stop, lambda: ensure_topics(s),
                                         connection_hint(s)):
                return
            if not await retry_transient("setup", name, s, stop, lambda: self.handler.call(self.stage.setup())):
                return
            servers = [asyncio.create_task(serve_in_thread(f"{name}-{bg.__name__}", bg, stop))
                       for bg in self.stage.background()]
            tasks += servers
            self.consumer = AIOKafkaConsumer(
                **client_options(s),
                group_id=self.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",  # never "latest": tansu misreports end offsets
                session_timeout_ms=s.session_timeout_ms,
                group_instance_id=s.group_instance_id or None,  # static membership when set
                heartbeat_interval_ms=s.heartbeat_interval_ms,
                max_partition_fetch_bytes=s.max_message_bytes,
                fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
                fetch_max_bytes=s.max_message_bytes * 2,
            )
            self.consumer.subscribe(list(self.stage.input_topics), listener=_Rebalance(self))
            self.producer = make_producer(s)
            if not await retry_transient("connect to Kafka", name, s, stop, self._start_clients,
                                         connection_hint(s)):
                return
            log.info("%s: consuming %s as group %s", name, ",".join(self.stage.input_topics), self.group)
            # operability hook (issue 10): lag refreshed on a timer
            tasks.append(asyncio.create_task(metrics.LagTracker(name).run(self.consumer, stop, s.lag_refresh_s)))
            while not stop.is_set():
                await self._poll_once(stop)
                for task in tasks:
                    if stop.is_set() or not task.done():
                        continue  # background tasks end when stop is set
                    if task.cancelled():
                        raise RuntimeError(f"{name}: a background task was cancelled")
                    if (error := task.exception()) is not None:
                        raise error  # a background server died: fail loudly
        finally:
            stop.set()
            await asyncio.gather(*(t for t in tasks if t not in servers), return_exceptions=True)
            await close_within(self.attempts.release(self.attempts.held()), "the delivery-attempt ledger",
                               LEDGER_RELEASE_S)
            # the background servers (HTTP doors) close their own clients while the stage closes its
            await asyncio.gather(asyncio.gather(*servers, return_exceptions=True), self._stop_clients())
            try:
                await asyncio.wait_for(self.handler.call(self.stage.teardown()), 10)
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.warning("%s: teardown: %s", name, exc)
            self.handler.stop()
            log.info("%s: stopped", name)

    async def _start_clients(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def _stop_clients(self) -> None:
        """Stop the consumer (commit, leave the group) and the producer, each within
        ``SHUTDOWN_CLOSE_S / 2`` s; best effort: a broker that is gone makes aiokafka's close time
        out or cancel its own fetch tasks, which is logged, not raised (the exit stays 0;
        :func:`~ocrstream.streaming.loops.close_within`)."""
        for client in (self.consumer, self.producer):
            if client is not None:
                await close_within(client.stop(), type(client).__name__, SHUTDOWN_CLOSE_S / 2)

    # ------------------------------------------------------------------ one poll

    async def _poll_once(self, stop: asyncio.Event) -> None:
        records = await self._poll()
        if records:
            await self.deliver(records, stop)

    async def deliver(self, records: Sequence[ConsumerRecord], stop: asyncio.Event) -> None:
        """The delivery rules for one polled micro-batch (see the module doc): handle it (paused,
        bounded, retried, poison records and failures dead-lettered), produce the outputs and
        wait for their acks, ``stage.published``, then commit. Nothing is committed when
        stopping or on a timeout (the records are rewound and polled again)."""
        name = self.stage.name
        for r in records:
            metrics.MESSAGES_IN.labels(name, r.topic).inc()
        self.busy, started = True, time.perf_counter()
        self._settled.clear()
        paused = self.consumer.assignment()
        self.consumer.pause(*paused)
        try:
            processed = await self._while_polling(self._process(records, stop), stop)
            if processed is None:  # stopping or timed out: nothing committed, polled again
                self._rewind(records)
                return
            outputs, records = processed
            if not await retry_transient("produce", name, self.settings, stop, lambda: self._produce(outputs)):
                return
            if not await retry_transient("record publication", name, self.settings, stop,
                                         lambda: self.handler.call(self.stage.published(outputs))):
                return
            await self._commit(records)
            metrics.BATCH_SIZE.labels(name).observe(len(records))
            metrics.PROCESSING_SECONDS.labels(name).observe(time.perf_counter() - started)
        finally:
            self._trace.end()
            self.busy = False
            self._settled.set()
            current = self.consumer.assignment()
            self.consumer.resume(*(tp for tp in paused | current if tp in current))

    async def _poll(self) -> list[ConsumerRecord]:
        """Up to ``poll_max_records`` records; lingers ``stage.linger_ms`` for more once some came,
        unless the stage was idle: when the poll itself waited ``linger_ms`` or longer for them, a
        record arrived alone on an idle stage and goes on at once (a lone receipt gained nothing from
        the linger but its wait, issue 22: ~20 ms per receipt in recognize); records ready at once
        (a backlog, a stream) still wait for more to batch with."""
        limit = self.settings.poll_max_records
        started = time.monotonic()
        polled = await self.consumer.getmany(timeout_ms=500, max_records=limit)
        waited_ms = (time.monotonic() - started) * 1000
        health.mark_poll()  # operability hook (issue 10)
        records = [r for batch in polled.values() for r in batch]
        if records and self.stage.linger_ms and len(records) < limit and waited_ms < self.stage.linger_ms:
            more = await self.consumer.getmany(timeout_ms=self.stage.linger_ms,
                                               max_records=limit - len(records))
            records += [r for batch in more.values() for r in batch]
        return records

    async def _while_polling(self, work: Awaitable[Any], stop: asyncio.Event) -> Any:
        """Await ``work`` while polling the paused consumer (heartbeats, max.poll.interval).

        Records that arrive anyway (a partition assigned and fetched before it was paused) are
        not lost: their partition is rewound to them, to be polled after this batch. Once
        ``stop`` is set, ``work`` gets ``shutdown_grace_s`` to finish, then it is cancelled and
        None is returned (nothing of the batch is committed).
        """
        task = asyncio.ensure_future(work)
        deadline = None
        try:
            while not task.done():
                if stop.is_set():
                    deadline = deadline or time.monotonic() + self.settings.shutdown_grace_s
                    if time.monotonic() > deadline:
                        log.warning("%s: stopping; the batch in hand is abandoned and will be redelivered",
                                    self.stage.name)
                        return None
                await self._poll_while(task)
            return task.result()
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    async def _poll_while(self, task: asyncio.Future[Any]) -> None:
        """One poll of the paused consumer (at most ``BUSY_POLL_MS``), cut short when ``task`` ends,
        so that a handled batch is produced at once, not when the poll times out (that wait cost
        every hop of a document up to 200 ms: a rendered receipt's answer at the HTTP door took 0.79 s
        at p50 on a quiet machine, 0.36 s without it; issue 22, ``bench/bench_first_minute.py``).

        Cancelling a poll loses nothing: aiokafka's ``fetched_records`` takes records from its
        buffer only between awaits, and returns right after. Records the poll did return (a
        partition assigned and fetched before it was paused) are rewound, to be polled after this
        batch. Raises what ``getmany`` raises (coordinator errors)."""
        poll = asyncio.ensure_future(self.consumer.getmany(timeout_ms=BUSY_POLL_MS))
        try:
            await asyncio.wait({task, poll}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not poll.done():
                poll.cancel()
            polled = (await asyncio.gather(poll, return_exceptions=True))[0]
        health.mark_poll()  # operability hook (issue 10): polling goes on while busy
        if isinstance(polled, asyncio.CancelledError):
            return
        if isinstance(polled, BaseException):
            raise polled
        for tp, recs in polled.items():
            if recs:
                self.consumer.seek(tp, recs[0].offset)
                self.consumer.pause(tp)

    async def settle(self, revoked: set[TopicPartition]) -> None:
        """Before ``revoked`` partitions go: wait (bounded) for the batch in hand to commit, then
        release them in the delivery-attempt ledger (best effort: a partition left held makes
        its next owner handle its first records alone)."""
        try:
            await asyncio.wait_for(self._settled.wait(), timeout=self.settings.record_timeout_s + 10)
        except asyncio.TimeoutError:
            log.warning("%s: partitions revoked while a batch was still running; it will be redelivered",
                        self.stage.name)
            self.attempts.forget(revoked)
            return
        await close_within(self.attempts.release(revoked), "the delivery-attempt ledger", LEDGER_RELEASE_S)

    # ------------------------------------------------------------------ handling

    async def _process(self, records: Sequence[ConsumerRecord], stop: asyncio.Event
                       ) -> tuple[list[Output], list[ConsumerRecord]] | None:
        """The outputs of the records handled now (results or dead letters) and those records;
        None when stopping or when the batch timed out (then nothing is committed).

        A partition holding a record begun before and never finished contributes only its
        first record (the rest is polled again); that record, once begun
        ``max_delivery_attempts`` times, is dead-lettered without being handled.
        """
        by_partition: dict[TopicPartition, list[ConsumerRecord]] = {}
        for r in records:
            by_partition.setdefault(TopicPartition(r.topic, r.partition), []).append(r)
        ignored = {id(r) for r in records if self.stage.ignores(r)}
        taken: list[ConsumerRecord] = []
        poisoned: dict[int, BaseException] = {}

        async def begin() -> None:
            taken.clear()
            poisoned.clear()
            for tp, mine in by_partition.items():
                if all(id(r) in ignored for r in mine):
                    taken.extend(mine)  # nothing to handle: no ledger write
                    continue
                unfinished = await self.attempts.unfinished(tp, committed=mine[0].offset)
                if not any(r.offset in unfinished for r in mine):
                    taken.extend(mine)
                    await self.attempts.begin_batch(tp, [r.offset for r in mine if id(r) not in ignored])
                    continue
                first, times = mine[0], unfinished.get(mine[0].offset, 0)
                if len(mine) > 1:
                    self.consumer.seek(tp, mine[1].offset)
                taken.append(first)
                if id(first) in ignored:
                    continue
                if times >= self.settings.max_delivery_attempts:
                    poisoned[id(first)] = self._poison_error(first, times)
                else:
                    if times:
                        log.warning("%s: %s@%d/%d begun %d time(s) without finishing; handling it alone",
                                    self.stage.name, tp.topic, tp.partition, first.offset, times)
                    await self.attempts.begin_alone(tp, first.offset)

        if not await retry_transient("record delivery attempts", self.stage.name, self.settings, stop, begin):
            return None
        handle = [r for r in taken if id(r) not in poisoned and id(r) not in ignored]
        self._trace = tracing.begin(self.stage.name, self.group, [r for r in taken if id(r) not in ignored])
        results: dict[int, Result] = {**dict.fromkeys(ignored, []), **poisoned}
        if handle:
            handled = await self._handle_with_retries(handle, stop)
            if handled is None:
                return None
            results.update({id(r): res for r, res in zip(handle, handled)})
        outputs: list[Output] = []
        for record in taken:
            result = results[id(record)]
            if isinstance(result, BaseException):
                outputs.extend(self._trace.stamp(record, self._failed(record, result), as_typed(result)))
            else:
                outputs.extend(self._trace.stamp(record, result))
        return outputs, taken

    @staticmethod
    def _key(record: ConsumerRecord) -> tuple[str, int, int]:
        return record.topic, record.partition, record.offset

    def _rewind(self, records: Sequence[ConsumerRecord]) -> None:
        """Seek every partition of ``records`` back to its first record (they were not committed)."""
        first: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            first[tp] = min(first.get(tp, r.offset), r.offset)
        assigned = self.consumer.assignment()
        for tp, offset in first.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

    def _poison_error(self, record: ConsumerRecord, times: int) -> PermanentError:
        where = f"{record.topic}@{record.partition}/{record.offset}"
        if self._key(record) in self._timed_out:
            return HandlerTimeoutError(f"{where} timed out (> {self.settings.record_timeout_s:g} s) {times} times")
        return PoisonMessageError(f"{where} was begun {times} times and never finished "
                                  "(the stage crashed, was killed or hung while handling it)")

    async def _handle_with_retries(self, records: Sequence[ConsumerRecord],
                                   stop: asyncio.Event) -> list[Result] | None:
        """Results of ``records``, transient failures retried (capped); None if stopped or timed out."""
        name = self.stage.name
        results = await self._handle_split(records)
        if results is None:
            return None
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        tries = 0
        while pending := {i: r for i, r in enumerate(results) if isinstance(r, BaseException) and is_transient(r)}:
            tries += 1
            for i, exc in pending.items():
                metrics.RETRIES.labels(name, type(exc).__name__).inc()
                log.warning("%s: transient %s on %s@%d (try %d of %d): %s", name, type(exc).__name__,
                            records[i].topic, records[i].offset, tries, self.settings.retry_max_attempts, exc)
                if tries >= self.settings.retry_max_attempts:
                    results[i] = RetriesExhaustedError(
                        f"{type(exc).__name__}: {exc} (still failing after {tries} tries)")
            if tries >= self.settings.retry_max_attempts:
                break
            if not await backoff.wait(stop, next(iter(pending.values()))):
                return None
            retried = await self._handle_split([records[i] for i in pending])
            if retried is None:
                return None
            for i, r in zip(pending, retried):
                results[i] = r
        return results

    async def _handle_split(self, records: Sequence[ConsumerRecord]) -> list[Result] | None:
        """``stage.handle_batch`` with a timeout; a batch that raises as a whole is split in
        halves until the failing record is alone (its exception becomes its result).
        None when the batch timed out: its records are remembered as timed out."""
        timeout = self.settings.record_timeout_s * len(records)
        try:
            results = await asyncio.wait_for(self.handler.call(self._run_batch(records)), timeout)
        except asyncio.TimeoutError:
            self._on_timeout(records)
            return None
        except Exception as exc:  # noqa: BLE001 - the batch as a whole failed
            if len(records) == 1 or is_transient(exc):
                return [exc for _ in records]
            log.warning("%s: batch of %d failed as a whole (%s: %s); splitting it", self.stage.name,
                        len(records), type(exc).__name__, exc)
            half = len(records) // 2
            left = await self._handle_split(records[:half])
            if left is None:
                return None
            right = await self._handle_split(records[half:])
            return None if right is None else left + right
        if len(results) != len(records):
            raise RuntimeError(f"{self.stage.name}.handle_batch returned {len(results)} results "
                               f"for {len(records)} records")
        return results

    async def _run_batch(self, records: Sequence[ConsumerRecord]) -> list[Result]:
        """On the handler loop: ``stage.handle_batch`` and the encoding and schema check of
        every output (validating a large event is CPU work: never on the Kafka loop)."""
        results = await self.stage.handle_batch(records)
        return [r if isinstance(r, BaseException) else self._checked(r) for r in results]

    def _on_timeout(self, records: Sequence[ConsumerRecord]) -> None:
        log.error("%s: batch of %d record(s) timed out after %g s per record; it is redelivered "
                  "and handled record by record", self.stage.name, len(records), self.settings.record_timeout_s)
        self._timed_out.update(self._key(r) for r in records)
        self.attempts.timed_out({TopicPartition(r.topic, r.partition) for r in records})
        if not self.handler.idle_within(10):
            # The handler's loop is wedged by code that never yields: only a restart frees it.
            # The delivery-attempt ledger makes the restart count as an attempt (poison isolation).
            log.critical("%s: handler loop blocked after a timeout; exiting to be restarted", self.stage.name)
            sys.stderr.flush()
            os._exit(70)

    def _checked(self, outputs: list[Output]) -> list[Output] | Exception:
        """``outputs`` if each is schema-valid and fits a Kafka message, else the error: one
        record's unproducible output must become its dead letter, not stop the stage."""
        try:
            for o in outputs:
                size = len(o.payload)
                if size > self.settings.max_message_bytes:
                    raise DocumentTooLargeError(
                        f"{o.topic} event of {size} bytes exceeds OCRSTREAM_MAX_MESSAGE_BYTES "
                        f"({self.settings.max_message_bytes})")
        except (InvalidEventError, DocumentTooLargeError) as exc:
            return exc
        return outputs

    def _failed(self, record: ConsumerRecord, exc: BaseException) -> list[Output]:
        name, typed = self.stage.name, as_typed(exc)
        metrics.MESSAGES_FAILED.labels(name, type(typed).__name__).inc()
        log.error("%s: %s@%d/%d failed: %s: %s", name, record.topic, record.partition,
                  record.offset, type(typed).__name__, typed,
                  exc_info=None if isinstance(exc, PermanentError) else exc)
        if record.topic == events.DLQ:
            return []  # never dead-letter a dead letter: the store parks what it cannot record
        return [dead_letter_record(name, record, typed)]

    async def _produce(self, outputs: Sequence[Output]) -> None:
        await produce(self.producer, outputs)
        for o in outputs:
            metrics.MESSAGES_OUT.labels(self.stage.name, o.topic).inc()
        metrics.observe_outputs(self.stage.name, outputs)  # operability hook (issue 10)

    async def _commit(self, records: Sequence[ConsumerRecord]) -> None:
        offsets: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
        try:
            await self.consumer.commit(offsets)
            metrics.mark_commit(self.stage.name)  # operability hook (issue 10)
            self._timed_out.difference_update(self._key(r) for r in records)
            self.attempts.finished(offsets)
        except (CommitFailedError, IllegalStateError) as exc:  # rebalanced meanwhile
            log.warning("%s: commit failed after rebalance (%s); the new owner redelivers the batch",
                        self.stage.name, exc)
        except KafkaError as exc:
            log.warning("%s: commit failed (%s); the batch will be redelivered", self.stage.name, exc)


#: the longest a poll of the paused consumer waits while a batch is handled, ms (it is cut short when
#: the batch is done): how often the runner checks ``stop`` and tells the group it is alive.
BUSY_POLL_MS = 200

#: seconds a process may spend releasing its partitions in the delivery-attempt ledger when they are
#: revoked or it stops (best effort: past it, their next owner handles their first records alone).
LEDGER_RELEASE_S = 1.5

#: seconds a process may spend closing its clients after the batch in hand had its
#: ``shutdown_grace_s``: past ``shutdown_grace_s + SHUTDOWN_CLOSE_S`` after SIGTERM it exits anyway.
SHUTDOWN_CLOSE_S = 5.0
#: exit status of a process that did not stop by itself within that bound (128 + SIGTERM, as a
#: shell reports a process killed by SIGTERM).
SHUTDOWN_EXPIRED_STATUS = 128 + signal.SIGTERM


def _awaiting(loop: asyncio.AbstractEventLoop) -> str:
    """Where each task of ``loop`` waits (innermost ``file:line function`` of its coroutine chain),
    for the backstop's last words: what kept the graceful stop from finishing. Read from another
    thread while the loop runs (best effort: the process exits right after)."""
    where = []
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:  # the set changed while read
        return "(tasks changing)"
    for task in tasks:
        coro: Any = task.get_coro()
        frame = None
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or frame
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if frame is not None:
            where.append(f"{task.get_name()} at {frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno} "
                         f"{frame.f_code.co_name}")
    return "; ".join(sorted(where)) or "(no task)"


def stop_on_signals(stop: asyncio.Event, name: str, grace_s: float) -> None:
    """On SIGTERM or SIGINT set ``stop`` (the graceful stop) and arm the backstop: a timer thread
    that, ``grace_s`` + :data:`SHUTDOWN_CLOSE_S` seconds later, kills this process's
    multiprocessing children (decoder workers) and exits with :data:`SHUTDOWN_EXPIRED_STATUS`,
    whatever the process is waiting on (a frozen broker, object store or database: their
    clients' close can hang for minutes). Crash-only, so safe: a batch not committed is
    redelivered. Call it in the running event loop's thread; the handler is a plain
    ``signal.signal`` handler (it runs even while the loop is busy) that wakes the loop with
    ``call_soon_threadsafe``.
    """
    loop = asyncio.get_running_loop()
    armed: list[threading.Timer] = []

    def expire() -> None:
        log.error("%s: still running %.0f s after SIGTERM (OCRSTREAM_SHUTDOWN_GRACE_S=%g + %g s to close): "
                  "exiting now (anything not committed is redelivered)", name, grace_s + SHUTDOWN_CLOSE_S,
                  grace_s, SHUTDOWN_CLOSE_S)
        log.error("%s: still waiting on: %s", name, _awaiting(loop))
        for child in multiprocessing.active_children():
            child.kill()
        logging.shutdown()
        os._exit(SHUTDOWN_EXPIRED_STATUS)

    def on_signal(signum: int, frame: object) -> None:
        if not armed:
            log.info("%s: %s: stopping (at most %g s)", name, signal.Signals(signum).name, grace_s + SHUTDOWN_CLOSE_S)
            timer = threading.Timer(grace_s + SHUTDOWN_CLOSE_S, expire)
            timer.daemon = True
            timer.start()
            armed.append(timer)
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)


def run_stage(stage: Stage) -> None:
    """Run ``stage`` in this process until SIGTERM/SIGINT: metrics endpoint + stage runtime.

    Before any thread starts, glibc's mmap threshold is fixed at ``OCRSTREAM_HEAP_MMAP_THRESHOLD_BYTES``
    (:func:`ocrstream.ocr.runtime.heap.fix_mmap_threshold`): buffers of that size or more (uploads,
    pages, crop packs, model batches) are mapped and returned to the OS when freed, instead of
    staying resident in the heaps of the threads that freed them (issue 24's soak).

    Exits with status 2 and the message on a configuration error, with status 3 when its
    dependencies stayed unreachable past ``OCRSTREAM_DEPENDENCY_EXIT_S`` (crash-only:
    :mod:`ocrstream.streaming.health`), and with status 143 when it had not stopped by itself
    ``OCRSTREAM_SHUTDOWN_GRACE_S`` + 5 s after SIGTERM (:func:`stop_on_signals`).
    """

    async def main() -> None:
        stop = asyncio.Event()
        stop_on_signals(stop, stage.name, stage.settings.shutdown_grace_s)
        await StageRunner(stage, stage.settings).run(stop)

    if stage.settings.heap_mmap_threshold_bytes:
        heap.fix_mmap_threshold(stage.settings.heap_mmap_threshold_bytes)
    port = metrics_port(stage.name, stage.settings.metrics_port)
    metrics.init_stage(stage.name, stage.input_topics)  # operability hook (issue 10)
    health.serve(port, stage.name, stage.settings)  # operability hook (issue 10): /metrics /healthz /readyz
    metrics.STAGE_INFO.labels(stage.name, "input_topics", ",".join(stage.input_topics)).set(1)
    log.info("%s: metrics on :%s/metrics, probes on /healthz and /readyz", stage.name, port)
    tracing.configure(stage.name)  # off unless OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        asyncio.run(main())
    except (ConfigurationError, PermanentError) as exc:
        log.error("%s: cannot start: %s: %s", stage.name, type(exc).__name__, exc)
        sys.exit(2)
    finally:
        tracing.shutdown()  # export the spans still queued
    if health.HEALTH.stranded:  # crash-only: its dependencies stayed unreachable (logged by health)
        sys.exit(health.STRANDED_EXIT_STATUS)
