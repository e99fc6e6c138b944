"""The stage loop every ocrstream stage runs: consume -> handle -> produce -> commit.

Delivery is at-least-once: a polled micro-batch's offsets are committed only after every output
of it is durable (objects written and rows committed by the handler, produced events acked by
the broker with ``acks=all``). A crash before the commit means the batch is redelivered, so
handlers are idempotent (content-addressed keys, upserts keyed by document/region id).

Per-message outcomes (see :mod:`services.core.errors`):

* success -> its output events are produced;
* transient fault (broker, S3, database down) -> the message is handled again after an
  exponential backoff (``retry_initial_s`` doubling to ``retry_max_s``), without limit; if the
  process is told to stop meanwhile, nothing of the batch is committed;
* anything else -> a dead-letter event on ``ocr.dlq.v1`` (stage, error type, message, source
  offset, the original event) and the loop goes on. The store stage turns dead letters into a
  ``failed`` document row and a ``failed`` results event.

Design after quixstreams' sinks (setup/handle, error callbacks) and arq (retries by job).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, TopicAlreadyExistsError

from . import events, health, metrics
from .errors import DocumentTooLargeError, InvalidEventError, PermanentError, is_transient
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """One event to produce: ``event`` validated against ``topic``'s schema, keyed by ``key``."""

    topic: str
    key: str
    event: events.Event

    @cached_property
    def payload(self) -> bytes:
        """The schema-validated JSON bytes (encoded once); raises InvalidEventError."""
        return events.encode(self.topic, self.event)


Result = list[Output] | BaseException


class Stage(ABC):
    """A pipeline stage: subclasses set ``name`` and ``input_topics`` and implement ``handle``.

    ``handle_batch`` may be overridden to process a polled micro-batch jointly (the recognize
    stage batches crops across documents); it must return one Result per record, in order.
    """

    name: ClassVar[str]
    input_topics: ClassVar[tuple[str, ...]]
    #: Once a poll returned records, wait up to this many ms for more (micro-batching).
    linger_ms: int = 0

    def __init__(self, settings: Settings):
        self.settings = settings

    async def setup(self) -> None:
        """Open clients, load models. Called once before consuming."""

    async def teardown(self) -> None:
        """Close what ``setup`` opened."""

    def background(self) -> list[Callable[[asyncio.Event], Awaitable[None]]]:
        """Extra coroutines run beside the loop until stop (e.g. ingest's HTTP API)."""
        return []

    async def published(self, outputs: Sequence[Output]) -> None:
        """Called once ``outputs`` of a batch are acked by the broker, before the offset commit."""

    @abstractmethod
    async def handle(self, record: ConsumerRecord) -> list[Output]:
        """Handle one consumed record; return the events to produce. Raise on failure."""

    async def handle_batch(self, records: Sequence[ConsumerRecord]) -> list[Result]:
        """Handle records one by one, capturing each failure as that record's result."""
        results: list[Result] = []
        for record in records:
            try:
                results.append(await self.handle(record))
            except Exception as exc:  # noqa: BLE001 - classified by the runner
                results.append(exc)
        return results


def dead_letter(stage: str, exc: BaseException, *, document_id: str | None,
                source: dict, original: events.Event | None = None, size_bytes: int = 0) -> Output:
    """The ``ocr.dlq.v1`` event for an input of ``stage`` that failed with ``exc``.

    ``source`` says where the input came from (``{"topic", "partition", "offset"}`` for a
    Kafka record, ``{"topic": "http"}`` for the API); ``original`` is the input event when it
    was JSON (never pixels: raw image bytes are only counted in ``original_size_bytes``).
    """
    document_id = document_id or (original or {}).get("document_id") or "unknown-" + "-".join(
        str(v) for v in source.values())
    event = {
        "schema": events.DLQ,
        "document_id": str(document_id),
        "stage": stage,
        "error": {"stage": stage, "type": type(exc).__name__, "message": str(exc)[:2000] or repr(exc)},
        "source": source,
        "original": original,
        "original_size_bytes": size_bytes,
        "failed_at": events.now_iso(),
    }
    return Output(events.DLQ, str(document_id), event)


