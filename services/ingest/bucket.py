"""The bucket door: a file dropped into ``s3://<inbox bucket>/<inbox prefix>`` becomes a document.

The object store announces new objects on a Kafka topic (``OCRSTREAM_BUCKET_NOTIFICATIONS_TOPIC``,
default ``ocr.bucket-notifications``), which ``ocrstream run ingest`` consumes beside
``ocr.raw.v1``. Two wire formats arrive there and both become :class:`ObjectEvent`:

* **S3 event records** (JSON ``{"Records": [...]}``, the AWS S3 event message structure,
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/notification-content-structure.html):
  MinIO's Kafka notification target publishes these (deploy/docker-compose.yml); AWS S3
  publishes the same records to SNS/SQS/EventBridge, from where a bridge (e.g. a Kafka Connect
  SQS source) must copy them to the topic unchanged. ``s3.object.key`` is URL-encoded.
* **SeaweedFS filer metadata events** (protobuf ``filer_pb.EventNotification``, message key =
  the entry's full path ``/buckets/<bucket>/<key>``): what SeaweedFS's ``[notification.kafka]``
  publishes; the embedded stack (ocrstream/devstack/s3.py) configures it. Decoded with the vendored
  ``services/ingest/seaweedfs/filer.proto`` (see its README for source and version).

Rules (each outcome counted in ``ocrstream_bucket_events_total{outcome}``):

* created objects under the prefix are read (size checked before download against
  ``OCRSTREAM_MAX_DOCUMENT_BYTES``) and ingested like any other document, with source
  ``bucket`` and filename ``s3://bucket/key``;
* the document id is derived from (bucket, key, version id or else ETag):
  ``s3-`` + the first 32 hex digits of their SHA-256. The same object version delivered twice
  makes one document (a marker ``bucket-door/delivered/<id>`` in the pipeline bucket, written
  once the broker acked the document's event, skips a redelivery); overwriting the key with new
  bytes is a new ETag, hence a new document;
* deletes, directories, other buckets and keys outside the prefix are ignored;
* an object gone before it is read (``MissingObjectError``), or larger than the limit
  (``DocumentTooLargeError``), or empty, becomes a dead letter and so a ``failed`` row.

The dropped object itself is never modified or deleted: ocrstream copies its bytes to
``originals/<sha256>`` and leaves the inbox to the bucket's own lifecycle rules.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote_plus

from aiokafka import ConsumerRecord
from google.protobuf.message import DecodeError
from minio.error import S3Error
from prometheus_client import Counter

from ocrstream.contracts.event_models import Source
from ocrstream.errors import BadInputError, DocumentTooLargeError, InvalidEventError, MissingObjectError
from ocrstream.settings import Settings
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.streaming import costs
from ocrstream.streaming.stage import Output, dead_letter, ensure_topics

log = logging.getLogger(__name__)

BUCKET_EVENTS = Counter("ocrstream_bucket_events_total",
                        "Object events on the bucket notifications topic, by outcome "
                        "(ingested, duplicate, failed, ignored_delete, ignored_outside_prefix, ignored_other)",
                        ["stage", "outcome"])
MARKER_PREFIX = "bucket-door/delivered/"
MISSING_CODES = ("NoSuchKey", "NoSuchObject", "NoSuchBucket", "NoSuchVersion", "ResourceNotFound")

Kind = Literal["created", "removed", "other"]


@dataclass(frozen=True)
class ObjectEvent:
    """One object change, whatever the store that announced it.

    ``size`` in bytes (None if not announced); ``etag`` without quotes; ``version_id`` only on
    versioned buckets.
    """

    kind: Kind
    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    version_id: str | None = None

    @property
    def uri(self) -> str:
        """``s3://bucket/key``: the document's filename."""
        return f"s3://{self.bucket}/{self.key}"

    @property
    def document_id(self) -> str:
        """Deterministic id of this object version: ``s3-`` + 32 hex digits (SHA-256 of
        bucket, key and version id or ETag)."""
        identity = "\0".join((self.bucket, self.key, self.version_id or "", self.etag or ""))
        return "s3-" + hashlib.sha256(identity.encode()).hexdigest()[:32]


