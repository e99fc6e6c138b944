"""The bucket door (services/ingest/bucket.py): both notification formats, and its rules against
the real embedded S3 (duplicates, prefix, deletes, vanished and oversized objects)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import pytest
from aiokafka import ConsumerRecord

from ocrstream.contracts import events
from ocrstream.storage.objectstore import ObjectStore
from services.ingest.bucket import BucketDoor, ObjectEvent, parse_notification
from services.ingest.seaweedfs import filer_pb2
from services.ingest.stage import Ingestor


def minio_record(event_name: str, key: str, etag: str = "abc", size: int = 3) -> bytes:
    """An S3 event message as MinIO's Kafka target publishes it (key URL-encoded)."""
    return json.dumps({"EventName": event_name, "Key": f"ocrstream/{key}", "Records": [{
        "eventVersion": "2.0", "eventSource": "minio:s3", "eventName": event_name,
        "s3": {"bucket": {"name": "ocrstream"},
               "object": {"key": key.replace(" ", "+"), "size": size, "eTag": etag,
                          "versionId": "", "sequencer": "1800F5A4B1C2D3E4"}}}]}).encode()


def filer_event(path: str, data: bytes | None, *, deleted: bool = False) -> bytes:
    """A SeaweedFS filer EventNotification for ``path`` (a put, or a delete)."""
    import hashlib

    parent, name = path.rsplit("/", 1)
    entry = filer_pb2.Entry(name=name, attributes=filer_pb2.FuseAttributes(
        file_size=len(data or b""), md5=hashlib.md5(data or b"").digest()))
    if deleted:
        return filer_pb2.EventNotification(old_entry=entry, delete_chunks=True).SerializeToString()
    return filer_pb2.EventNotification(new_entry=entry, new_parent_path=parent).SerializeToString()


def test_s3_records_and_filer_events_become_the_same_object_events():
    created = parse_notification(minio_record("s3:ObjectCreated:Put", "inbox/my receipt.jpg", '"e1"', 3))
    assert created == [ObjectEvent("created", "ocrstream", "inbox/my receipt.jpg", 3, "e1", None)]
    assert parse_notification(minio_record("s3:ObjectRemoved:Delete", "inbox/a.jpg"))[0].kind == "removed"

    put = parse_notification(filer_event("/buckets/ocrstream/inbox/my receipt.jpg", b"abc"))
    assert put == [ObjectEvent("created", "ocrstream", "inbox/my receipt.jpg", 3,
                               "900150983cd24fb0d6963f7d28e17f72", None)]  # md5("abc")
    gone = parse_notification(filer_event("/buckets/ocrstream/inbox/a.jpg", b"x", deleted=True),
                              key=b"/buckets/ocrstream/inbox/a.jpg")
    assert gone == [ObjectEvent("removed", "ocrstream", "inbox/a.jpg")]
    assert parse_notification(filer_event("/topics/x/y", b"x"))[0].kind == "other"
    # identity: same version -> same document, new bytes -> new document
    assert created[0].document_id == parse_notification(
        minio_record("s3:ObjectCreated:Put", "inbox/my receipt.jpg", "e1"))[0].document_id
    assert created[0].document_id != parse_notification(
        minio_record("s3:ObjectCreated:Put", "inbox/my receipt.jpg", "e2"))[0].document_id


@pytest.mark.parametrize("value", [b"{not json", b'{"Records": 5}', b"\xff\xff\xff"])
def test_undecodable_notifications_raise_a_typed_error(value):
    from ocrstream.errors import InvalidEventError

    with pytest.raises(InvalidEventError):
        parse_notification(value)


def record(value: bytes, key: bytes | None = None, offset: int = 0) -> ConsumerRecord:
    return ConsumerRecord("ocr.bucket-notifications", 0, offset, 0, 0, key, value, None, len(value), 0, [])


UNIT_INBOX = f"unit-inbox-{uuid.uuid4().hex[:6]}/"  # not the pipelines' inbox/: they must not read these


@pytest.fixture
async def door(stack_settings):
    settings = stack_settings.model_copy(update={"max_document_bytes": 1000, "inbox_prefix": UNIT_INBOX})
    store = ObjectStore(settings)
    ingestor = Ingestor(settings, store)
    await ingestor.start()
    yield BucketDoor(settings, store, ingestor), store
    await ingestor.close()


@pytest.mark.slow
async def test_door_rules_against_real_s3(door):
    door, store = door
    key = f"{UNIT_INBOX}{uuid.uuid4().hex}.png"
    await store.put(key, b"\x89PNG\r\n\x1a\n small")
    stat = await asyncio.to_thread(store.client.stat_object, store.bucket, key)
    put = minio_record("s3:ObjectCreated:Put", key, stat.etag, stat.size)

    first = await door.handle(record(put))
    assert [o.topic for o in first] == [events.INGESTED]
    doc = first[0].event.document
    assert (doc.source, doc.filename) == ("bucket", f"s3://ocrstream/{key}")
    assert await store.get(doc.object_key) == b"\x89PNG\r\n\x1a\n small"
    await door.published(first)  # the broker acked it
    assert await door.handle(record(put, offset=1)) == []  # redelivered: one document

    # deletes and other prefixes: ignored
    assert await door.handle(record(minio_record("s3:ObjectRemoved:Delete", key))) == []
    await store.put("elsewhere/x.png", b"x")
    assert await door.handle(record(minio_record("s3:ObjectCreated:Put", "elsewhere/x.png"))) == []

    # vanished before it was read, and oversized (limit 1000 bytes here): failed rows
    vanished = await door.handle(record(minio_record("s3:ObjectCreated:Put", f"{UNIT_INBOX}{uuid.uuid4().hex}.png")))
    big_key = f"{UNIT_INBOX}{uuid.uuid4().hex}.png"
    await store.put(big_key, b"x" * 2000)
    big = await door.handle(record(minio_record("s3:ObjectCreated:Put", big_key, "e", 2000)))
    for outputs, error in ((vanished, "MissingObjectError"), (big, "DocumentTooLargeError")):
        assert [o.topic for o in outputs] == [events.DLQ]
        letter = events.decode(events.DLQ, outputs[0].payload)
        assert (letter.stage, letter.error.type) == ("ingest", error)
        assert letter.document_id.startswith("s3-") and letter.original["source"] == "bucket"


@pytest.mark.slow
async def test_seaweedfs_filer_publishes_object_events_for_the_door(stack, stack_settings):
    """The embedded stack's filer announces a put on the notifications topic, decodable here."""
    from minio import Minio

    from tests.test_pipeline_e2e import read_topic

    assert stack.bucket_notifications_topic
    client = Minio(stack.s3_endpoint, access_key=stack.s3_access_key, secret_key=stack.s3_secret_key,
                   secure=False)
    if not client.bucket_exists("ocrstream"):
        client.make_bucket("ocrstream")
    key = f"{UNIT_INBOX}{uuid.uuid4().hex}.jpg"  # outside inbox/: no pipeline reads these bytes
    client.put_object("ocrstream", key, io.BytesIO(b"jpeg bytes"), 10)
    etag = client.stat_object("ocrstream", key).etag
    found = []
    for _ in range(20):
        found = [e for r in await read_topic(stack_settings, stack.bucket_notifications_topic, idle_s=1)
                 for e in parse_notification(r.value, r.key) if e.key == key]
        if found:
            break
    assert found and found[0] == ObjectEvent("created", "ocrstream", key, 10, etag, None)
