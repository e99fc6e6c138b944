"""ingest: originals into the bucket, ``ocr.ingested.v1`` out (claim check).

Three doors, one path (:class:`~ocrstream.streaming.ingestor.Ingestor`, ocrstream/streaming/ingestor.py):

* ``ocrstream submit PATH...`` (files or folders) - :class:`~ocrstream.streaming.ingestor.Submitter`, in the caller's process;
* ``POST /v1/documents`` (FastAPI, multipart field ``file``; services/ingest/http.py) - served by
  ``ocrstream run ingest``;
* the raw topic ``ocr.raw.v1`` - messages whose value is the document's bytes (key: optional
  document id; headers ``filename``, ``template`` and ``callback_url``), consumed by ``ocrstream run ingest``;
* the bucket door - S3 event notifications of objects dropped under the inbox prefix
  (services/ingest/bucket.py), also consumed by ``ocrstream run ingest``.

A document may name a fixed-layout template (``--template``, form field or header ``template``).

The CLI and HTTP doors refuse what cannot be processed before anything is stored (empty: 400,
over ``OCRSTREAM_MAX_DOCUMENT_BYTES``: 413, checked on ``Content-Length`` and while streaming,
before the body is read; an unsupported type by its magic bytes: 415): the caller is told, no
dead letter is written. The raw topic has no caller to answer, so its rejections become dead
letters and ``failed`` rows. File names are sanitised (:func:`~ocrstream.streaming.names.sanitize_filename`).
The HTTP door needs an API key with the ``ingest`` scope (:mod:`ocrstream.streaming.auth`).

Raw-topic document ids are scoped (:func:`raw_document_id`): a producer's key never becomes a
document id as such, so no producer can overwrite another's document; the key is kept as the
document's ``external_id``. A record without a (valid) key takes its id from its position; a
dead-letter replay re-sends it with the original position in the ``ocrstream-replay-of`` header
so it resolves to the same document, and that header is trusted only when the replayer left its
mark in the bucket (:func:`replay_mark_key`, written before the record is sent): a producer that
forges the header keeps its own position, never merging its submission into another's.

The original is stored under a content-addressed key ``originals/<sha256[:2]>/<sha256>`` (so a
re-submission of the same bytes stores nothing new) and the event carries only that key.
Empty and oversized documents are rejected here with a typed error and a dead letter; whether
the bytes are an image is the preprocess stage's call.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import TYPE_CHECKING

from aiokafka import ConsumerRecord

from ocrstream.contracts import events
from ocrstream.errors import InvalidSubmissionError
from ocrstream.settings import Settings
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming.ingestor import Ingestor, Submitter, content_sha256
from ocrstream.streaming.names import sanitize_filename
from ocrstream.streaming.stage import Output, Stage

if TYPE_CHECKING:  # the HTTP door, the bucket door and asyncpg load only where used (issue 15:

    from ocrstream.streaming.auth import Authenticator

log = logging.getLogger(__name__)


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


#: Raw-topic header naming the document's completion webhook (as the HTTP door's form field
#: ``callback_url``); checked like it (:func:`ocrstream.streaming.webhooks.check_callback_url`).
CALLBACK_HEADER = "callback_url"


async def callback_header(value: bytes | None, settings: Settings) -> str | None:
    """The completion webhook a raw-topic ``callback_url`` header names (None when absent or empty).

    Raises InvalidSubmissionError (the record is dead-lettered, its document ``failed``) for a
    value that is not UTF-8 or that :func:`~ocrstream.streaming.webhooks.check_callback_url`
    refuses: not http(s), too long, credentials, an internal target not allow-listed, webhooks off.
    """
    if not value:
        return None
    from ocrstream.streaming.webhooks import check_callback_url  # httpx & co. only where used

    try:
        url = value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidSubmissionError(f"raw-topic header {CALLBACK_HEADER} ({len(value)} bytes) is not UTF-8") from None
    return await check_callback_url(url, settings)


#: Header a dead-letter replay puts on a re-sent raw record: the original's position, so a record
#: without a (valid) key keeps its document id. Trusted only with the replayer's mark
#: (:func:`replay_mark_key`); the id also hashes the content, so even a trusted header cannot
#: reach another document's id with other bytes.
REPLAY_OF_HEADER = "ocrstream-replay-of"
#: Longest replay header value, characters (a position is ``topic:partition:offset:timestamp``).
MAX_REPLAY_OF_CHARS = 200


def record_position(record: ConsumerRecord) -> str:
    """``topic:partition:offset:timestamp`` of a raw record: what a keyless record's id derives from."""
    return f"{record.topic}:{record.partition}:{record.offset}:{record.timestamp}"


