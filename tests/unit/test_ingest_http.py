"""The ingest HTTP door's answer when the pipeline behind it does not take a document."""

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError

from ocrstream.settings import Settings
from ocrstream.streaming.auth import Authenticator
from services.ingest.http import RETRY_AFTER_S, create_app

pytestmark = pytest.mark.unit


class UnreachableBroker:
    """The seam ``create_app`` takes (a Submitter): every submission meets ``error``."""

    def __init__(self, error: BaseException):
        self.settings = Settings(_env_file=None)
        self.error = error

    async def submit(self, data, filename, door, template, document_id=None, sha=None):
        raise self.error


async def post(submitter) -> httpx.Response:
    app = create_app(submitter, Authenticator(submitter.settings, "127.0.0.1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://door") as client:
        return await client.post("/v1/documents", files={"file": ("r.png", b"\x89PNG....")})


async def test_a_broker_that_does_not_answer_is_a_503_with_retry_after():
    resp = await post(UnreachableBroker(KafkaConnectionError("Unable to bootstrap from 127.0.0.1:1")))
    assert resp.status_code == 503 and resp.headers["retry-after"] == str(RETRY_AFTER_S)
    assert resp.json()["detail"]["error"] == "KafkaConnectionError"
    assert "127.0.0.1" not in resp.text  # no internal host or port in the answer


async def test_a_bug_stays_a_500():
    resp = await post(UnreachableBroker(ZeroDivisionError("a bug at s3://bucket/originals/ab/cd")))
    assert resp.status_code == 500 and resp.json()["detail"]["error"] == "InternalError"
    assert "originals/" not in resp.text


class DownDatabase:
    """A query API pool whose database does not answer."""

    async def fetch(self, *args, **kwargs):
        raise ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 5432)")

    fetchrow = fetchval = fetch

    def acquire(self):
        return self

    async def __aenter__(self):
        return await self.fetch()

    async def __aexit__(self, *exc_info):
        return None


async def test_the_query_api_says_503_without_internals_when_its_database_is_down():
    from services.store.api import create_app as create_query_app

    app = create_query_app(DownDatabase(), Authenticator(Settings(_env_file=None), "127.0.0.1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://api") as client:
        for path in ("/v1/documents", "/v1/failures", "/v1/documents/some-id", "/v1/search?q=total"):
            resp = await client.get(path)
            assert resp.status_code == 503 and resp.headers["retry-after"], (path, resp.text)
            assert resp.json()["detail"]["error"] == "TransientError"
            assert "10.1.2.3" not in resp.text and "5432" not in resp.text