def parse_s3_records(value: bytes) -> list[ObjectEvent]:
    """Object events of an S3 event message (``{"Records": [...]}``, as MinIO and AWS send).

    ``eventName`` ``s3:ObjectCreated:*`` / ``ObjectCreated:*`` -> created, ``*ObjectRemoved:*``
    -> removed, anything else (including ``s3:TestEvent``) -> other. Raises InvalidEventError
    for JSON without a ``Records`` list.
    """
    try:
        message = json.loads(value)
        records = message.get("Records") if isinstance(message, dict) else None
        if records is None and isinstance(message, dict) and message.get("Event") == "s3:TestEvent":
            return []
        if not isinstance(records, list):
            raise ValueError("no Records list")
        found = []
        for record in records:
            name = str(record.get("eventName", "")).removeprefix("s3:")
            s3 = record["s3"]
            obj = s3["object"]
            kind: Kind = ("created" if name.startswith("ObjectCreated:") else
                          "removed" if name.startswith("ObjectRemoved:") else "other")
            found.append(ObjectEvent(kind, s3["bucket"]["name"], unquote_plus(obj["key"]),
                                     obj.get("size"), (obj.get("eTag") or "").strip('"') or None,
                                     obj.get("versionId") or None))
        return found
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidEventError(f"not an S3 event message: {exc}") from None


def _filer_etag(entry) -> str | None:
    """SeaweedFS's ETag of a filer entry: hex MD5 when recorded, else its chunks' ETags
    (the same inputs as ``filer.ETag`` in weed/filer/filechunks.go)."""
    if entry.attributes.md5:
        return entry.attributes.md5.hex()
    tags = [c.e_tag for c in entry.chunks]
    return ",".join(tags) if tags else hashlib.md5(entry.content).hexdigest()


def parse_filer_event(value: bytes, key: bytes | None = None, buckets_dir: str = "/buckets") -> list[ObjectEvent]:
    """Object events of a SeaweedFS ``filer_pb.EventNotification`` (protobuf bytes; ``key``,
    the message key, is the entry's full path, the only place a delete names its folder).

    New entry without old one, or an old one replaced -> created (an overwrite or rename
    target); old entry only -> removed; directories and paths outside ``buckets_dir`` -> other.
    Raises InvalidEventError when the bytes do not decode.
    """
    from services.ingest.seaweedfs import filer_pb2

    note = filer_pb2.EventNotification()
    try:
        note.ParseFromString(value)
    except DecodeError as exc:
        raise InvalidEventError(f"not a SeaweedFS filer event: {exc}") from None
    root = buckets_dir.rstrip("/") + "/"
    if note.HasField("new_entry"):
        entry, removed = note.new_entry, False
        path = f"{note.new_parent_path.rstrip('/')}/{entry.name}"
    elif note.HasField("old_entry"):
        entry, removed = note.old_entry, True
        path = key.decode("utf-8", "replace") if key else entry.name
    else:
        raise InvalidEventError("SeaweedFS filer event without old or new entry")
    if entry.is_directory or not path.startswith(root) or "/" not in path[len(root):]:
        return [ObjectEvent("other", "", path)]
    bucket, object_key = path[len(root):].split("/", 1)
    if removed:
        return [ObjectEvent("removed", bucket, object_key)]
    return [ObjectEvent("created", bucket, object_key, entry.attributes.file_size, _filer_etag(entry))]


def parse_notification(value: bytes | None, key: bytes | None = None,
                       buckets_dir: str = "/buckets") -> list[ObjectEvent]:
    """Object events of one notifications-topic message (value, key), either format (JSON starts
    with ``{``; a protobuf EventNotification starts with field 1 or 2, bytes 0x0a/0x12)."""
    if not value:
        raise InvalidEventError("empty bucket notification")
    if value.lstrip()[:1] == b"{":
        return parse_s3_records(value)
    return parse_filer_event(value, key, buckets_dir)


