"""Typed errors of the pipeline and the rules that decide retry vs dead letter.

* :class:`PermanentError` (bad input, invalid event, a handler that keeps crashing): retrying
  cannot help. The event goes to the dead-letter topic, the document gets status ``failed``,
  the stage goes on.
* :class:`TransientError` and the client libraries' connection/timeout errors (a broker, S3 or
  database that is down or slow): retried with exponential backoff and jitter, at most
  ``Settings.retry_max_attempts`` times per record; then the record is dead-lettered with
  :class:`RetriesExhaustedError` (it can be replayed from the dead-letter topic).
* :class:`ConfigurationError`: a setting that cannot work (missing directory, no API keys on a
  public port). Raised at start-up, never while consuming: the process exits with the message.
* Anything else is a bug on one message: it is dead-lettered as :class:`InternalError` (the
  original exception type in its message) so the stage keeps running and the document is not lost.

Every dead letter carries one of the types below (:func:`as_typed`): consumers of
``ocr.dlq.v1`` and ``failed`` rows never see a library's own exception names.
"""

from __future__ import annotations


class OcrStreamError(Exception):
    """Base of all ocrstream errors."""


class ConfigurationError(OcrStreamError):
    """A setting cannot work; raised at start-up so the process exits with a clear message."""


class PermanentError(OcrStreamError):
    """An error that retrying will not fix (the document or event itself is bad)."""


class BadInputError(PermanentError):
    """The submitted document is unusable."""


class EmptyDocumentError(BadInputError):
    """The document has zero bytes."""


class DocumentTooLargeError(BadInputError):
    """The document exceeds a configured limit (bytes, pixels, pages, crop size, memory)."""


class NotAnImageError(BadInputError):
    """The bytes are not an image format the pipeline can decode."""


class TruncatedImageError(BadInputError):
    """The image header is valid but its data ends early."""


class CorruptImageError(BadInputError):
    """The data cannot be a page: undecodable, or a header that lies about its size."""


class EncryptedDocumentError(BadInputError):
    """The document is password-protected (e.g. an encrypted PDF)."""


class DecoderCrashedError(BadInputError):
    """Decoding the document killed or exhausted the isolated decoder process (memory, time)."""


class UnknownTemplateError(BadInputError):
    """A document names a fixed-layout template that does not exist."""


class NotARegularFileError(BadInputError):
    """A path names a FIFO, device or socket, not a file: reading it could block for ever."""


class InvalidSubmissionError(BadInputError):
    """A submission's metadata is unusable (e.g. a raw-topic key that is not a valid id)."""


class InvalidParameterError(PermanentError):
    """A request parameter of an HTTP API is malformed or out of range (a NUL or control character,
    an integer or a time beyond its bounds): the request is refused with 422."""


class IdempotencyKeyReusedError(BadInputError):
    """An ``Idempotency-Key`` sent again with another document (other bytes or template): 422."""


class InvalidEventError(PermanentError):
    """An event is not valid JSON or does not match its topic's schema."""


class MissingObjectError(PermanentError):
    """An object key named by an event (claim check) does not exist in the bucket."""


class HandlerTimeoutError(PermanentError):
    """Handling one record took longer than ``Settings.record_timeout_s``, every attempt."""


class PoisonMessageError(PermanentError):
    """The record crashed or hung its stage's process ``Settings.max_delivery_attempts`` times."""


class RetriesExhaustedError(PermanentError):
    """A transient fault did not clear within ``Settings.retry_max_attempts`` retries."""


class InternalError(PermanentError):
    """An unexpected exception (a bug) while handling one record; its type is in the message."""


class TransientError(OcrStreamError):
    """A fault of infrastructure that is expected to clear: retry with backoff.

    ``retry_after`` (seconds) overrides the next backoff delay when the cause knows better
    (arq's ``Retry(defer=...)``).
    """

    def __init__(self, message: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


#: Every error type a dead letter can carry (metrics are pre-initialised with these names).
DEAD_LETTER_TYPES: tuple[str, ...] = tuple(sorted(
    cls.__name__ for cls in (
        EmptyDocumentError, DocumentTooLargeError, NotAnImageError, TruncatedImageError,
        CorruptImageError, EncryptedDocumentError, DecoderCrashedError, InvalidSubmissionError,
        UnknownTemplateError,
        InvalidEventError, MissingObjectError, HandlerTimeoutError, PoisonMessageError,
        RetriesExhaustedError, InternalError)))


class RequestError(OcrStreamError):
    """A request to an HTTP API that cannot be served as asked: a 4xx answer (``status``), with
    this class's name as the error ``type`` in the body; never retried."""

    status = 400


class InvalidRequestError(RequestError):
    """A request's values are unusable (an empty or over-long correction, a bad filter): 422."""

    status = 422


class UnknownRegionError(RequestError):
    """The region asked for does not exist (or its document is gone): 404."""

    status = 404


class OriginalUnavailableError(RequestError):
    """A region's original page is not in the object store any more (or cannot be decoded): 410."""

    status = 410