def dead_letter_record(stage: str, record: ConsumerRecord, exc: BaseException) -> Output:
    """:func:`dead_letter` for a consumed Kafka record (its key is the document id)."""
    return dead_letter(
        stage, exc,
        document_id=record.key.decode("utf-8", "replace") if record.key else None,
        source={"topic": record.topic, "partition": record.partition, "offset": record.offset},
        original=events.try_json(record.value),
        size_bytes=len(record.value or b""),
    )


async def produce(producer: AIOKafkaProducer, outputs: Sequence[Output]) -> None:
    """Send every output (schema-validated) and wait until the broker acked all of them."""
    futures = [
        await producer.send(o.topic, o.payload, key=o.key.encode())
        for o in outputs
    ]
    await asyncio.gather(*futures)


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """A producer with ``acks=all`` and the configured maximum message size."""
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
                            max_request_size=settings.max_message_bytes)


class Backoff:
    """Exponential backoff: ``initial_s``, doubling, capped at ``max_s`` (seconds)."""

    def __init__(self, initial_s: float, max_s: float):
        self.initial_s, self.max_s, self.next_s = initial_s, max_s, initial_s

    async def wait(self, stop: asyncio.Event) -> bool:
        """Sleep for the next delay; False if ``stop`` was set meanwhile."""
        try:
            await asyncio.wait_for(stop.wait(), timeout=self.next_s)
            return False
        except asyncio.TimeoutError:
            self.next_s = min(self.next_s * 2, self.max_s)
            return True


async def retry_transient(what: str, stage: str, settings: Settings, stop: asyncio.Event,
                          fn: Callable[[], Awaitable]) -> bool:
    """Run ``fn`` until it succeeds, retrying transient faults with backoff.

    Returns False when ``stop`` was set before success. Non-transient errors propagate.
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
            log.warning("%s: %s failed (%s: %s); retrying in %.1f s", stage, what,
                        type(exc).__name__, exc, backoff.next_s)
            if not await backoff.wait(stop):
                return False


async def ensure_topics(settings: Settings, topics: Sequence[str] = events.ALL_TOPICS) -> None:
    """Create ``topics`` with ``settings.topic_partitions`` partitions if they do not exist."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, settings.topic_partitions, settings.topic_replication_factor)
                   for t in topics if t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


