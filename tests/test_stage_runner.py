"""The stage loop's delivery rules, on the real embedded broker: retries of transient faults,
dead letters for bad messages, offsets committed only after outputs are acked, nothing
committed when stopped mid-retry."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ocrstream.contracts import events
from ocrstream.contracts.event_models import DeadLetterEvent, ResultsEvent, Source, Timestamps
from ocrstream.errors import BadInputError, ConfigurationError
from ocrstream.streaming import metrics
from ocrstream.streaming.stage import Output, Stage, StageRunner, ensure_topics
from tests.test_pipeline_e2e import read_topic

pytestmark = pytest.mark.slow


class FlakyStage(Stage):
    """Test stage: ``ok`` succeeds, ``transient`` fails ``fails`` times with ConnectionError
    first, ``bad`` is bad input. Outputs a results event per success."""

    name = "flaky"

    def __init__(self, settings, topic: str):
        super().__init__(settings)
        self.input_topics = (topic,)
        self.attempts: Counter[str] = Counter()

    async def handle(self, record):
        msg = json.loads(record.value)
        self.attempts[msg["id"]] += 1
        if msg["mode"] == "bad":
            raise BadInputError(f"bad message {msg['id']}")
        if msg["mode"] == "transient" and self.attempts[msg["id"]] <= msg["fails"]:
            raise ConnectionError("database down (simulated)")
        if msg["mode"] == "unproducible":  # a bug: an output that breaks its schema
            return [Output(events.RESULTS, msg["id"], result_event(msg["id"], status="pending"))]
        return [Output(events.RESULTS, msg["id"], result_event(msg["id"]))]


def result_event(doc_id: str, status: str = "done") -> ResultsEvent:
    """A results event (``status`` other than done/failed: one that breaks its contract)."""
    return ResultsEvent(version=1, document_id=doc_id, status=status,  # type: ignore[arg-type]
                        timestamps=Timestamps(ingested=events.now_iso()), text=doc_id, pages=[], regions=[],
                        error=None)


async def send(settings, topic: str, messages: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for m in messages:
            await producer.send_and_wait(topic, json.dumps(m).encode(), key=m["id"].encode(), partition=0)
    finally:
        await producer.stop()


async def committed(settings, group: str, topic: str) -> int | None:
    """The group's committed offset of partition 0 (aiokafka's admin offset listing fails on tansu)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


async def run_until(runner: StageRunner, condition, timeout_s: float = 60) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        for _ in range(int(timeout_s * 10)):
            if condition() or task.done():
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_retries_dead_letters_and_commits(stack_settings):
    settings = stack_settings.model_copy(update={"consumer_group_prefix": f"t{uuid.uuid4().hex[:6]}"})
    topic = f"test.flaky.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    tag = uuid.uuid4().hex[:8]
    msgs = [{"id": f"{tag}-ok0", "mode": "ok"},
            {"id": f"{tag}-tr1", "mode": "transient", "fails": 2},
            {"id": f"{tag}-bad2", "mode": "bad"},
            {"id": f"{tag}-ok3", "mode": "ok"},
            {"id": f"{tag}-out4", "mode": "unproducible"}]
    await send(settings, topic, msgs)
    stage = FlakyStage(settings, topic)
    runner = StageRunner(stage, settings)
    await run_until(runner, lambda: stage.attempts[f"{tag}-tr1"] >= 3 and stage.attempts[f"{tag}-out4"] >= 1)

    assert stage.attempts[f"{tag}-tr1"] == 3  # two transient failures, then success
    assert await committed(settings, f"{settings.consumer_group_prefix}-flaky", topic) == 5
    results = Counter(events.decode(events.RESULTS, r.value).document_id
                      for r in await read_topic(settings, events.RESULTS))
    assert [results[f"{tag}-{s}"] for s in ("ok0", "tr1", "bad2", "ok3")] == [1, 1, 0, 1]
    dead = [events.decode(events.DLQ, r.value) for r in await read_topic(settings, events.DLQ)]
    mine = [d for d in dead if d.document_id == f"{tag}-bad2"]
    assert len(mine) == 1
    assert (mine[0].stage, mine[0].error.type) == ("flaky", "BadInputError")
    assert mine[0].source == Source(topic=topic, partition=0, offset=2)
    assert mine[0].original == msgs[2]
    unproducible = [d for d in dead if d.document_id == f"{tag}-out4"]
    assert [d.error.type for d in unproducible] == ["InvalidEventError"]


