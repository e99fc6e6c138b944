"""Consumer lag on the real embedded broker: the external view (committed offsets vs the fetch
high-water mark) of a group that is not running, and a stage's own lag series dropping the
partitions a rebalance revoked."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from ocrstream.contracts.stages import STAGE_INPUTS
from ocrstream.devstack import create_topics
from ocrstream.streaming import lag, metrics

pytestmark = pytest.mark.slow


async def produce_batched(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    """``counts[p]`` messages into partition ``p``, sent as one batch (the case where tansu's
    ListOffsets answers wrongly)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=50)
    await producer.start()
    try:
        futures = [await producer.send(topic, b"x" * 100, partition=p) for p, n in counts.items() for _ in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def commit_and_leave(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit ``offsets`` for ``group`` and stop: afterwards nothing of the group runs."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def sample(name: str, **labels) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_external_lag_of_a_group_that_is_not_running(stack_settings, stack_env):
    bootstrap = stack_settings.kafka_bootstrap
    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"lag-group-{uuid.uuid4().hex[:6]}"
    await create_topics(bootstrap, [topic], partitions=3)
    await produce_batched(bootstrap, topic, {0: 7, 1: 4, 2: 0})
    await commit_and_leave(bootstrap, group, {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 4})

    async with lag.LagReader(stack_settings) as reader:
        rows = {r.partition: r for r in await reader.read(group, (topic,))}
        assert {p: (r.committed, r.highwater, r.lag) for p, r in rows.items()} == {
            0: (2, 7, 5), 1: (4, 4, 0), 2: (0, 0, 0)}
        await produce_batched(bootstrap, topic, {2: 3})  # more arrive: the next refresh sees them
        rows = {r.partition: r for r in await reader.read(group, (topic,))}
        assert (rows[2].highwater, rows[2].lag) == (3, 3)

        exporter = lag.LagExporter(stack_settings, stages={"teststage": (topic,)})
        exporter.group = lambda stage: group
        await exporter.refresh(reader)
    assert sample("ocrstream_group_lag", stage="teststage", group=group, topic=topic, partition="0") == 5
    assert sample("ocrstream_group_committed_offset", stage="teststage", group=group, topic=topic, partition="1") == 4
    assert sample("ocrstream_topic_high_watermark", topic=topic, partition="2") == 3


async def test_lag_exporter_command_prints_every_stage_group(stack_env, stack_settings):
    from ocrstream.streaming.stage import ensure_topics

    await ensure_topics(stack_settings)
    env = {**stack_env, "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"cli-{uuid.uuid4().hex[:6]}"}
    out = subprocess.run([sys.executable, "-m", "ocrstream.cli", "lag-exporter", "--once"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for stage, topics in STAGE_INPUTS.items():
        for topic in topics:
            assert f"{env['OCRSTREAM_CONSUMER_GROUP_PREFIX']}-{stage}  {topic}[0]" in out.stdout, out.stdout


def test_stage_inputs_match_the_stages():
    from ocrstream.cli.processes import _stage
    from ocrstream.settings import get_settings

    for name, topics in lag.stage_inputs(get_settings()).items():
        assert _stage(name).input_topics == topics


async def test_stage_lag_drops_partitions_revoked_by_a_rebalance(stack_settings):
    bootstrap = stack_settings.kafka_bootstrap
    topic, group = f"rebal-{uuid.uuid4().hex[:8]}", f"rebal-{uuid.uuid4().hex[:6]}"
    await create_topics(bootstrap, [topic], partitions=4)
    await produce_batched(bootstrap, topic, {p: 2 for p in range(4)})

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=6000,
                                heartbeat_interval_ms=500, max_poll_records=1)

    def series() -> set[str]:
        return {s.labels["partition"] for m in metrics.CONSUMER_LAG.collect() for s in m.samples
                if s.labels["stage"] == "rebal-test" and s.labels["topic"] == topic}

    tracker = metrics.LagTracker("rebal-test")
    first, second = consumer(), consumer()
    await first.start()
    try:
        for _ in range(100):
            await first.getmany(timeout_ms=200, max_records=1)
            await tracker.refresh(first)
            if len(series()) == 4:
                break
        assert series() == {"0", "1", "2", "3"}
        await second.start()  # joins the group: half the partitions move to it
        for _ in range(150):
            await asyncio.gather(first.getmany(timeout_ms=200, max_records=1),
                                 second.getmany(timeout_ms=200, max_records=1))
            await tracker.refresh(first)
            if len(first.assignment()) == 2 and len(series()) == 2:
                break
        assert series() == {str(tp.partition) for tp in first.assignment()} and len(series()) == 2
    finally:
        await second.stop()
        await first.stop()
