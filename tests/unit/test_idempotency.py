"""``Idempotency-Key`` at the ingest HTTP door (services/ingest/idempotency.py) on fakes: same key
and bytes -> same document and answer; other bytes -> 422; scoped per API key; bounded retention;
an answer lost before it was remembered still yields the same document id; and one document per
request (two ``file`` fields: 400)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from ocrstream.settings import Settings
from ocrstream.streaming.auth import Authenticator, create_key
from ocrstream.streaming.ingestor import Receipt
from services.ingest.http import create_app
from services.ingest.idempotency import PREFIX, IdempotencyKeys

from .fakes import InMemoryObjectStore

pytestmark = pytest.mark.unit

TTL_S = 3600.0


class RecordingSubmitter:
    """The seam ``create_app`` takes: accepts everything, records each submission's document id."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.submitted: list[str] = []

    async def submit(self, data, filename, door, template, document_id=None, sha=None, **_):
        doc_id = document_id or uuid.uuid4().hex
        self.submitted.append(doc_id)
        return Receipt(doc_id, filename, object_key=f"originals/{sha or 'x'}")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class FlakyStore(InMemoryObjectStore):
    """Fails the next ``fail_puts`` writes (an S3 outage right after the broker acked)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_puts = 0

    async def put(self, key, data, content_type="application/octet-stream"):
        if self.fail_puts:
            self.fail_puts -= 1
            raise ConnectionError("S3 went away")
        await super().put(key, data, content_type)


@pytest.fixture
def door(tmp_path):
    """``(post, submitter, store, clock, tokens)``: ``post(body, key, token=..., template=None)``."""
    keys = tmp_path / "keys.jsonl"
    tokens = {"a": create_key(keys, "a"), "b": create_key(keys, "b")}
    settings = Settings(_env_file=None, api_keys_file=str(keys), rate_limit_per_minute=0)
    submitter, store, clock = RecordingSubmitter(settings), FlakyStore(), Clock()
    app = create_app(submitter, Authenticator(settings, "127.0.0.1"), idempotency=IdempotencyKeys(store, TTL_S, clock))

    async def post(body: bytes, key: str | None, token: str = "a", template: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tokens[token]}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as client:
            return await client.post("/v1/documents", files={"file": ("r.png", body)}, headers=headers,
                                     data={"template": template} if template else None)

    return post, submitter, store, clock


async def test_a_retry_with_the_same_key_gets_the_same_document_and_answer(door):
    post, submitter, store, _ = door
    first = await post(b"\x89PNG one", "upload-1")
    again = await post(b"\x89PNG one", "upload-1")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() and len(submitter.submitted) == 1
    assert [k for k in store.objects if k.startswith(PREFIX)] != []
    # without a key, the same bytes are a new submission each time
    assert (await post(b"\x89PNG one", None)).json()["document_id"] != first.json()["document_id"]


async def test_the_same_key_with_another_document_is_a_422(door):
    post, submitter, _, _ = door
    assert (await post(b"\x89PNG one", "upload-2")).status_code == 202
    for other in [dict(body=b"\x89PNG two"), dict(body=b"\x89PNG one", template="receipt")]:
        refused = await post(other["body"], "upload-2", template=other.get("template"))
        assert refused.status_code == 422 and refused.json()["detail"]["error"] == "IdempotencyKeyReusedError"
    assert len(submitter.submitted) == 1


async def test_keys_are_scoped_per_api_key(door):
    post, submitter, _, _ = door
    a = await post(b"\x89PNG one", "shared-key", token="a")
    b = await post(b"\x89PNG two", "shared-key", token="b")
    assert a.status_code == b.status_code == 202 and a.json()["document_id"] != b.json()["document_id"]


async def test_answers_are_remembered_for_the_retention_time_only(door):
    post, submitter, _, clock = door
    first = await post(b"\x89PNG one", "upload-3")
    clock.now += TTL_S  # at the bound: still remembered
    assert (await post(b"\x89PNG two", "upload-3")).status_code == 422
    clock.now += 1  # past it: forgotten, the key is free again
    later = await post(b"\x89PNG two", "upload-3")
    assert later.status_code == 202 and later.json()["document_id"] != first.json()["document_id"]
    assert len(submitter.submitted) == 2


async def test_an_answer_lost_before_it_was_remembered_keeps_its_document_id(door):
    """The broker acked, the record could not be written (or the door died): the retry is
    submitted again under the same derived id, so the pipeline sees one document."""
    post, submitter, store, _ = door
    store.fail_puts = 1
    first = await post(b"\x89PNG one", "upload-4")
    assert first.status_code == 202
    again = await post(b"\x89PNG one", "upload-4")
    assert again.json() == first.json()
    assert submitter.submitted == [first.json()["document_id"]] * 2


@pytest.mark.parametrize("bad", ["", "a\x01b", "k" * 258, "é"])
async def test_a_malformed_key_is_a_typed_422(door, bad):
    post, submitter, _, _ = door
    try:
        resp = await post(b"\x89PNG one", bad)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client itself refuses to send it
    assert resp.status_code == 422 and resp.json()["detail"]["error"] == "InvalidParameterError"
    assert submitter.submitted == []



async def test_two_file_fields_are_a_400_not_the_last_one_silently():
    """Before, FastAPI kept the last ``file`` and dropped the first without a word."""
    submitter = RecordingSubmitter(Settings(_env_file=None))
    app = create_app(submitter, Authenticator(submitter.settings, "127.0.0.1"),
                     idempotency=IdempotencyKeys(InMemoryObjectStore(), TTL_S))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://door") as client:
        two = await client.post("/v1/documents", files=[("file", ("a.png", b"\x89PNG a")),
                                                         ("file", ("b.png", b"\x89PNG b"))])
        assert two.status_code == 400 and two.json()["detail"]["error"] == "InvalidSubmissionError"
        assert "2 'file' fields" in two.json()["detail"]["message"]
        one = await client.post("/v1/documents", files=[("file", ("a.png", b"\x89PNG a"))])
        assert one.status_code == 202
    assert len(submitter.submitted) == 1