async def test_stop_during_retries_commits_nothing(stack_settings):
    settings = stack_settings.model_copy(update={"consumer_group_prefix": f"t{uuid.uuid4().hex[:6]}"})
    topic = f"test.flaky.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [topic])
    msg_id = f"{uuid.uuid4().hex[:8]}-down"
    await send(settings, topic, [{"id": msg_id, "mode": "transient", "fails": 10**6}])
    stage = FlakyStage(settings, topic)
    await run_until(StageRunner(stage, settings), lambda: stage.attempts[msg_id] >= 3)

    assert stage.attempts[msg_id] >= 3
    assert await committed(settings, f"{settings.consumer_group_prefix}-flaky", topic) is None
    # Redelivered to the next process once the fault is gone: nothing was lost.
    stage2 = FlakyStage(settings, topic)
    stage2.attempts[msg_id] = 10**6  # the fault has cleared
    await run_until(StageRunner(stage2, settings), lambda: stage2.attempts[msg_id] > 10**6)
    assert await committed(settings, f"{settings.consumer_group_prefix}-flaky", topic) == 1


class HardStage(FlakyStage):
    """FlakyStage plus: ``hang`` never returns (until cancelled), ``spin`` blocks its loop with
    CPU work for ``s`` seconds, ``batchbomb`` makes the whole batch raise."""

    async def handle(self, record):
        msg = json.loads(record.value)
        if msg["mode"] == "hang":
            self.attempts[msg["id"]] += 1
            await asyncio.Event().wait()
        if msg["mode"] == "spin":
            self.attempts[msg["id"]] += 1
            time.sleep(msg["s"])  # deliberately blocks the handler loop
            return []
        return await super().handle(record)

    async def handle_batch(self, records):
        if len(records) > 1 and any(json.loads(r.value)["mode"] == "batchbomb" for r in records):
            raise RuntimeError("the recogniser failed on this batch")
        if len(records) == 1 and json.loads(records[0].value)["mode"] == "batchbomb":
            raise RuntimeError("the recogniser failed on this document")
        return await super().handle_batch(records)


class LingeringStage(HardStage):
    """HardStage that lingers 500 ms for more records once a poll returned some (one batch)."""

    @property
    def linger_ms(self) -> int:
        return 500


def fresh(stack_settings, **update):
    settings = stack_settings.model_copy(update={"consumer_group_prefix": f"t{uuid.uuid4().hex[:6]}", **update})
    return settings, f"test.hard.{uuid.uuid4().hex[:8]}"


async def dead_letters(settings, ids: set[str]) -> dict[str, DeadLetterEvent]:
    return {d.document_id: d for d in (events.decode(events.DLQ, r.value)
                                       for r in await read_topic(settings, events.DLQ))
            if d.document_id in ids}


async def test_transient_retries_are_capped_then_dead_lettered(stack_settings):
    settings, topic = fresh(stack_settings, retry_max_attempts=3, retry_initial_s=0.05, retry_max_s=0.1)
    await ensure_topics(settings, [topic])
    tag = uuid.uuid4().hex[:8]
    await send(settings, topic, [{"id": f"{tag}-down", "mode": "transient", "fails": 10**6},
                                 {"id": f"{tag}-ok", "mode": "ok"}])
    stage = HardStage(settings, topic)
    await run_until(stage_runner := StageRunner(stage, settings),
                    lambda: stage.attempts[f"{tag}-ok"] >= 1 and stage.attempts[f"{tag}-down"] >= 3)
    assert stage.attempts[f"{tag}-down"] == 3
    dead = await dead_letters(settings, {f"{tag}-down"})
    assert dead[f"{tag}-down"].error.type == "RetriesExhaustedError"
    assert "ConnectionError" in dead[f"{tag}-down"].error.message
    assert await committed(settings, stage_runner.group, topic) == 2


async def test_a_hanging_record_times_out_and_is_dead_lettered_after_max_attempts(stack_settings):
    settings, topic = fresh(stack_settings, record_timeout_s=0.5, max_delivery_attempts=2)
    await ensure_topics(settings, [topic])
    tag = uuid.uuid4().hex[:8]
    msgs = [{"id": f"{tag}-ok0", "mode": "ok"}, {"id": f"{tag}-hang", "mode": "hang"},
            {"id": f"{tag}-ok2", "mode": "ok"}]
    await send(settings, topic, msgs)
    stage = HardStage(settings, topic)
    runner = StageRunner(stage, settings)
    await run_until(runner, lambda: stage.attempts[f"{tag}-ok2"] >= 1, timeout_s=90)
    assert stage.attempts[f"{tag}-hang"] == 2  # in the batch, then alone: 2 attempts, the maximum
    dead = await dead_letters(settings, {f"{tag}-hang"})
    assert dead[f"{tag}-hang"].error.type == "HandlerTimeoutError"
    results = Counter(events.decode(events.RESULTS, r.value).document_id
                      for r in await read_topic(settings, events.RESULTS))
    assert results[f"{tag}-ok0"] >= 1 and results[f"{tag}-ok2"] == 1


