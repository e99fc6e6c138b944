"""Completion webhooks' checks and bounds (ocrstream/streaming/webhooks.py): which callback URLs are
refused, the body's size bound, the retry delays, the signature headers. Delivery through the real
stages, store and receiver: tests/test_webhooks_e2e.py."""

from __future__ import annotations

import base64
import json
import random
from datetime import datetime, timezone

import pytest
from standardwebhooks.webhooks import Webhook

from ocrstream.contracts.event_models import ErrorInfo, ResultsEvent, Timestamps
from ocrstream.errors import ConfigurationError, InvalidSubmissionError
from ocrstream.settings import Settings
from ocrstream.storage.outbox import Delivery, webhook_id
from ocrstream.streaming import webhooks

pytestmark = pytest.mark.unit

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def settings(**kw) -> Settings:
    return Settings(_env_file=None, webhook_secret=SECRET, **kw)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://localhost./hook", "https://10.0.0.7/", "http://192.168.1.1/",
    "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/", "http://0.0.0.0/", "http://100.64.0.1/", "http://224.0.0.1/",
    "ftp://example.com/x", "file:///etc/passwd", "http:///nohost", "http://user:pw@example.com/",
    "http://example.com:99999/", "not a url"])
async def test_refused_callback_urls(url):
    with pytest.raises(InvalidSubmissionError):
        await webhooks.check_callback_url(url, settings())


async def test_public_addresses_pass_and_the_allow_list_admits_internal_ones():
    assert await webhooks.check_callback_url("https://93.184.215.14/hook", settings())
    allowed = settings(webhook_allow_hosts="127.0.0.1, receiver.internal, 10.0.0.0/8")
    for url in ("http://127.0.0.1:8000/hook", "http://receiver.internal/hook", "http://10.9.8.7/"):
        assert await webhooks.check_callback_url(url, allowed) == url
    with pytest.raises(InvalidSubmissionError):  # only what is listed
        await webhooks.check_callback_url("http://192.168.0.1/", allowed)


async def test_callbacks_are_refused_without_a_secret_and_a_bad_allow_list_fails_at_start():
    with pytest.raises(InvalidSubmissionError, match="OCRSTREAM_WEBHOOK_SECRET"):
        await webhooks.check_callback_url("https://93.184.215.14/", Settings(_env_file=None))
    with pytest.raises(ConfigurationError):
        webhooks.allow_list("good.example, bad host")
    with pytest.raises(ConfigurationError):
        webhooks.WebhookSender(Settings(_env_file=None, webhook_secret="not-base64!"))


async def test_url_length_bound():
    base = "https://93.184.215.14/"
    at = base + "a" * (webhooks.MAX_URL_CHARS - len(base))
    assert await webhooks.check_callback_url(at, settings(), resolve=False) == at
    with pytest.raises(InvalidSubmissionError, match="characters"):
        await webhooks.check_callback_url(at + "a", settings(), resolve=False)


def result(text: str, status: str = "done") -> ResultsEvent:
    return ResultsEvent(version=1, document_id="doc-1", status=status, timestamps=Timestamps(ingested="2026-01-01T00:00:00Z"),
                        text=text, pages=[], regions=[],
                        error=ErrorInfo(stage="preprocess", type="TruncatedImageError", message="m")
                        if status == "failed" else None)


@pytest.mark.parametrize("text", ["é" * 5000, "\"\\\n" * 3000, "x" * 5000])
def test_the_body_is_cut_to_its_byte_bound(text):
    whole = webhooks.summary(result(text), 1_000_000)
    assert json.loads(whole)["text"] == text and not json.loads(whole)["text_truncated"]
    limit = len(whole.encode()) - 1  # one byte under what the whole body needs: cut
    cut = webhooks.summary(result(text), limit)
    body = json.loads(cut)
    assert len(cut.encode()) <= limit and body["text_truncated"] and text.startswith(body["text"])
    assert webhooks.summary(result(text), len(whole.encode())) == whole  # exactly the bound: whole


def test_failed_body_and_too_small_a_bound():
    body = json.loads(webhooks.summary(result("", "failed"), 4096))
    assert body["type"] == "document.failed" and body["error"]["type"] == "TruncatedImageError"
    with pytest.raises(ValueError):
        webhooks.summary(result("x"), 50)


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling():
    rng = random.Random(7)
    for attempts, ceiling in ((1, 2.0), (2, 4.0), (5, 32.0), (9, 100.0), (500, 100.0)):
        delays = [webhooks.backoff_s(attempts, 2.0, 100.0, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling and max(delays) > ceiling / 2


def test_signature_headers_verify_with_the_standard_webhooks_package():
    sender = webhooks.WebhookSender(settings())
    delivery = Delivery(webhook_id("doc-1", "v1"), "doc-1", "https://x/", '{"a":1}', 0, datetime.now(timezone.utc))
    headers = sender.headers(delivery, datetime.now(timezone.utc))
    assert Webhook(SECRET).verify(delivery.payload, headers) == {"a": 1}
    assert headers["webhook-id"] == delivery.webhook_id == webhook_id("doc-1", "v1") != webhook_id("doc-1", "v2")
