"""Typed errors of the pipeline and the rule that decides retry vs dead letter.

* :class:`PermanentError` (bad input, invalid event): retrying cannot help. The event goes to
  the dead-letter topic, the document gets status ``failed``, the stage goes on.
* Transient faults (a broker, S3 or database that is down or slow): retried with exponential
  backoff, without limit, and the offset is not committed until the work is durable.
* Anything else is a bug on one message: it is dead-lettered with its type name so the stage
  keeps running and the document is not lost (it can be replayed from the DLQ once fixed).
"""

from __future__ import annotations

import asyncio


class OcrStreamError(Exception):
    """Base of all ocrstream errors."""


class PermanentError(OcrStreamError):
    """An error that retrying will not fix (the document or event itself is bad)."""


class BadInputError(PermanentError):
    """The submitted document is unusable."""


class EmptyDocumentError(BadInputError):
    """The document has zero bytes."""


class DocumentTooLargeError(BadInputError):
    """The document exceeds a configured limit (bytes, pixels or pages)."""


class NotAnImageError(BadInputError):
    """The bytes are not an image format the pipeline can decode."""


class TruncatedImageError(BadInputError):
    """The image header is valid but its data ends early or is corrupt."""


class InvalidEventError(PermanentError):
    """An event is not valid JSON or does not match its topic's JSON Schema."""


class MissingObjectError(PermanentError):
    """An object key named by an event (claim check) does not exist in the bucket."""


class TransientError(OcrStreamError):
    """A fault of infrastructure that is expected to clear: retry with backoff."""


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [TransientError, ConnectionError, TimeoutError, asyncio.TimeoutError]
    try:
        import asyncpg

        types += [asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                  asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError]
    except ImportError:  # pragma: no cover - asyncpg is a dependency
        pass
    try:
        from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError

        types += [KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError]
    except ImportError:  # pragma: no cover
        pass
    try:
        import urllib3.exceptions
        from minio.error import ServerError

        types += [urllib3.exceptions.HTTPError, ServerError]
    except ImportError:  # pragma: no cover
        pass
    return tuple(types)


TRANSIENT_TYPES = _transient_types()


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is an infrastructure fault worth retrying (not a bad message)."""
    if isinstance(exc, PermanentError):
        return False
    return isinstance(exc, TRANSIENT_TYPES) or (isinstance(exc, OSError) and exc.errno is not None)
