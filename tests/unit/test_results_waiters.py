"""The HTTP door's ``?wait=`` reader (:class:`ResultWaiters`) outlives a broker that is down when
it starts, and its backoff starts over after a success (issue 23: ``backoff.next_s``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from ocrstream.contracts import events
from ocrstream.settings import Settings
from ocrstream.streaming import results
from ocrstream.streaming.retry import Backoff

GOLDEN = Path(__file__).resolve().parents[1] / "golden_events" / "ocr.results.v1.failed.json"


class FlakyReader:
    """Stands in for :class:`results.ResultsReader`: ``start()`` fails while ``failures`` lasts,
    then ``poll()`` hands out the queued records once."""

    failures = 0
    queued: list = []
    started = 0

    def __init__(self, settings):
        self.settings = settings

    async def start(self):
        FlakyReader.started += 1
        if FlakyReader.failures > 0:
            FlakyReader.failures -= 1
            raise ConnectionError("broker down")
        return self

    async def poll(self, timeout_s):
        out, FlakyReader.queued = FlakyReader.queued, []
        await asyncio.sleep(0.01)
        return out

    async def stop(self):
        pass


def _record(document_id: str):
    golden = GOLDEN.read_text("utf-8").replace('"document_id":"d2"', f'"document_id":"{document_id}"')
    value = events.encode(events.RESULTS, events.decode(events.RESULTS, golden.encode()))
    return SimpleNamespace(key=document_id.encode(), value=value, topic=events.RESULTS, partition=0, offset=0)


async def test_waiters_survive_a_broker_down_at_start_and_answer_once_it_is_up(monkeypatch):
    monkeypatch.setattr(results, "ResultsReader", FlakyReader)
    FlakyReader.failures, FlakyReader.started, FlakyReader.queued = 3, 0, []
    settings = Settings(retry_initial_s=0.01, retry_max_s=0.02)
    async with results.ResultWaiters(settings) as waiters:
        FlakyReader.queued = [_record("doc-1")]
        event = await waiters.wait("doc-1", timeout_s=10)
        assert event is not None and event.document_id == "doc-1"
        assert FlakyReader.started == 4  # three refusals (one in __aenter__), then the reader that read it
        assert waiters._task is not None and not waiters._task.done()


def test_backoff_starts_over_after_reset():
    backoff = Backoff(1.0, 64.0)
    for _ in range(5):
        backoff.next_delay()
    assert backoff.attempt == 5
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() <= 1.0


def test_kept_results_are_bounded_by_age_and_bytes():
    now = [0.0]
    waiters = results.ResultWaiters(Settings(), keep_bytes=10 * len(_record("x").value), keep_s=60.0,
                                    clock=lambda: now[0])
    for i in range(5):
        waiters._keep(_record(f"old-{i}"))
    now[0] = 61.0  # past keep_s: the next record pushes the old ones out
    waiters._keep(_record("new"))
    assert list(waiters._recent) == ["new"] and set(waiters._kept_at) == {"new"}
    for i in range(30):  # within keep_s: the bytes bound holds
        waiters._keep(_record(f"burst-{i}"))
    assert 8 <= len(waiters._recent) <= 10 and waiters._recent_bytes <= waiters.keep_bytes
    assert set(waiters._kept_at) == set(waiters._recent)