class BucketDoor:
    """Turns the notifications topic's object events into ``ocr.ingested.v1`` events.

    ``ingest`` is the stage's :class:`~services.ingest.stage.Ingestor` (validation, content-
    addressed original, event). Call :meth:`published` with a batch's acked outputs so that a
    redelivered notification is recognised as a duplicate.
    """

    def __init__(self, settings: Settings, store: ObjectStore, ingest):
        self.settings, self.store, self.ingest = settings, store, ingest
        self.topic = settings.bucket_notifications_topic
        self.bucket = settings.inbox_bucket or settings.s3_bucket
        self.prefix = settings.inbox_prefix
        self._pending: set[str] = set()  # handled, event not yet acked by the broker

    async def start(self) -> None:
        """Create the notifications topic if missing (the store may not create it)."""
        await ensure_topics(self.settings, [self.topic])

    async def handle(self, record: ConsumerRecord) -> list[Output]:
        """The events of one notification message; raises InvalidEventError if undecodable and
        transient S3/Kafka faults (the stage loop retries those)."""
        outputs: list[Output] = []
        before = set(self._pending)
        try:
            for event in parse_notification(record.value, record.key, self.settings.seaweedfs_buckets_dir):
                outputs += await self._one(event, record)
        except BaseException:
            self._pending = before  # the record is handled again: none of its events is pending
            raise
        return outputs

    def ignores(self, record: ConsumerRecord) -> bool:
        """True when every event of the notification is ignored (deletes, other buckets, keys
        outside the prefix: the pipeline's own crops, originals and ledger objects); counted in
        ``ocrstream_bucket_events_total``. Undecodable messages are not ignored (:meth:`handle`
        dead-letters them). Cheap (a small JSON or protobuf message), no I/O."""
        try:
            found = parse_notification(record.value, record.key, self.settings.seaweedfs_buckets_dir)
        except InvalidEventError:
            return False
        outcomes = [self._outcome(event) for event in found]
        if any(outcome is None for outcome in outcomes):
            return False
        for outcome in outcomes:
            BUCKET_EVENTS.labels("ingest", outcome).inc()
        return True

    async def published(self, outputs: Sequence[Output]) -> None:
        """Mark the object versions whose events the broker acked as delivered."""
        done = {o.key for o in outputs} & self._pending
        await asyncio.gather(*(self.store.put(MARKER_PREFIX + doc_id, b"") for doc_id in done))
        self._pending.clear()

    def _outcome(self, event: ObjectEvent) -> str | None:
        """Why ``event`` is ignored, or None when it is to be read."""
        if event.kind == "removed":
            return "ignored_delete"
        if event.kind != "created":
            return "ignored_other"
        if event.bucket != self.bucket or not event.key.startswith(self.prefix) or event.key.endswith("/"):
            return "ignored_outside_prefix"
        return None

    async def _one(self, event: ObjectEvent, record: ConsumerRecord) -> list[Output]:
        if (ignored := self._outcome(event)) is not None:
            BUCKET_EVENTS.labels("ingest", ignored).inc()
            return []
        doc_id = event.document_id
        if doc_id in self._pending or await self.store.exists(MARKER_PREFIX + doc_id):
            BUCKET_EVENTS.labels("ingest", "duplicate").inc()
            log.info("ingest: %s (%s) already delivered: skipped", event.uri, doc_id)
            return []
        try:
            data = await asyncio.to_thread(self._read, event)
            costs.add_bytes(read=len(data))  # the document's cost (ocrstream/streaming/costs.py)
            output = await self.ingest.ingest(data, document_id=doc_id, filename=event.uri, source="bucket")
        except (BadInputError, MissingObjectError) as exc:
            BUCKET_EVENTS.labels("ingest", "failed").inc()
            log.warning("ingest: %s: %s: %s", event.uri, type(exc).__name__, exc)
            self._pending.add(doc_id)
            return [dead_letter("ingest", exc, document_id=doc_id,
                                source=Source(topic=record.topic, partition=record.partition,
                                              offset=record.offset),
                                original={"document_id": doc_id, "filename": event.uri, "source": "bucket"},
                                size_bytes=event.size or 0)]
        BUCKET_EVENTS.labels("ingest", "ingested").inc()
        self._pending.add(doc_id)
        log.info("ingest: %s -> document %s", event.uri, doc_id)
        return [] if isinstance(output, str) else [output]

    def _read(self, event: ObjectEvent) -> bytes:
        """The object's bytes (blocking; run in a thread). Raises MissingObjectError,
        DocumentTooLargeError (``max_document_bytes``, checked before downloading)."""
        limit = self.settings.max_document_bytes
        client = self.store.client
        try:
            size = client.stat_object(event.bucket, event.key, version_id=event.version_id).size
            assert size is not None  # stat_object always sets it (from Content-Length)
            if size > limit:
                raise DocumentTooLargeError(f"{event.uri} is {size} bytes; the limit is {limit} "
                                            "(OCRSTREAM_MAX_DOCUMENT_BYTES)")
            response = client.get_object(event.bucket, event.key, version_id=event.version_id)
        except S3Error as exc:
            if exc.code in MISSING_CODES:
                raise MissingObjectError(f"{event.uri} was gone before it could be read "
                                         f"({exc.code})") from None
            raise
        try:
            data = response.read(limit + 1)
        finally:
            response.close()
            response.release_conn()
        if len(data) > limit:  # grew between stat and get
            raise DocumentTooLargeError(f"{event.uri} exceeds {limit} bytes (OCRSTREAM_MAX_DOCUMENT_BYTES)")
        return data


def bucket_door(settings: Settings, store: ObjectStore, ingest) -> BucketDoor | None:
    """The stage's bucket door, or None when ``bucket_notifications_topic`` is empty (off)."""
    return BucketDoor(settings, store, ingest) if settings.bucket_notifications_topic else None
