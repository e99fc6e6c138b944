"""Crash-only stages (ocrstream/streaming/health.py): a dependency that fails every probe for
longer than ``dependency_exit_s`` makes :meth:`Health.run` record why and set the stop event (the
process then exits with status 3); one that answers again before the bound does not."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from ocrstream.settings import Settings
from ocrstream.streaming.health import Health

pytestmark = pytest.mark.unit

FAST = dict(_env_file=None, health_probe_interval_s=0.02, health_probe_timeout_s=0.5)


def health(outcomes, **settings) -> Health:
    """A Health for a stage that needs only S3, whose probes follow ``outcomes`` (True: answers)."""
    h = Health()
    h.configure("preprocess", Settings(**{**FAST, **settings}))
    h.needs = ("s3",)
    h.checks = {"s3": h.checks["s3"]}
    script = iter(outcomes)

    async def probe_s3() -> str:
        if next(script, True):
            return "bucket ok"
        raise ConnectionRefusedError(111, "Connect call failed")

    h._probe_s3 = probe_s3  # type: ignore[method-assign]
    return h


async def test_a_dependency_unreachable_past_the_bound_stops_the_process():
    h = health(itertools.repeat(False), dependency_exit_s=0.3)
    stop = asyncio.Event()
    await asyncio.wait_for(h.run(stop), 10)  # returns by itself: nobody set stop
    assert stop.is_set() and h.stranded and "s3 has not answered for" in h.stranded
    assert "ConnectionRefusedError" in h.stranded
    assert h.readiness()[0] is False


async def test_a_dependency_back_before_the_bound_keeps_the_process():
    # fails for about 0.1 s (5 probes), then answers: the bound (0.5 s) is never crossed
    h = health(itertools.chain([False] * 5, itertools.repeat(True)), dependency_exit_s=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(h.run(stop))
    for _ in range(200):  # until it has answered again, then past the bound
        await asyncio.sleep(0.01)
        if h.checks["s3"].ok:
            break
    assert h.checks["s3"].ok
    await asyncio.sleep(0.6)
    assert not task.done() and not stop.is_set() and h.stranded is None
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_zero_turns_it_off():
    h = health(itertools.repeat(False), dependency_exit_s=0)
    stop = asyncio.Event()
    task = asyncio.create_task(h.run(stop))
    await asyncio.sleep(0.3)
    assert not task.done() and h.stranded is None
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_client_close_is_bounded_and_never_breaks_a_graceful_stop():
    """Issue 24's SIGTERM states: the ingest door closed its Kafka clients without a bound (a frozen
    broker held the process until the backstop), and aiokafka's ``stop()`` raises CancelledError when
    the broker is gone (it cancels its own tasks), which made the graceful stop exit 1 with a traceback."""
    from ocrstream.streaming.loops import close_within

    async def frozen() -> None:
        await asyncio.Event().wait()

    async def cancels_its_own_tasks() -> None:
        raise asyncio.CancelledError

    async def fails() -> None:
        raise ConnectionError("gone")

    loop = asyncio.get_running_loop()
    started = loop.time()
    await close_within(frozen(), "a frozen client", 0.2)
    assert loop.time() - started < 1.0
    await close_within(cancels_its_own_tasks(), "a client of a gone broker")
    await close_within(fails(), "a failing client")
    closing = asyncio.create_task(close_within(frozen(), "a frozen client", 30))
    await asyncio.sleep(0.05)
    closing.cancel()  # the caller itself is cancelled: that still propagates
    with pytest.raises(asyncio.CancelledError):
        await closing
