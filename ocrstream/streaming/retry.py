"""How the stage runtime treats a failure: transient (retry with backoff, arq's explicit ``Retry``
with a delay) or permanent (typed, dead-lettered, a ``failed`` row).

:func:`is_transient` decides; :func:`retry_after` is the delay a transient error asks for;
:func:`as_typed` turns any exception into one of our error types (:mod:`ocrstream.errors`). The
client libraries' error types are imported on first use, so the error hierarchy itself
(:mod:`ocrstream.errors`) imports no Kafka, S3 or SQL client.
"""

from __future__ import annotations

import asyncio
import functools
import random

from ocrstream.errors import (
    DocumentTooLargeError,
    InternalError,
    MissingObjectError,
    OcrStreamError,
    PermanentError,
    TransientError,
)


@functools.cache
def transient_types() -> tuple[type[BaseException], ...]:
    """The exception types :func:`is_transient` retries: ours, the socket errors, and the
    connection/timeout errors of asyncpg, aiokafka, urllib3 and minio (imported on first use,
    not when this module is: every command imports it through the settings, issue 15)."""
    # ConnectionError covers refused/reset sockets; a bare OSError (missing file, permission)
    # is NOT transient: it is a configuration problem or a bug and must not retry for ever.
    types: list[type[BaseException]] = [TransientError, ConnectionError, TimeoutError, asyncio.TimeoutError]
    try:
        import asyncpg

        types += [asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                  asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
                  asyncpg.exceptions.AdminShutdownError, asyncpg.exceptions.CrashShutdownError,
                  # a pooled connection left mid-protocol by a killed server: a new one fixes it
                  asyncpg.exceptions._base.InternalClientError,
                  asyncpg.exceptions.SerializationError, asyncpg.exceptions.DeadlockDetectedError]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    try:
        from aiokafka.errors import (
            KafkaConnectionError,
            KafkaTimeoutError,
            NodeNotReadyError,
            NotEnoughReplicasError,
            NotLeaderForPartitionError,
            RequestTimedOutError,
            UnknownError,
        )

        # UnknownError: what the embedded broker (tansu) answers while it recovers from a restart
        types += [KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError, RequestTimedOutError,
                  NotLeaderForPartitionError, NotEnoughReplicasError, UnknownError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import urllib3.exceptions
        from minio.error import ServerError

        types += [urllib3.exceptions.HTTPError, ServerError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is an infrastructure fault worth retrying (not a bad message)."""
    if isinstance(exc, PermanentError):
        return False
    # aiokafka marks the broker errors a client may retry (leader moves, coordinator loads...)
    return isinstance(exc, transient_types()) or getattr(exc, "retriable", False) is True


def retry_after(exc: BaseException) -> float | None:
    """The delay ``exc`` asks for before the next attempt (seconds), if any."""
    return getattr(exc, "retry_after", None)


def as_typed(exc: BaseException) -> OcrStreamError:
    """``exc`` as one of our error types (for dead letters and ``failed`` rows).

    Our own errors pass unchanged; a missing S3 key becomes :class:`MissingObjectError`; any
    other exception becomes :class:`InternalError` naming the original type, chained to it.
    """
    if isinstance(exc, OcrStreamError):
        return exc
    code = getattr(exc, "code", None)
    if code in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
        typed: OcrStreamError = MissingObjectError(str(exc))
    elif isinstance(exc, MemoryError):
        typed = DocumentTooLargeError(f"out of memory while handling the document ({exc})")
    else:
        typed = InternalError(f"{type(exc).__name__}: {exc}")
    typed.__cause__ = exc
    for attached in ("document_id", "document_ref"):  # what a handler attached (see stage.dead_letter_record)
        if hasattr(exc, attached):
            setattr(typed, attached, getattr(exc, attached))
    return typed


class Backoff:
    """Exponential backoff with jitter (after the AWS architecture blog, "Exponential Backoff
    And Jitter", 2015): attempt k waits uniform(initial_s / 2, min(max_s, initial_s * 2**k))
    seconds, or the error's own ``retry_after`` (capped at ``max_s``) when it names one."""

    def __init__(self, initial_s: float, max_s: float):
        self.initial_s, self.max_s, self.attempt = initial_s, max_s, 0

    def reset(self) -> None:
        """After a success: the next failure waits as the first one did."""
        self.attempt = 0

    def next_delay(self, exc: BaseException | None = None) -> float:
        asked = retry_after(exc) if exc is not None else None
        ceiling = min(self.max_s, self.initial_s * 2 ** self.attempt)
        self.attempt += 1
        return min(self.max_s, asked) if asked is not None else random.uniform(self.initial_s / 2, ceiling)

    async def wait(self, stop: asyncio.Event, exc: BaseException | None = None) -> bool:
        """Sleep for the next delay; False if ``stop`` was set meanwhile."""
        try:
            await asyncio.wait_for(stop.wait(), timeout=self.next_delay(exc))
            return False
        except asyncio.TimeoutError:
            return True
