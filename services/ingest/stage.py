"""ingest: originals into the bucket, ``ocr.ingested.v1`` out (claim check).

Three doors, one path (:class:`Ingestor`):

* ``ocrstream submit PATH...`` (files or folders) - :class:`Submitter`, in the caller's process;
* ``POST /v1/documents`` (FastAPI, multipart field ``file``; services/ingest/http.py) - served by
  ``ocrstream run ingest``;
* the raw topic ``ocr.raw.v1`` - messages whose value is the document's bytes (key: optional
  document id; headers ``filename`` and ``template``), consumed by ``ocrstream run ingest``;
* the bucket door - S3 event notifications of objects dropped under the inbox prefix
  (services/ingest/bucket.py), also consumed by ``ocrstream run ingest``.

A document may name a fixed-layout template (``--template``, form field or header ``template``).

The CLI and HTTP doors refuse what cannot be processed before anything is stored (empty: 400,
over ``OCRSTREAM_MAX_DOCUMENT_BYTES``: 413, checked on ``Content-Length`` and while streaming,
before the body is read; an unsupported type by its magic bytes: 415): the caller is told, no
dead letter is written. The raw topic has no caller to answer, so its rejections become dead
letters and ``failed`` rows. File names are sanitised (:func:`~services.core.names.sanitize_filename`).
The HTTP door needs an API key with the ``ingest`` scope (:mod:`services.core.auth`).

Raw-topic document ids are scoped (:func:`raw_document_id`): a producer's key never becomes a
document id as such, so no producer can overwrite another's document; the key is kept as the
document's ``external_id``.

The original is stored under a content-addressed key ``originals/<sha256[:2]>/<sha256>`` (so a
re-submission of the same bytes stores nothing new) and the event carries only that key.
Empty and oversized documents are rejected here with a typed error and a dead letter; whether
the bytes are an image is the preprocess stage's call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiokafka import ConsumerRecord

from services.core import events, metrics
from services.core.db import create_pool
from services.core.documents import find_done
from services.core.errors import BadInputError, DocumentTooLargeError, EmptyDocumentError, InvalidSubmissionError, NotAnImageError
from services.core.event_models import UNSET, DocumentRef, IngestedEvent, SourceKind, Timestamps
from services.core.formats import SUPPORTED, identify, sniff
from services.core.kafka import ensure_topics, make_producer, produce
from services.core.names import clean_text, sanitize_filename
from services.core.objectstore import ObjectStore
from services.core.settings import Settings
from services.core.stage import Output, Stage

if TYPE_CHECKING:  # the HTTP door, the bucket door and asyncpg load only where used (issue 15:
    import asyncpg  # the CLI's submit path imports this module and needs none of them)

    from services.core.auth import Authenticator

log = logging.getLogger(__name__)


def original_key(sha256: str) -> str:
    """Content-addressed object key of an original: ``originals/ab/ab12...`` (64 hex digits)."""
    return f"originals/{sha256[:2]}/{sha256}"


class Ingestor:
    """Validates a document's bytes, stores them once, and builds its ``ingested`` event.

    With ``duplicates="reuse"`` a document whose bytes (and template) were already processed
    to ``done`` is not processed again: :meth:`ingest` returns the earlier document's id instead
    of an event (looked up by content hash through the documents repository, services/core/documents.py).
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
        (the documents repository, :mod:`services.core.documents`: the store's system of record)."""
        if self.pool is None:
            return None
        return await find_done(self.pool, sha256, template)

    def check(self, data: bytes) -> None:
        """Raise EmptyDocumentError / DocumentTooLargeError (limit ``max_document_bytes``) /
        NotAnImageError (leading bytes of no supported format: png, jpeg, tiff, bmp, gif, webp, pdf)."""
        if not data:
            raise EmptyDocumentError("document is empty (0 bytes)")
        if len(data) > self.settings.max_document_bytes:
            raise DocumentTooLargeError(
                f"document is {len(data)} bytes; the limit is {self.settings.max_document_bytes} "
                "(OCRSTREAM_MAX_DOCUMENT_BYTES)")
        if sniff(data) is None:
            raise NotAnImageError(f"unsupported type (looks like {identify(data)}); supported: "
                                  f"{', '.join(sorted(SUPPORTED))}")

    async def ingest(self, data: bytes, *, document_id: str, filename: str | None, source: SourceKind,
                     submitted: str | None = None, template: str | None = None,
                     sha: str | None = None, external_id: str | None = None) -> Output | str:
        """Store ``data`` (if new) and return its ``ocr.ingested.v1`` event, or the id of an
        earlier ``done`` document with the same bytes when duplicates are reused.

        ``sha``: the SHA-256 (hex) of ``data`` if already known. Raises BadInputError (empty,
        too large, unsupported type).
        """
        try:
            self.check(data)
        except BadInputError as exc:
            metrics.count_rejected(source, exc)
            raise
        sha = sha or await asyncio.to_thread(content_sha256, data)
        if (earlier := await self.find_done(sha, template)) is not None:
            log.info("ingest: %s has the bytes of done document %s: reused", filename or document_id, earlier)
            return earlier
        key = original_key(sha)
        if not await self.store.exists(key):
            await self.store.put(key, data)
        event = IngestedEvent(
            document_id=document_id,
            document=DocumentRef(object_key=key, content_sha256=sha, size_bytes=len(data),
                                 filename=clean_text(filename), source=source, template=template,
                                 external_id=external_id or UNSET),
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


MAX_RAW_KEY_BYTES = 256
MAX_TEMPLATE_NAME_CHARS = 64


def template_header(value: bytes | None) -> str | None:
    """The template named by a raw-topic ``template`` header (None when absent or empty).

    Raises InvalidSubmissionError for a value that is not UTF-8 text of at most 64 characters
    without control characters.
    """
    if not value:
        return None
    try:
        name = value.decode("utf-8")
    except UnicodeDecodeError:
        name = None
    if name is None or len(name) > MAX_TEMPLATE_NAME_CHARS or any(ord(c) < 32 or c == "\x7f" for c in name):
        raise InvalidSubmissionError(f"raw-topic header template ({len(value)} bytes) is not a template name "
                                     f"(UTF-8 text, at most {MAX_TEMPLATE_NAME_CHARS} characters)")
    return name


#: Header a dead-letter replay puts on a re-sent keyless raw record: the original's position, so
#: it keeps its document id (the id also hashes the content, so the header cannot reach another
#: document's id with other bytes).
REPLAY_OF_HEADER = "ocrstream-replay-of"


def raw_document_id(record: ConsumerRecord, sha: str, *, use_key: bool = True) -> tuple[str, str | None]:
    """``(document_id, external_id)`` of a raw-topic message holding bytes with SHA-256 ``sha``.

    The id is ``raw-`` + 32 hex digits of SHA-256 over the producer's key (or, without a key,
    the record's topic, partition, offset and timestamp) and the content hash: a redelivered
    message maps to the same document, a producer reusing another's key with other bytes gets a
    new one, and offsets repeated after a broker reset do not collide. The key, if any, is
    returned as ``external_id``. Raises InvalidSubmissionError for a key that is not UTF-8
    text of at most 256 bytes without control characters (the id is then derived without it).
    """
    where = f"{record.topic}:{record.partition}:{record.offset}:{record.timestamp}"
    replayed = dict(record.headers or ()).get(REPLAY_OF_HEADER)
    if isinstance(replayed, bytes) and replayed:
        where = replayed.decode("utf-8", "replace")[:200]
    key = record.key if use_key else None
    if key is not None:
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is None or len(key) > MAX_RAW_KEY_BYTES or any(ord(c) < 32 or c == "\x7f" for c in text):
            raise InvalidSubmissionError(
                f"raw-topic key of {len(key)} bytes is not a valid external id (UTF-8 text, at most "
                f"{MAX_RAW_KEY_BYTES} bytes, no control characters)")
        return raw_key_document_id(text, sha), text
    return _scoped_id(f"record:{where}", sha), None


def raw_key_document_id(key: str, sha: str) -> str:
    """The document id of raw-topic bytes with SHA-256 ``sha`` sent under ``key`` (a producer
    can compute it to find its result: ``raw-`` + 32 hex of SHA-256 of ``key:<key>|<sha>``)."""
    return _scoped_id(f"key:{key}", sha)


def _scoped_id(material: str, sha: str) -> str:
    return "raw-" + hashlib.sha256(f"{material}|{sha}".encode()).hexdigest()[:32]


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

    async def __aexit__(self, *exc_info) -> None:
        await self.producer.stop()
        await self.ingestor.close()

    async def submit(self, data: bytes, filename: str | None, source: SourceKind,
                     template: str | None = None) -> Receipt:
        """Ingest one document; returns its Receipt (``error`` set when it was rejected).

        ``template`` names a fixed-layout template (see services/preprocess/templates.py).
        """
        document_id = new_document_id()
        submitted = events.now_iso()
        filename = sanitize_filename(filename)
        try:
            output = await self.ingestor.ingest(data, document_id=document_id, filename=filename,
                                                source=source, submitted=submitted, template=template)
        except BadInputError as exc:  # counted by the ingestor
            return Receipt(document_id, filename, error=exc)
        if isinstance(output, str):
            return Receipt(output, filename, reused=True)
        await produce(self.producer, [output])
        metrics.observe_outputs("ingest", [output])
        assert isinstance(output.event, IngestedEvent)
        return Receipt(document_id, filename, object_key=output.event.document.object_key)


class IngestStage(Stage):
    """Consumes ``ocr.raw.v1`` (document bytes) and the bucket notifications topic (objects
    dropped into the inbox, services/ingest/bucket.py), and serves the HTTP API beside them."""

    name = "ingest"
    input_topics = (events.RAW,)

    def __init__(self, settings: Settings):
        super().__init__(settings)
        topic = settings.bucket_notifications_topic
        self.input_topics = (events.RAW, topic) if topic else (events.RAW,)

    async def setup(self) -> None:
        from services.ingest.bucket import bucket_door

        if self.settings.http_port:
            await self.setup_check()  # fail start-up, not the first request, on a bad auth setting
        self.ingestor = Ingestor(self.settings, ObjectStore(self.settings))
        await self.ingestor.start()
        self.bucket = bucket_door(self.settings, self.ingestor.store, self.ingestor)
        if self.bucket is not None:
            await self.bucket.start()

    async def published(self, outputs) -> None:
        """Acked outputs: the bucket door records its object versions as delivered."""
        if self.bucket is not None:
            await self.bucket.published(outputs)

    async def teardown(self) -> None:
        await self.ingestor.close()

    def background(self):
        return [self._serve_http] if self.settings.http_port else []

    async def setup_check(self) -> Authenticator:
        """The HTTP door's authenticator; raises ConfigurationError (e.g. public port, no keys)."""
        from services.core.auth import Authenticator

        return Authenticator(self.settings, self.settings.http_host)

    async def _serve_http(self, stop: asyncio.Event) -> None:
        """The HTTP door (services/ingest/http.py) until ``stop``."""
        from services.core.http import serve_until
        from services.ingest.http import create_app
        from services.results import ResultWaiters

        auth = await self.setup_check()
        async with Submitter(self.settings) as submitter, ResultWaiters(self.settings) as results:
            await serve_until(create_app(submitter, auth, results), self.settings.http_host, self.settings.http_port,
                              stop, self.name)

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        if self.bucket is not None and record.topic == self.bucket.topic:
            return await self.bucket.handle(record)
        headers = {k: v for k, v in (record.headers or ()) if isinstance(v, bytes)}
        filename = sanitize_filename(headers.get("filename", b"").decode("utf-8", "replace"))
        data = record.value or b""
        sha = await asyncio.to_thread(content_sha256, data)
        document_id = raw_document_id(record, sha, use_key=False)[0]
        try:  # every failure is reported under the scoped id, never under the producer's key
            document_id, external_id = raw_document_id(record, sha)
            template = template_header(headers.get("template"))
            output = await self.ingestor.ingest(data, document_id=document_id, filename=filename,
                                                source="kafka", template=template, sha=sha,
                                                external_id=external_id)
        except Exception as exc:
            exc.document_id = document_id
            raise
        return [] if isinstance(output, str) else [output]
