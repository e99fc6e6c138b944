"""The ingest path every door shares: validate a document's bytes, store the original once
(content-addressed, claim check) and build its ``ocr.ingested.v1`` event (:class:`Ingestor`);
and :class:`Submitter`, which does it from the caller's process for the CLI and the HTTP door
(store, then produce and wait for the broker's ack).

The ingest stage (services/ingest/stage.py: the raw topic and the bucket door) and the HTTP door
(services/ingest/http.py) both use it; the CLI's submit path (ocrstream/client/client.py) imports only this
module, not the stage runtime's HTTP or database pieces.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ocrstream.contracts import events
from ocrstream.contracts.event_models import UNSET, DocumentRef, IngestedEvent, SourceKind, Timestamps
from ocrstream.errors import BadInputError, DocumentTooLargeError, EmptyDocumentError, NotAnImageError
from ocrstream.ocr.formats import SUPPORTED, identify, sniff
from ocrstream.settings import Settings
from ocrstream.storage.db import create_pool
from ocrstream.storage.documents import find_done
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming import costs, metrics, tracing
from ocrstream.streaming.kafka import ensure_topics, make_producer, produce
from ocrstream.streaming.loops import close_within
from ocrstream.streaming.names import clean_text, sanitize_filename
from ocrstream.streaming.stage import Output

if TYPE_CHECKING:  # asyncpg loads only where used (issue 15: the CLI's submit path needs none)
    import asyncpg

log = logging.getLogger(__name__)


def original_key(sha256: str) -> str:
    """Content-addressed object key of an original: ``originals/ab/ab12...`` (64 hex digits)."""
    return f"originals/{sha256[:2]}/{sha256}"


class Ingestor:
    """Validates a document's bytes, stores them once, and builds its ``ingested`` event.

    With ``duplicates="reuse"`` a document whose bytes (and template) were already processed
    to ``done`` is not processed again: :meth:`ingest` returns the earlier document's id instead
    of an event (looked up by content hash through the documents repository, ocrstream/storage/documents.py).
    """

    def __init__(self, settings: Settings, store: ObjectStore):
        self.settings, self.store = settings, store
        self.pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        """Ensure the bucket; connect to PostgreSQL when duplicates are reused."""
        await self.store.ensure_bucket()
        if self.settings.duplicates == "reuse":
            self.pool = await create_pool(self.settings, max_size=2)

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()

    async def find_done(self, sha256: str, template: str | None) -> str | None:
        """Id of the newest ``done`` document with these bytes and template, if reuse is on
        (the documents repository, :mod:`ocrstream.storage.documents`: the store's system of record)."""
        if self.pool is None:
            return None
        return await find_done(self.pool, sha256, template)

    def check(self, data: bytes) -> None:
        """Raise EmptyDocumentError / DocumentTooLargeError (limit ``max_document_bytes``) /
        NotAnImageError (leading bytes of no supported format: png, jpeg, tiff, bmp, gif, webp, pdf)."""
        if not data:
            raise EmptyDocumentError("document is empty (0 bytes)")
        if len(data) > self.settings.max_document_bytes:
            # the doors read at most limit + 1 bytes: the true size may be larger still
            raise DocumentTooLargeError(
                f"document is over {self.settings.max_document_bytes} bytes, the limit "
                "(OCRSTREAM_MAX_DOCUMENT_BYTES)")
        if sniff(data) is None:
            raise NotAnImageError(f"unsupported type (looks like {identify(data)}); supported: "
                                  f"{', '.join(sorted(SUPPORTED))}")

    async def ingest(self, data: bytes, *, document_id: str, filename: str | None, source: SourceKind,
                     submitted: str | None = None, template: str | None = None,
                     sha: str | None = None, external_id: str | None = None,
                     callback_url: str | None = None, api_key: str | None = None) -> Output | str:
        """Store ``data`` (if new) and return its ``ocr.ingested.v1`` event, or the id of an
        earlier ``done`` document with the same bytes when duplicates are reused.

        ``sha``: the SHA-256 (hex) of ``data`` if already known; ``callback_url``: the completion
        webhook (checked by the door, ocrstream/streaming/webhooks.py); ``api_key``: the name of the
        key the HTTP door admitted it with (the tenant of its costs). The bytes stored count as
        written for the current cost meter (:mod:`ocrstream.streaming.costs`). Raises BadInputError
        (empty, too large, unsupported type).
        """
        try:
            self.check(data)
        except BadInputError as exc:
            metrics.count_rejected(source, exc)
            raise
        digest: str = sha if sha else await asyncio.to_thread(content_sha256, data)
        if (earlier := await self.find_done(digest, template)) is not None:
            log.info("ingest: %s has the bytes of done document %s: reused", filename or document_id, earlier)
            return earlier
        key = original_key(digest)
        if not await self.store.exists(key):
            await self.store.put(key, data)
            costs.add_bytes(written=len(data))
        event = IngestedEvent(
            document_id=document_id,
            document=DocumentRef(object_key=key, content_sha256=digest, size_bytes=len(data),
                                 filename=clean_text(filename), source=source, template=template,
                                 external_id=external_id or UNSET, callback_url=callback_url or UNSET,
                                 api_key=api_key or UNSET),
            timestamps=Timestamps(submitted=submitted or events.now_iso(), ingested=events.now_iso()),
        )
        metrics.count_ingested(source, len(data))
        return Output(events.INGESTED, document_id, event)


def content_sha256(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 hex digits (run it in a thread: ~0.2 s for 64 MiB)."""
    return hashlib.sha256(data).hexdigest()


def new_document_id() -> str:
    """A fresh document id (UUID4, 32 hex digits)."""
    return uuid.uuid4().hex



@dataclass(frozen=True)
class Receipt:
    """What a submission got: its document id, and either its object key or its error."""

    document_id: str
    filename: str | None
    object_key: str | None = None
    error: BadInputError | None = None
    reused: bool = False  # document_id is an earlier document with the same bytes


class Submitter:
    """Submits documents from this process (CLI, HTTP API): store, then produce the event.

    Bad input is refused and reported in the :class:`Receipt` (the caller is told; nothing is
    stored and no dead letter is written); transient faults propagate to the caller. The
    returned receipt means the event is acknowledged by the broker (``acks=all``).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ingestor = Ingestor(settings, ObjectStore(settings))
        self.producer = make_producer(settings)

    async def __aenter__(self) -> "Submitter":
        await ensure_topics(self.settings)
        await self.ingestor.start()
        await self.producer.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the producer and the database pool at once, each within ``CLIENT_CLOSE_S``
        (:func:`~ocrstream.streaming.loops.close_within`: a broker or database that is frozen or
        gone must not hold up a graceful stop)."""
        await asyncio.gather(close_within(self.producer.stop(), "the submitter's Kafka producer"),
                             close_within(self.ingestor.close(), "the submitter's database pool"))

    async def submit(self, data: bytes, filename: str | None, source: SourceKind,
                     template: str | None = None, document_id: str | None = None,
                     sha: str | None = None, *, callback_url: str | None = None,
                     api_key: str | None = None) -> Receipt:
        """Ingest one document; returns its Receipt (``error`` set when it was rejected).

        ``template`` names a fixed-layout template (see ocrstream/ocr/templates.py);
        ``document_id``: the id to give it (default: a new one; the HTTP door derives it from
        an ``Idempotency-Key``); ``sha``: the SHA-256 (hex) of ``data`` if already known;
        ``callback_url`` a completion webhook, refused (InvalidSubmissionError in the receipt) by
        :func:`ocrstream.streaming.webhooks.check_callback_url`; ``api_key`` the name of the key
        that submitted it (HTTP door). The event carries ingest's cost (:mod:`ocrstream.streaming.costs`).
        """
        document_id = document_id or new_document_id()
        submitted = events.now_iso()
        filename = sanitize_filename(filename)
        with tracing.door(source, document_id, len(data)) as span, \
                costs.metering("ingest", len(data)) as meter:  # the document's trace starts here
            try:
                if callback_url:
                    from ocrstream.streaming.webhooks import check_callback_url

                    await check_callback_url(callback_url, self.settings)
                output = await self.ingestor.ingest(data, document_id=document_id, filename=filename,
                                                    source=source, submitted=submitted, template=template,
                                                    sha=sha, callback_url=callback_url, api_key=api_key)
            except BadInputError as exc:  # counted by the ingestor
                span.fail(exc)
                return Receipt(document_id, filename, error=exc)
            if isinstance(output, str):
                return Receipt(output, filename, reused=True)
            output = costs.stamp([output], meter.read())[0]
            await produce(self.producer, span.stamp([output]))
        metrics.observe_outputs("ingest", [output])
        assert isinstance(output.event, IngestedEvent)
        return Receipt(document_id, filename, object_key=output.event.document.object_key)
