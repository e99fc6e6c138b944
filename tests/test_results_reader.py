"""Reading ``ocr.results.v1`` without a consumer group, on the real embedded broker (tansu)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaProducer

from ocrstream.contracts import events
from ocrstream.contracts.event_models import ErrorInfo, ResultsEvent, Timestamps
from ocrstream.streaming.results import ResultsReader, ResultsTimeoutError, ResultWaiters
from ocrstream.streaming.stage import ensure_topics

pytestmark = pytest.mark.slow


def failed_result(document_id: str) -> ResultsEvent:
    now = events.now_iso()
    return ResultsEvent(version=1, document_id=document_id, status="failed",
                        timestamps=Timestamps(ingested=now, failed=now, stored=now), text="", pages=[], regions=[],
                        error=ErrorInfo(stage="ingest", type="EmptyDocumentError", message="test"))


async def produce_results(settings, ids: list[str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(events.RESULTS, events.encode(events.RESULTS, failed_result(i)),
                                       key=i.encode()) for i in ids]
        await asyncio.gather(*futures)  # one batched produce: where tansu's end offsets go wrong
    finally:
        await producer.stop()


async def test_reader_starts_at_the_high_water_mark_and_sees_every_later_result(stack_settings):
    await ensure_topics(stack_settings)
    before = [f"before-{uuid.uuid4().hex[:8]}-{i}" for i in range(12)]
    after = [f"after-{uuid.uuid4().hex[:8]}-{i}" for i in range(12)]
    await produce_results(stack_settings, before)
    async with ResultsReader(stack_settings) as reader:
        await produce_results(stack_settings, after)
        got = await reader.wait_for(after, timeout_s=30)
        assert set(got) == set(after) and all(got[i].status == "failed" for i in after)
        with pytest.raises(ResultsTimeoutError) as missing:  # results from before start() are not read
            await reader.wait_for(before[:1], timeout_s=1)
        assert missing.value.missing == before[:1]
    async with ResultsReader(stack_settings, from_beginning=True) as reader:
        assert set(await reader.wait_for(before + after, timeout_s=30)) == set(before + after)


async def test_waiters_hand_each_result_to_its_caller(stack_settings):
    ids = [f"wait-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    async with ResultWaiters(stack_settings) as waiters:
        waiting = [asyncio.create_task(waiters.wait(i, 30)) for i in ids[:2]]
        await asyncio.sleep(0.2)
        await produce_results(stack_settings, ids)
        got = await asyncio.gather(*waiting)
        assert [e.document_id for e in got] == ids[:2]
        await asyncio.sleep(1)  # the third went by before anyone waited: kept in the recent results
        assert (await waiters.wait(ids[2], 0.1)).document_id == ids[2]
        assert await waiters.wait("never-submitted", 0.2) is None
