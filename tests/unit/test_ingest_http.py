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


async def test_a_bug_stays_a_500():
    resp = await post(UnreachableBroker(ZeroDivisionError("a bug")))
    assert resp.status_code == 500
