"""Event loops in threads: where a stage's own code runs, away from the Kafka loop.

The stage runtime (:mod:`ocrstream.streaming.stage`) keeps its main event loop for Kafka only: polls,
heartbeats (aiokafka's coordinator task), produce, commit, signals. Every stage's own code
(``setup``, ``handle_batch``, ``published``, ``teardown``) runs on a :class:`LoopThread`, and so
does every background server (ingest's HTTP door, the query API), each on its own. A handler
that blocks its loop with CPU work therefore cannot starve heartbeats or stall polling; it can
only delay its own batch, which the runtime bounds with a timeout.

:class:`LoopLagMonitor` measures how late the main loop wakes up (the "runtime enforces it"
part): ``ocrstream_event_loop_lag_seconds`` and a warning above one second.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class LoopThread:
    """An asyncio event loop running forever in a daemon thread named ``name``."""

    def __init__(self, name: str):
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> "LoopThread":
        self._thread.start()
        return self

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on this thread's loop and await its result from the caller's loop.

        Cancelling the caller (e.g. ``asyncio.wait_for`` timing out) cancels the task on this
        loop too (``run_coroutine_threadsafe`` chains cancellation).
        """
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def idle_within(self, timeout_s: float) -> bool:
        """True when this loop runs a trivial callback within ``timeout_s`` (it is not wedged)."""
        done = threading.Event()
        self.loop.call_soon_threadsafe(done.set)
        return done.wait(timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and join the thread (a wedged loop is abandoned after ``timeout_s``)."""
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.loop.close()


async def serve_in_thread(name: str, serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]],
                          stop: asyncio.Event) -> None:
    """Run ``serve(thread_stop)`` on a new :class:`LoopThread` until ``stop`` (caller's loop) is set.

    ``serve`` gets an ``asyncio.Event`` of its own loop, set when ``stop`` is. Exceptions of
    ``serve`` propagate to the caller.
    """
    thread = LoopThread(name).start()
    thread_stop = asyncio.Event()  # bound lazily to the thread's loop on first wait
    try:
        task = asyncio.ensure_future(thread.call(serve(thread_stop)))
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        thread.loop.call_soon_threadsafe(thread_stop.set)
        stopper.cancel()
        await task
    finally:
        thread.stop()


#: seconds one client (a Kafka consumer or producer, a database pool) may take to close at shutdown
CLIENT_CLOSE_S = 2.5


async def close_within(close: Awaitable[Any], what: str, timeout_s: float = CLIENT_CLOSE_S) -> None:
    """Await ``close`` (a client's stop or close) for at most ``timeout_s`` seconds; best effort:
    a dependency that is frozen makes it time out, one that is gone makes aiokafka cancel its own
    tasks (a CancelledError out of ``stop()``); both are logged as ``what``, never raised, so a
    graceful stop stays graceful. Re-raises CancelledError only when the calling task itself is
    being cancelled."""
    try:
        await asyncio.wait_for(close, timeout_s)
    except asyncio.CancelledError:
        if (task := asyncio.current_task()) is not None and task.cancelling():
            raise  # this task itself is being cancelled
        log.info("closing %s: its own tasks were cancelled (dependency gone)", what)
    except Exception as exc:  # noqa: BLE001 - best effort at shutdown
        log.info("closing %s: %s: %s", what, type(exc).__name__, exc)


class LoopLagMonitor:
    """Measures the lateness of the loop it runs on: sleeps ``interval_s`` and records the excess.

    ``on_lag(seconds)`` receives every measurement (e.g. a Prometheus gauge); lateness above
    ``warn_s`` is logged, naming the loop.
    """

    def __init__(self, name: str, on_lag: Callable[[float], None], interval_s: float = 0.5,
                 warn_s: float = 1.0):
        self.name, self.on_lag, self.interval_s, self.warn_s = name, on_lag, interval_s, warn_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, time.monotonic() - started - self.interval_s)
            self.on_lag(lag)
            if lag > self.warn_s:
                log.warning("%s: event loop was blocked for %.2f s (CPU work on the loop?)", self.name, lag)
