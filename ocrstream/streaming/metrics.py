"""Prometheus metrics of a stage (prometheus-client), all labelled by ``stage``.

Served on the stage's own port (:func:`ocrstream.contracts.stages.metrics_port`) at ``/metrics`` together with
the health probes (:mod:`ocrstream.streaming.health`); the Grafana dashboard and the alert rules in
``deploy/`` read these. Every labelled counter is created at start for its known label values
(:func:`init_stage`) so that ``rate()``/``increase()`` see the first event of a series (a series
born at 1 has no earlier sample to increase from).

Times are seconds; event timestamps are the ISO 8601 ``timestamps`` of the events
(``submitted`` -> ``ingested`` -> ``preprocessed`` -> ``recognized`` -> ``stored``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, get_args

from prometheus_client import Counter, Gauge, Histogram

from ocrstream import errors
from ocrstream.contracts import events
from ocrstream.contracts.event_models import SourceKind
from ocrstream.contracts.stages import STAGES
from ocrstream.streaming import retry

log = logging.getLogger(__name__)

MESSAGES_IN = Counter("ocrstream_messages_in_total", "Messages consumed", ["stage", "topic"])
MESSAGES_OUT = Counter("ocrstream_messages_out_total", "Messages produced", ["stage", "topic"])
MESSAGES_FAILED = Counter(
    "ocrstream_messages_failed_total", "Messages dead-lettered", ["stage", "error_type"]
)
RETRIES = Counter("ocrstream_retries_total", "Retries of transient faults", ["stage", "error_type"])
PROCESSING_SECONDS = Histogram(
    "ocrstream_processing_seconds",
    "Wall seconds to handle one polled micro-batch of messages",
    ["stage"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120),
)
BATCH_SIZE = Histogram(
    "ocrstream_batch_messages", "Messages per polled micro-batch", ["stage"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
RECOGNIZER_BATCH = Histogram(
    "ocrstream_recognizer_batch_crops", "Line crops per recogniser call (one micro-batch across documents)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
PAGES = Counter(
    "ocrstream_pages_total", "Pages analysed by preprocess, by where their text comes from: pdf-text (the "
    "PDF's own text layer, OCRSTREAM_PDF_TEXT) or ocr", ["path"],
)
CONSUMER_LAG = Gauge(
    "ocrstream_consumer_lag", "Fetch high-water mark minus position, per assigned partition "
    "(refreshed on a timer; revoked partitions removed)", ["stage", "topic", "partition"]
)
LAST_COMMIT = Gauge(
    "ocrstream_last_commit_timestamp_seconds", "Unix time of the stage's last offset commit", ["stage"]
)
DEAD_LETTERS_PARKED = Counter(
    "ocrstream_dead_letters_parked_total",
    "Dead letters the store could not record as failed rows, parked in PostgreSQL table parked_events",
    ["stage"],
)
LOOP_LAG = Gauge(
    "ocrstream_event_loop_lag_seconds",
    "How late the stage's Kafka event loop last woke up (CPU work on the loop shows here)", ["stage"],
)
STAGE_INFO = Gauge("ocrstream_stage_info", "Static facts of a stage (value 1)", ["stage", "key", "value"])
MODEL_SWITCH_FAILURES = Counter("ocrstream_model_switch_failures_total",
                                "Promoted models a recognize stage could not fetch or load (it kept serving its own)",
                                ["stage"])

#: Ingest doors: every ``source`` an ingested event can name (the contract's SourceKind, one source of truth).
DOORS: tuple[str, ...] = get_args(SourceKind)
INGEST_DOCUMENTS = Counter("ocrstream_ingest_documents_total", "Documents accepted by ingest", ["door"])
INGEST_BYTES = Counter("ocrstream_ingest_bytes_total", "Bytes of documents accepted by ingest", ["door"])
INGEST_REJECTED = Counter(
    "ocrstream_ingest_rejected_total", "Documents rejected by ingest", ["door", "reason"]
)

LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
END_TO_END_SECONDS = Histogram(
    "ocrstream_end_to_end_seconds",
    "Seconds from submitted to stored (event timestamps), observed by store per results event",
    ["status", "door"], buckets=LATENCY_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "ocrstream_stage_seconds",
    "Seconds a document spent in a stage: its timestamp minus the previous stage's "
    "(queueing in Kafka + processing), observed when the stage's output is acked",
    ["stage"], buckets=LATENCY_BUCKETS,
)

#: The event timestamp each stage sets, in pipeline order.
STAGE_TIMESTAMPS = {name: spec.timestamp for name, spec in STAGES.items()}
TIMESTAMP_ORDER = ("submitted", "ingested", "preprocessed", "recognized", "stored")
#: Topics each stage produces to (for pre-initialising ``ocrstream_messages_out_total``).
STAGE_OUTPUTS = {name: spec.outputs for name, spec in STAGES.items()}


def _subclass_names(cls: type) -> set[str]:
    names = {cls.__name__}
    sub: type
    for sub in cls.__subclasses__():
        names |= _subclass_names(sub)
    return names


def known_error_types() -> tuple[list[str], list[str]]:
    """(permanent, transient) exception type names a stage may label failures/retries with.

    Permanent: every subclass of :class:`errors.PermanentError` imported so far (call after the
    stage's modules are imported, so e.g. preprocess's UnknownTemplateError is included) plus
    ``Exception`` subclasses that are bugs are not knowable in advance. Transient: the types of
    :func:`retry.transient_types` and subclasses of :class:`errors.TransientError`.
    """
    permanent = sorted(_subclass_names(errors.PermanentError))
    transient = sorted({t.__name__ for t in retry.transient_types()} | _subclass_names(errors.TransientError))
    return permanent, transient


def init_stage(stage: str, input_topics: Iterable[str]) -> None:
    """Create every labelled series of ``stage`` at 0 (topics, error types, doors, statuses)."""
    for topic in input_topics:
        MESSAGES_IN.labels(stage, topic)
    for topic in STAGE_OUTPUTS.get(stage, ()):
        MESSAGES_OUT.labels(stage, topic)
    permanent, transient = known_error_types()
    for name in permanent:
        MESSAGES_FAILED.labels(stage, name)
    for name in transient:
        RETRIES.labels(stage, name)
    PROCESSING_SECONDS.labels(stage)
    BATCH_SIZE.labels(stage)
    STAGE_SECONDS.labels(stage)
    if stage == "ingest":
        for door in DOORS:
            INGEST_DOCUMENTS.labels(door)
            INGEST_BYTES.labels(door)
            for name in _subclass_names(errors.BadInputError):
                INGEST_REJECTED.labels(door, name)
    if stage == "store":
        for status in ("done", "failed"):
            for door in DOORS:
                END_TO_END_SECONDS.labels(status, door)


def count_ingested(door: str, size_bytes: int) -> None:
    """One document of ``size_bytes`` accepted at ``door`` (one of :data:`DOORS`)."""
    INGEST_DOCUMENTS.labels(door).inc()
    INGEST_BYTES.labels(door).inc(size_bytes)


def count_rejected(door: str, exc: BaseException) -> None:
    """One document rejected at ``door``; the reason is the error type."""
    INGEST_REJECTED.labels(door, type(exc).__name__).inc()


def mark_commit(stage: str) -> None:
    """Record that ``stage`` just committed offsets."""
    LAST_COMMIT.labels(stage).set_to_current_time()


def _seconds_between(ts: dict[str, Any], earlier: str, later: str) -> float | None:
    try:
        return (datetime.fromisoformat(ts[later]) - datetime.fromisoformat(ts[earlier])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def observe_outputs(stage: str, outputs: Sequence[Any]) -> None:
    """Time in stage (and, for store's results events, end-to-end latency) from the
    ``timestamps`` of acked outputs (:class:`ocrstream.streaming.stage.Output`); events without
    timestamps (dead letters) are skipped."""
    own = STAGE_TIMESTAMPS.get(stage)
    if own is None:
        return
    for output in outputs:
        stamps = getattr(output.event, "timestamps", None)
        if stamps is None:
            continue
        ts = events.to_json_object(stamps)
        if own not in ts:
            continue
        earlier = [k for k in TIMESTAMP_ORDER[:TIMESTAMP_ORDER.index(own)] if ts.get(k)]
        if ts.get("failed"):  # a dead letter's result: the store's time starts when it failed
            earlier.append("failed")
        if earlier and (seconds := _seconds_between(ts, earlier[-1], own)) is not None:
            STAGE_SECONDS.labels(stage).observe(max(0.0, seconds))
        if output.topic == events.RESULTS and (seconds := _seconds_between(ts, "submitted", "stored")) is not None:
            document = getattr(output.event, "document", None)
            door = document.source if document else "unknown"
            END_TO_END_SECONDS.labels(getattr(output.event, "status", "unknown"), door).observe(max(0.0, seconds))


class LagTracker:
    """``ocrstream_consumer_lag`` of one stage's consumer: set for assigned partitions,
    removed for partitions no longer assigned (after a rebalance)."""

    def __init__(self, stage: str):
        self.stage = stage
        self.series: set[tuple[str, int]] = set()

    async def refresh(self, consumer: Any) -> None:
        """Lag = fetch high-water mark - position (tansu's end offsets are unreliable).

        ``consumer``: a started :class:`aiokafka.AIOKafkaConsumer`. Partitions whose high-water
        mark is not known yet (no fetch answered) keep no series.
        """
        current: set[tuple[str, int]] = set()
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            CONSUMER_LAG.labels(self.stage, tp.topic, str(tp.partition)).set(max(0, highwater - position))
            current.add((tp.topic, tp.partition))
        for topic, partition in self.series - current:
            CONSUMER_LAG.remove(self.stage, topic, str(partition))
        self.series = current

    async def run(self, consumer: Any, stop: asyncio.Event, interval_s: float) -> None:
        """Refresh every ``interval_s`` seconds until ``stop`` (an asyncio.Event) is set, so lag
        is reported while nothing is committed (a stuck or idle stage too)."""
        while not stop.is_set():
            try:
                await self.refresh(consumer)
            except Exception as exc:  # noqa: BLE001 - a failed refresh must not stop the stage
                log.debug("%s: lag refresh failed: %s", self.stage, exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except asyncio.TimeoutError:
                pass
