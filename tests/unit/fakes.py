"""In-memory stand-ins for what the stage runner talks to: the Kafka consumer and producer and
the object store under the delivery-attempt ledger. Only the methods the runner calls exist, so a
runner change that needs more fails here loudly instead of silently passing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from ocrstream.errors import MissingObjectError
from ocrstream.streaming.stage import Output, Result, Stage

IN_TOPIC = "ocr.ingested.v1"
OUT_TOPIC = "unit.out"


def record(offset: int, partition: int = 0, topic: str = IN_TOPIC, value: bytes = b"{}",
           headers: tuple[tuple[str, bytes], ...] = ()) -> ConsumerRecord:
    """A consumed record keyed ``doc-<offset>`` (Kafka ``headers``: none by default)."""
    key = f"doc-{offset}".encode()
    return ConsumerRecord(topic, partition, offset, 0, 0, key, value, None, len(key), len(value), headers)


@dataclass(frozen=True)
class RawOutput(Output):
    """An output whose payload is its event as JSON, without a topic schema (``unit.out`` has none)."""

    @property
    def payload(self) -> bytes:  # type: ignore[override]
        return json.dumps(self.event).encode()


class FakeConsumer:
    """AIOKafkaConsumer as the runner uses it: assignment, pause/resume, seek, getmany, commit."""

    def __init__(self, log: list[tuple], partitions: Sequence[TopicPartition]):
        self.log, self.assigned = log, set(partitions)
        self.paused: set[TopicPartition] = set()
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused.update(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused.difference_update(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        await asyncio.sleep(0.001)  # nothing new arrives while a batch is in hand
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.log.append(("commit", dict(offsets)))
        self.commits.append(dict(offsets))


class FakeProducer:
    """AIOKafkaProducer.send: one future per message, acked at once, or failed with the next of
    ``failures``, or held until :meth:`release` when ``hold`` is set."""

    def __init__(self, log: list[tuple]):
        self.log = log
        self.hold = False
        self.failures: list[BaseException] = []
        self.acked: list[tuple[str, str, dict]] = []  # (topic, key, event) in ack order
        self.headers: list[tuple[str, str, list[tuple[str, bytes]]]] = []  # (topic, key, headers) as sent
        self._held: list[tuple[asyncio.Future, tuple[str, str, dict]]] = []

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        message = (topic, (key or b"").decode(), json.loads(value))
        self.headers.append((topic, message[1], list(headers or ())))
        self.log.append(("send", topic, message[1]))
        if self.failures:
            future.set_exception(self.failures.pop(0))
        elif self.hold:
            self._held.append((future, message))
        else:
            self._ack(future, message)
        return future

    def _ack(self, future: asyncio.Future, message: tuple[str, str, dict]) -> None:
        self.log.append(("ack", message[0], message[1]))
        self.acked.append(message)
        future.set_result(None)

    def release(self) -> None:
        """Ack every held message."""
        self.hold = False
        held, self._held = self._held, []
        for future, message in held:
            self._ack(future, message)

    def dead_letters(self) -> dict[str, str]:
        """``{document key: error type}`` of the acked dead letters."""
        return {key: event["error"]["type"] for topic, key, event in self.acked if topic == "ocr.dlq.v1"}

    def outputs(self) -> list[str]:
        """Keys of the acked ``unit.out`` events."""
        return [key for topic, key, _ in self.acked if topic == OUT_TOPIC]


class InMemoryObjectStore:
    """ObjectStore.get/put over a dict (the delivery-attempt ledger's storage)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[str] = []  # the keys written, in order

    async def get(self, key: str) -> bytes:
        try:
            return self.objects[key]
        except KeyError:
            raise MissingObjectError(key) from None

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.objects[key] = data
        self.puts.append(key)


class ScriptedStage(Stage):
    """A stage whose ``handle`` follows a script per offset: each call takes the next outcome of
    ``script[offset]`` (an exception to raise, ``"hang"`` to sleep past any timeout, ``"ok"``);
    when the script runs out, the record succeeds. ``calls`` lists the offsets handled."""

    name = "unit"
    input_topics = (IN_TOPIC,)

    def __init__(self, settings, script: dict[int, list] | None = None):
        super().__init__(settings)
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.calls: list[int] = []
        self.published_batches: list[list[str]] = []

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        self.calls.append(record.offset)
        pending = self.script.get(record.offset)
        outcome = pending.pop(0) if pending else "ok"
        if isinstance(outcome, BaseException):
            raise outcome
        if outcome == "hang":
            await asyncio.sleep(60)
        return [RawOutput(OUT_TOPIC, record.key.decode(), {"offset": record.offset})]

    async def published(self, outputs: Sequence[Output]) -> None:
        self.published_batches.append([o.key for o in outputs])


class BatchStage(ScriptedStage):
    """A stage that handles a micro-batch jointly and fails as a whole when it holds a record
    in ``bad`` (like recognize batching crops across documents). ``batches`` lists each call's offsets."""

    def __init__(self, settings, bad: set[int]):
        super().__init__(settings)
        self.bad = bad
        self.batches: list[list[int]] = []

    async def handle_batch(self, records: Sequence[ConsumerRecord]) -> list[Result]:
        self.batches.append([r.offset for r in records])
        if self.bad & {r.offset for r in records}:
            raise ValueError(f"batch with a bad record among {[r.offset for r in records]}")
        return [await self.handle(r) for r in records]
