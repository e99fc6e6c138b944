"""Unit tests: no embedded stack and no network (``./test.sh -m unit``); the real models, images and
decoder processes are fine. Shared fakes for the stage runtime are in :mod:`.fakes`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest
from aiokafka import TopicPartition

from ocrstream.settings import Settings
from ocrstream.streaming.attempts import DeliveryAttempts
from ocrstream.streaming.stage import Stage, StageRunner

from .fakes import IN_TOPIC, FakeConsumer, FakeProducer, InMemoryObjectStore

#: Delivery settings small enough that a test runs in milliseconds.
FAST = dict(retry_initial_s=0.001, retry_max_s=0.002, retry_max_attempts=3, max_delivery_attempts=3,
            record_timeout_s=5, shutdown_grace_s=0.05, poll_max_records=16)


class Harness:
    """A :class:`StageRunner` on fakes: ``consumer``, ``producer``, the ledger's ``store`` and
    ``log`` (``("send"|"ack", topic, key)`` and ``("commit", offsets)`` in the order they happened)."""

    def __init__(self, make_stage, partitions: int = 2, **overrides):
        self.settings = Settings(**{**FAST, **overrides})
        self.stage: Stage = make_stage(self.settings)
        self.log: list[tuple] = []
        self.store = InMemoryObjectStore()
        self.runner = StageRunner(self.stage, self.settings,
                                  attempts=DeliveryAttempts(self.store, "unit-group"))
        self.consumer = FakeConsumer(self.log, [TopicPartition(IN_TOPIC, p) for p in range(partitions)])
        self.producer = FakeProducer(self.log)
        self.runner.consumer, self.runner.producer = self.consumer, self.producer
        self.runner.handler.start()

    def ledger_key(self, partition: int = 0) -> str:
        return f"_runtime/attempts/unit-group/{IN_TOPIC}/{partition}.json"


@pytest.fixture
def harness() -> Iterator:
    """``harness(make_stage, **settings)`` -> a started :class:`Harness` (stopped after the test)."""
    made: list[Harness] = []

    def make(make_stage, **overrides) -> Harness:
        made.append(Harness(make_stage, **overrides))
        return made[-1]

    yield make
    for h in made:
        h.runner.handler.stop()


async def eventually(predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Return once ``predicate()`` is truthy (checked every millisecond); AssertionError after
    ``timeout_s`` seconds (a bound, not a speed check: the suite's per-test timeout is longer)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not true within {timeout_s} s"
        await asyncio.sleep(0.001)