def replay_of(record: ConsumerRecord) -> str | None:
    """The position a record's ``ocrstream-replay-of`` header claims (None without one); not yet
    trusted: see :func:`replay_mark_key`."""
    value = dict(record.headers or ()).get(REPLAY_OF_HEADER)
    if not isinstance(value, bytes) or not value:
        return None
    return value.decode("utf-8", "replace")[:MAX_REPLAY_OF_CHARS]


def position_document_id(position: str, sha: str) -> str:
    """The id of raw bytes with SHA-256 ``sha`` first sent at ``position`` without a (valid) key."""
    return _scoped_id(f"record:{position}", sha)


def replay_mark_key(document_id: str) -> str:
    """Object key of the mark ``ocrstream dlq replay`` writes before re-sending the raw record of
    ``document_id``: ingest trusts a replay header only when the id it yields has this mark
    (producers of the raw topic cannot write into the bucket)."""
    return f"_runtime/replays/{document_id}"


def raw_document_id(record: ConsumerRecord, sha: str, *, use_key: bool = True,
                    trusted_replay_of: str | None = None) -> tuple[str, str | None]:
    """``(document_id, external_id)`` of a raw-topic message holding bytes with SHA-256 ``sha``.

    The id is ``raw-`` + 32 hex digits of SHA-256 over the producer's key (or, without a key,
    the record's topic, partition, offset and timestamp, or ``trusted_replay_of``: the original
    position of a verified replay) and the content hash: a redelivered message maps to the same
    document, a producer reusing another's key with other bytes gets a new one, and offsets
    repeated after a broker reset do not collide. The key, if any, is returned as
    ``external_id``. Raises InvalidSubmissionError for a key that is not UTF-8 text of at most
    256 bytes without control characters (the id is then derived without it).
    """
    where = trusted_replay_of or record_position(record)
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
    return position_document_id(where, sha), None


def raw_key_document_id(key: str, sha: str) -> str:
    """The document id of raw-topic bytes with SHA-256 ``sha`` sent under ``key`` (a producer
    can compute it to find its result: ``raw-`` + 32 hex of SHA-256 of ``key:<key>|<sha>``)."""
    return _scoped_id(f"key:{key}", sha)


def _scoped_id(material: str, sha: str) -> str:
    return "raw-" + hashlib.sha256(f"{material}|{sha}".encode()).hexdigest()[:32]