@pytest.mark.parametrize("released", [True, False], ids=["stopped", "sigkilled"])
async def test_a_record_that_kills_the_process_is_isolated(stack_settings, released):
    """Each "crash" is a runner stopped while the record is in hand (nothing committed): a stop
    that releases its partitions in the delivery-attempt ledger, or one that does not, as a
    SIGKILL leaves it; the ledger in S3 survives the runner."""
    settings, topic = fresh(stack_settings, max_delivery_attempts=2, shutdown_grace_s=0.2)
    await ensure_topics(settings, [topic])
    tag = uuid.uuid4().hex[:8]
    await send(settings, topic, [{"id": f"{tag}-ok0", "mode": "ok"}, {"id": f"{tag}-kill", "mode": "hang"},
                                 {"id": f"{tag}-ok2", "mode": "ok"}])
    for _crash in range(1, 3):  # two processes die on it
        stage = HardStage(settings, topic)
        dying = StageRunner(stage, settings)
        if not released:
            dying.attempts.release = lambda partitions: asyncio.sleep(0)  # type: ignore[method-assign]
        await run_until(dying, lambda: stage.attempts[f"{tag}-kill"] >= 1)
        assert stage.attempts[f"{tag}-kill"] == 1
    stage = HardStage(settings, topic)  # the third process dead-letters it without handling it
    runner = StageRunner(stage, settings)
    await run_until(runner, lambda: stage.attempts[f"{tag}-ok2"] >= 1)
    assert stage.attempts[f"{tag}-kill"] == 0
    dead = await dead_letters(settings, {f"{tag}-kill"})
    assert dead[f"{tag}-kill"].error.type == "PoisonMessageError"
    assert await committed(settings, runner.group, topic) == 3


async def test_a_failing_batch_is_split_until_the_bad_record_is_alone(stack_settings):
    settings, topic = fresh(stack_settings)
    await ensure_topics(settings, [topic])
    tag = uuid.uuid4().hex[:8]
    msgs = [{"id": f"{tag}-ok{i}", "mode": "ok"} for i in range(5)]
    msgs.insert(3, {"id": f"{tag}-bomb", "mode": "batchbomb"})
    await send(settings, topic, msgs)
    stage = LingeringStage(settings, topic)  # polls them together
    runner = StageRunner(stage, settings)
    await run_until(runner, lambda: sum(stage.attempts[f"{tag}-ok{i}"] for i in range(5)) >= 5)
    dead = await dead_letters(settings, {m["id"] for m in msgs})
    assert set(dead) == {f"{tag}-bomb"}
    assert dead[f"{tag}-bomb"].error.type == "InternalError"
    assert "RuntimeError" in dead[f"{tag}-bomb"].error.message
    assert all(stage.attempts[f"{tag}-ok{i}"] == 1 for i in range(5))


async def test_cpu_work_in_a_handler_never_blocks_the_kafka_loop(stack_settings):
    settings, topic = fresh(stack_settings)
    await ensure_topics(settings, [topic])
    tag = uuid.uuid4().hex[:8]
    await send(settings, topic, [{"id": f"{tag}-spin", "mode": "spin", "s": 3}])
    stage = HardStage(settings, topic)
    lags = []
    original = metrics.LOOP_LAG.labels(stage.name).set
    try:
        metrics.LOOP_LAG.labels(stage.name).set = lambda v: (lags.append(v), original(v))
        await run_until(StageRunner(stage, settings), lambda: stage.attempts[f"{tag}-spin"] >= 1 and len(lags) > 8)
    finally:
        del metrics.LOOP_LAG.labels(stage.name).set
    assert stage.attempts[f"{tag}-spin"] == 1
    assert max(lags) < 1.0, lags  # the 3 s of blocking happened on the handler's loop, not this one


async def test_a_configuration_error_in_setup_stops_before_consuming(stack_settings):
    settings, topic = fresh(stack_settings)

    class Misconfigured(FlakyStage):
        async def setup(self):
            raise ConfigurationError("OCRSTREAM_SOMETHING names a missing directory")

    with pytest.raises(ConfigurationError, match="missing directory"):
        await asyncio.wait_for(StageRunner(Misconfigured(settings, topic), settings).run(asyncio.Event()), 60)


def test_a_dead_letter_carries_its_input_only_up_to_the_bound():
    from aiokafka import ConsumerRecord

    from ocrstream.streaming.stage import MAX_ORIGINAL_BYTES, dead_letter_record

    def record(value: bytes) -> ConsumerRecord:
        return ConsumerRecord("ocr.ingested.v1", 0, 7, 0, 0, b"doc-1", value, None, len(b"doc-1"), len(value), ())

    small = json.dumps({"document_id": "doc-1"}).encode()
    big = json.dumps({"document_id": "doc-1", "pad": "x" * MAX_ORIGINAL_BYTES}).encode()
    kept = dead_letter_record("preprocess", record(small), BadInputError("bad")).event
    dropped = dead_letter_record("preprocess", record(big), BadInputError("bad")).event
    assert kept.original == {"document_id": "doc-1"}
    assert dropped.original is None and dropped.original_size_bytes == len(big)
    assert dropped.source == Source(topic="ocr.ingested.v1", partition=0, offset=7)  # replayable from there
    events.encode(events.DLQ, dropped)
