"""The stage loop's delivery rules, on the real embedded broker: retries of transient faults,
dead letters for bad messages, offsets committed only after outputs are acked, nothing
committed when stopped mid-retry."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.core import events
from services.core.errors import BadInputError
from services.core.stage import Output, Stage, StageRunner, ensure_topics
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
            return [Output(events.RESULTS, msg["id"], {"schema": events.RESULTS, "document_id": msg["id"]})]
        event = {"schema": events.RESULTS, "version": 1, "document_id": msg["id"], "status": "done",
                 "timestamps": {"ingested": events.now_iso()}, "text": msg["id"], "pages": [],
                 "regions": [], "error": None}
        return [Output(events.RESULTS, msg["id"], event)]


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
    results = Counter(events.decode(events.RESULTS, r.value)["document_id"]
                      for r in await read_topic(settings, events.RESULTS))
    assert [results[f"{tag}-{s}"] for s in ("ok0", "tr1", "bad2", "ok3")] == [1, 1, 0, 1]
    dead = [events.decode(events.DLQ, r.value) for r in await read_topic(settings, events.DLQ)]
    mine = [d for d in dead if d["document_id"] == f"{tag}-bad2"]
    assert len(mine) == 1
    assert (mine[0]["stage"], mine[0]["error"]["type"]) == ("flaky", "BadInputError")
    assert mine[0]["source"] == {"topic": topic, "partition": 0, "offset": 2}
    assert mine[0]["original"] == msgs[2]
    unproducible = [d for d in dead if d["document_id"] == f"{tag}-out4"]
    assert [d["error"]["type"] for d in unproducible] == ["InvalidEventError"]


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