class IngestStage(Stage):
    """Consumes ``ocr.raw.v1`` (document bytes) and the bucket notifications topic (objects
    dropped into the inbox, services/ingest/bucket.py), and serves the HTTP API beside them."""

    name = "ingest"
    input_topics: tuple[str, ...] = (events.RAW,)

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
        return [self._serve_http, self._sweep_idempotency] if self.settings.http_port else []

    async def _sweep_idempotency(self, stop: asyncio.Event) -> None:
        """Every ``idempotency_sweep_interval_s`` (the first time at once), delete the HTTP door's
        Idempotency-Key records older than ``idempotency_ttl_s`` (services/ingest/idempotency.py).
        A round that fails (the object store away) is logged and tried again next time."""
        from services.ingest.idempotency import IdempotencyKeys

        store = ObjectStore(self.settings)
        keys = IdempotencyKeys(store, self.settings.idempotency_ttl_s)
        while not stop.is_set():
            try:
                if swept := await keys.sweep(store):
                    log.info("%s: swept %d Idempotency-Key records older than %g s", self.name, swept,
                             self.settings.idempotency_ttl_s)
            except Exception as exc:  # noqa: BLE001 - the next round tries again
                log.warning("%s: Idempotency-Key sweep failed: %s: %s", self.name, type(exc).__name__, exc)
            try:
                await asyncio.wait_for(stop.wait(), self.settings.idempotency_sweep_interval_s)
            except TimeoutError:
                pass

    async def setup_check(self) -> Authenticator:
        """The HTTP door's authenticator; raises ConfigurationError (e.g. public port, no keys)."""
        from ocrstream.streaming.auth import Authenticator

        return Authenticator(self.settings, self.settings.http_host)

    async def _serve_http(self, stop: asyncio.Event) -> None:
        """The HTTP door (services/ingest/http.py) until ``stop``."""
        from ocrstream.streaming.http import serve_until
        from ocrstream.streaming.results import ResultWaiters
        from services.ingest.http import create_app

        auth = await self.setup_check()
        async with Submitter(self.settings) as submitter, ResultWaiters(self.settings) as results:
            await serve_until(create_app(submitter, auth, results), self.settings.http_host, self.settings.http_port,
                              stop, self.name, header_timeout_s=self.settings.http_header_timeout_s,
                              body_timeout_s=self.settings.http_body_timeout_s)

    def ignores(self, record: ConsumerRecord) -> bool:
        """Bucket notifications with nothing to ingest (:meth:`BucketDoor.ignores`)."""
        return self.bucket is not None and record.topic == self.bucket.topic and self.bucket.ignores(record)

    async def trusted_replay_of(self, record: ConsumerRecord, sha: str) -> str | None:
        """The original position a replayed raw record names, if ``ocrstream dlq replay`` sent it
        (its mark exists in the bucket); None otherwise (a forged header is logged and ignored)."""
        claimed = replay_of(record)
        if claimed is None:
            return None
        if await self.ingestor.store.exists(replay_mark_key(position_document_id(claimed, sha))):
            return claimed
        log.warning("ingest: %s@%d/%d carries a %s header without the replayer's mark: ignored",
                    record.topic, record.partition, record.offset, REPLAY_OF_HEADER)
        return None

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        if self.bucket is not None and record.topic == self.bucket.topic:
            return await self.bucket.handle(record)
        headers = {k: v for k, v in (record.headers or ()) if isinstance(v, bytes)}
        filename = sanitize_filename(headers.get("filename", b"").decode("utf-8", "replace"))
        data = record.value or b""
        sha = await asyncio.to_thread(content_sha256, data)
        trusted = await self.trusted_replay_of(record, sha)
        document_id = raw_document_id(record, sha, use_key=False, trusted_replay_of=trusted)[0]
        try:  # every failure is reported under the scoped id, never under the producer's key
            document_id, external_id = raw_document_id(record, sha, trusted_replay_of=trusted)
            template = template_header(headers.get("template"))
            callback = await callback_header(headers.get(CALLBACK_HEADER), self.settings)
            output = await self.ingestor.ingest(data, document_id=document_id, filename=filename,
                                                source="kafka", template=template, sha=sha,
                                                external_id=external_id, callback_url=callback)
        except Exception as exc:
            setattr(exc, "document_id", document_id)  # noqa: B010 - read back by dead_letter (getattr)
            # what is known of the document, for its failed row (the raw bytes are no event)
            setattr(exc, "document_ref", {"source": "kafka", "filename": filename,  # noqa: B010 - read back by dead_letter
                                          "content_sha256": sha, "size_bytes": len(data)})
            raise
        return [] if isinstance(output, str) else [output]