class StageRunner:
    """Runs one :class:`Stage` against Kafka until ``stop`` is set."""

    def __init__(self, stage: Stage, settings: Settings):
        self.stage, self.settings = stage, settings
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Set up, then poll/handle/produce/commit until ``stop``; always tears down."""
        s, name = self.settings, self.stage.name
        if not await retry_transient("create topics", name, s, stop, lambda: ensure_topics(s)):
            return
        if not await retry_transient("setup", name, s, stop, self.stage.setup):
            return
        self.consumer = AIOKafkaConsumer(
            *self.stage.input_topics,
            bootstrap_servers=s.kafka_bootstrap,
            group_id=f"{s.consumer_group_prefix}-{name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # never "latest": tansu misreports end offsets
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            max_partition_fetch_bytes=s.max_message_bytes,
            fetch_max_bytes=s.max_message_bytes * 2,
        )
        self.producer = make_producer(s)
        tasks = [asyncio.create_task(bg(stop)) for bg in self.stage.background()]
        tasks.append(asyncio.create_task(health.HEALTH.run(stop)))  # operability hook (issue 10): /readyz probes
        try:
            if not await retry_transient("connect to Kafka", name, s, stop, self._start_clients):
                return
            log.info("%s: consuming %s as group %s-%s", name, ",".join(self.stage.input_topics),
                     s.consumer_group_prefix, name)
            # operability hook (issue 10): lag refreshed on a timer
            tasks.append(asyncio.create_task(metrics.LagTracker(name).run(self.consumer, stop, s.lag_refresh_s)))
            while not stop.is_set():
                await self._poll_once(stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._stop_clients()
            await self.stage.teardown()
            log.info("%s: stopped", name)

    async def _start_clients(self) -> None:
        await self.producer.start()
        await self.consumer.start()

    async def _stop_clients(self) -> None:
        for client in (self.consumer, self.producer):
            try:
                await client.stop()
            except Exception as exc:  # noqa: BLE001 - best effort at shutdown
                log.debug("stopping %s: %s", client, exc)

    async def _poll_once(self, stop: asyncio.Event) -> None:
        records = await self._poll()
        if not records:
            return
        name = self.stage.name
        for r in records:
            metrics.MESSAGES_IN.labels(name, r.topic).inc()
        metrics.BATCH_SIZE.labels(name).observe(len(records))
        started = time.perf_counter()
        outputs = await self._handle_with_retries(records, stop)
        if outputs is None or not await retry_transient(
            "produce", name, self.settings, stop, lambda: self._produce(outputs)
        ):
            return  # stopping: nothing committed, the batch is redelivered
        if not await retry_transient("record publication", name, self.settings, stop,
                                     lambda: self.stage.published(outputs)):
            return
        await self._commit(records)
        metrics.PROCESSING_SECONDS.labels(name).observe(time.perf_counter() - started)

    async def _poll(self) -> list[ConsumerRecord]:
        """Up to ``poll_max_records`` records; lingers ``stage.linger_ms`` for more once some came."""
        limit = self.settings.poll_max_records
        polled = await self.consumer.getmany(timeout_ms=500, max_records=limit)
        health.mark_poll()  # operability hook (issue 10)
        records = [r for batch in polled.values() for r in batch]
        if records and self.stage.linger_ms and len(records) < limit:
            more = await self.consumer.getmany(timeout_ms=self.stage.linger_ms,
                                               max_records=limit - len(records))
            records += [r for batch in more.values() for r in batch]
        return records

    async def _handle_with_retries(self, records: Sequence[ConsumerRecord],
                                   stop: asyncio.Event) -> list[Output] | None:
        """Results of ``records``, transient failures retried; None if stopped meanwhile."""
        name = self.stage.name
        results = await self.stage.handle_batch(records)
        backoff = Backoff(self.settings.retry_initial_s, self.settings.retry_max_s)
        while pending := [i for i, r in enumerate(results) if isinstance(r, BaseException) and is_transient(r)]:
            for i in pending:
                exc = results[i]
                metrics.RETRIES.labels(name, type(exc).__name__).inc()
                log.warning("%s: transient %s on %s@%d: %s; retrying in %.1f s", name,
                            type(exc).__name__, records[i].topic, records[i].offset, exc, backoff.next_s)
            if not await backoff.wait(stop):
                return None
            retried = await self.stage.handle_batch([records[i] for i in pending])
            for i, r in zip(pending, retried):
                results[i] = r
        outputs: list[Output] = []
        for record, result in zip(records, results):
            if not isinstance(result, BaseException):
                result = self._checked(result)
            if isinstance(result, BaseException):
                outputs.extend(self._failed(record, result))
            else:
                outputs.extend(result)
        return outputs

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
        name = self.stage.name
        metrics.MESSAGES_FAILED.labels(name, type(exc).__name__).inc()
        log.error("%s: %s@%d/%d failed: %s: %s", name, record.topic, record.partition,
                  record.offset, type(exc).__name__, exc,
                  exc_info=None if isinstance(exc, PermanentError) else exc)
        if record.topic == events.DLQ:
            return []  # never dead-letter a dead letter: it stays on the DLQ topic
        return [dead_letter_record(name, record, exc)]

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
        except CommitFailedError as exc:  # rebalanced meanwhile: the new owner redelivers
            log.warning("%s: commit failed after rebalance (%s); batch will be redelivered",
                        self.stage.name, exc)


def run_stage(stage: Stage) -> None:
    """Run ``stage`` in this process until SIGTERM/SIGINT: metrics endpoint + stage loop."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await StageRunner(stage, stage.settings).run(stop)

    port = stage.settings.metrics_port_for(stage.name)
    metrics.init_stage(stage.name, stage.input_topics)  # operability hook (issue 10)
    health.serve(port, stage.name, stage.settings)  # operability hook (issue 10): /metrics /healthz /readyz
    metrics.STAGE_INFO.labels(stage.name, "input_topics", ",".join(stage.input_topics)).set(1)
    log.info("%s: metrics on :%s/metrics, probes on /healthz and /readyz", stage.name, port)
    asyncio.run(main())
