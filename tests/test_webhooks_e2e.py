"""Completion webhooks through the four stage processes on the embedded stack, to a real HTTP receiver.

The receiver (an HTTP server in this test) verifies every request's Standard Webhooks signature
with the ``standardwebhooks`` package, answers 500 to the first two attempts of each delivery and
de-duplicates by ``webhook-id``; each document submitted with a ``callback_url`` (one done, one
failed in preprocess) arrives exactly once after retries, and a receiver that always fails gets
``OCRSTREAM_WEBHOOK_MAX_ATTEMPTS`` attempts, then the delivery is ``failed``. Internal targets and
non-http URLs are refused at the HTTP door.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from ocrstream.ops.launcher import STAGES, StageProcesses, free_port
from ocrstream.streaming.auth import create_key
from ocrstream.streaming.results import wait_for_results
from tests.test_pipeline_e2e import wait_http
from tools.render_samples import encode, render_page

pytestmark = pytest.mark.slow

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
FAILS_FIRST = 2
MAX_ATTEMPTS = 4
#: A bound on the wait for the deliveries (retries every <= 1 s here), not a speed check.
DELIVERY_WAIT_S = 120


class Receiver:
    """Verifies signatures, fails the first attempts, keeps each webhook-id's first accepted body."""

    def __init__(self) -> None:
        self.verifier = Webhook(SECRET)
        self.attempts: dict[str, int] = {}
        self.accepted: dict[str, dict] = {}  # webhook-id -> body (de-duplicated)
        self.duplicates = 0
        self.bad_signatures = 0
        self.lock = threading.Lock()
        self.rng = random.Random(25)  # /flaky: each request fails with probability 1/2 ...
        self.flaky_fails: dict[str, int] = {}  # ... but never a delivery's last allowed attempt
        self.flaky = {"requests": 0, "failed": 0}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = receiver.verifier.verify(body, {k.lower(): v for k, v in self.headers.items()})
                except WebhookVerificationError:
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.answer(401)
                    return
                wid = self.headers["webhook-id"]
                with receiver.lock:
                    receiver.attempts[wid] = n = receiver.attempts.get(wid, 0) + 1
                    if self.path.startswith("/flaky"):
                        fails = receiver.flaky_fails.get(wid, 0)
                        ok = fails >= MAX_ATTEMPTS - 1 or receiver.rng.random() >= 0.5
                        receiver.flaky_fails[wid] = fails + (not ok)
                        receiver.flaky["requests"] += 1
                        receiver.flaky["failed"] += not ok
                    else:
                        ok = self.path.startswith("/hook") and n > FAILS_FIRST
                    if ok:
                        if wid in receiver.accepted:
                            receiver.duplicates += 1
                        receiver.accepted.setdefault(wid, payload)
                self.answer(204 if ok else 500)

            def answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True).start()

    def by_document(self) -> dict[str, list[dict]]:
        with self.lock:
            found: dict[str, list[dict]] = {}
            for body in self.accepted.values():
                found.setdefault(body["document_id"], []).append(body)
            return found


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """The doors' keys file and a token per key name (``own`` and ``tenant-b``)."""
    path = tmp_path_factory.mktemp("hook-keys") / "keys.jsonl"
    return str(path), {name: create_key(path, name, ("ingest",)) for name in ("own", "tenant-b")}


def bearer(keys, name: str = "own") -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[1][name]}"}


@pytest.fixture(scope="module")
def webhook_pipeline(stack_env, receiver, keys, tmp_path_factory):
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": "0",
           "OCRSTREAM_API_KEYS_FILE": keys[0],
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"hook-{uuid.uuid4().hex[:6]}",
           "OCRSTREAM_WEBHOOK_SECRET": SECRET, "OCRSTREAM_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
           "OCRSTREAM_WEBHOOK_RETRY_INITIAL_S": "0.2", "OCRSTREAM_WEBHOOK_RETRY_MAX_S": "1",
           "OCRSTREAM_WEBHOOK_POLL_S": "0.2", "OCRSTREAM_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS)}
    ports = {"store": {"OCRSTREAM_METRICS_PORT": str(free_port())}}
    with StageProcesses(env, tmp_path_factory.mktemp("hook-logs"), stages=STAGES, stage_env=ports) as stages:
        yield stages, {**env, "STORE_METRICS_PORT": ports["store"]["OCRSTREAM_METRICS_PORT"]}


async def outbox_rows(settings, ids: list[str]) -> dict[str, asyncpg.Record]:
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch("SELECT * FROM webhook_outbox WHERE document_id = ANY($1::text[])", ids)
    except asyncpg.UndefinedTableError:  # the store has not made its tables yet
        rows = []
    finally:
        await conn.close()
    return {r["document_id"]: r for r in rows}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


async def test_signed_webhooks_arrive_once_after_retries_and_bounded_failures_are_marked(
        webhook_pipeline, stack_settings, receiver, keys, tmp_path):
    _, env = webhook_pipeline
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    await wait_http(api + "/healthz", 120)
    good = encode(render_page(["WEBHOOK 2502"], size=28))
    jpeg = encode(render_page(["truncated"], size=30), "JPEG", quality=90)
    async with httpx.AsyncClient() as client:
        async def post(name: str, data: bytes, callback: str) -> httpx.Response:
            return await client.post(api + "/v1/documents", files={"file": (name, data)},
                                     data={"callback_url": callback}, headers=bearer(keys))

        for refused in ("http://10.1.2.3/hook", "http://[::ffff:169.254.169.254]/", "ftp://127.0.0.1/hook",
                        "http://user:pw@127.0.0.1/hook"):
            resp = await post("x.png", good, refused)
            assert resp.status_code == 400 and resp.json()["detail"]["error"] == "InvalidSubmissionError", resp.text
        ids = {}
        for name, data, path in (("done.png", good, "/hook"), ("failed.jpg", jpeg[: len(jpeg) // 2], "/hook"),
                                 ("never.png", good, "/always-500")):
            resp = await post(name, data, receiver.url + path)
            assert resp.status_code == 202, resp.text
            ids[name] = resp.json()["document_id"]
    (tmp_path / "cli.png").write_bytes(good)  # the CLI door: ocrstream submit --callback-url
    out = await asyncio.to_thread(cli, env, "submit", "--via", "kafka", "--callback-url", receiver.url + "/hook",
                                  str(tmp_path / "cli.png"))
    assert out.returncode == 0, out.stdout + out.stderr
    ids["cli.png"] = re.search(r"\b([0-9a-f]{32})\b", out.stdout).group(1)
    results = await wait_for_results(stack_settings, list(ids.values()), timeout_s=300)
    assert results[ids["done.png"]].status == "done" and results[ids["failed.jpg"]].status == "failed"

    for _ in range(DELIVERY_WAIT_S * 10):
        rows = await outbox_rows(stack_settings, list(ids.values()))
        if len(rows) == len(ids) and all(r["status"] != "pending" for r in rows.values()):
            break
        await asyncio.sleep(0.1)
    print("\nwebhook outbox:\n| document | status | attempts | last HTTP status | last error |\n|---|---|---|---|---|")
    for name, doc_id in ids.items():
        r = rows[doc_id]
        print(f"| {name} {doc_id[:8]} | {r['status']} | {r['attempts']} | {r['last_status']} | {r['last_error']} |")
    delivered = receiver.by_document()
    assert receiver.bad_signatures == 0
    for name in ("done.png", "failed.jpg", "cli.png"):
        doc_id = ids[name]
        (body,) = delivered[doc_id]  # exactly once after de-duplication by webhook-id
        assert body["status"] == results[doc_id].status and body["type"] == f"document.{body['status']}"
        row = rows[doc_id]
        assert row["status"] == "delivered" and row["attempts"] == FAILS_FIRST + 1
        assert receiver.attempts[row["webhook_id"]] == FAILS_FIRST + 1
    assert delivered[ids["done.png"]][0]["text"] and delivered[ids["failed.jpg"]][0]["error"]["type"] == \
        "TruncatedImageError"
    never = rows[ids["never.png"]]
    assert never["status"] == "failed" and never["attempts"] == MAX_ATTEMPTS and never["last_status"] == 500
    assert receiver.attempts[never["webhook_id"]] == MAX_ATTEMPTS and ids["never.png"] not in delivered
    assert json.loads(never["payload"])["document_id"] == ids["never.png"]

    # the failed delivery is listed, replayed on request, and given up on again after the bound
    listed = await asyncio.to_thread(cli, env, "webhook", "list", "--failed")
    assert listed.returncode == 0 and ids["never.png"] in listed.stdout and ids["done.png"] not in listed.stdout
    replayed = await asyncio.to_thread(cli, env, "webhook", "replay", ids["never.png"])
    assert replayed.returncode == 0 and "1 deliveries pending again" in replayed.stdout, replayed.stderr
    for _ in range(DELIVERY_WAIT_S * 10):
        again = (await outbox_rows(stack_settings, [ids["never.png"]]))[ids["never.png"]]
        if again["status"] == "failed":
            break
        await asyncio.sleep(0.1)
    assert again["status"] == "failed" and again["attempts"] == MAX_ATTEMPTS
    assert receiver.attempts[never["webhook_id"]] == 2 * MAX_ATTEMPTS


async def test_status_and_metrics_count_pending_and_failed_webhooks(webhook_pipeline, stack_settings):
    """After the test above gave up on one delivery: ``ocrstream status`` (text and --json) and the
    store's ``ocrstream_webhook_outbox{status}`` show the failed count, equal to the outbox's."""
    _, env = webhook_pipeline
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        failed = await conn.fetchval("SELECT count(*) FROM webhook_outbox WHERE status = 'failed'")
    finally:
        await conn.close()
    assert failed >= 1
    report = json.loads((await asyncio.to_thread(cli, env, "status", "--json")).stdout)
    assert report["webhooks"]["failed"] == failed and "pending" in report["webhooks"]
    text = (await asyncio.to_thread(cli, env, "status")).stdout
    assert re.search(rf"webhooks: \d+ pending, {failed} failed", text), text
    url = f"http://127.0.0.1:{env['STORE_METRICS_PORT']}/metrics"
    async with httpx.AsyncClient() as client:
        for _ in range(60):  # refreshed every OUTBOX_REFRESH_S (15 s)
            scraped = (await client.get(url)).text
            if f'ocrstream_webhook_outbox{{status="failed"}} {float(failed)}' in scraped:
                break
            await asyncio.sleep(1)
    assert f'ocrstream_webhook_outbox{{status="failed"}} {float(failed)}' in scraped
    assert 'ocrstream_webhook_outbox{status="pending"}' in scraped


async def produce_raw(settings, data: bytes, key: str, callback: bytes) -> None:
    from aiokafka import AIOKafkaProducer

    from ocrstream.contracts import events

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(events.RAW, data, key=key.encode(),
                                     headers=[("filename", b"raw.png"), ("callback_url", callback)])
    finally:
        await producer.stop()


async def test_the_raw_topic_callback_header_is_checked_like_the_form_field(
        webhook_pipeline, stack_settings, receiver):
    """A raw-topic record's ``callback_url`` header gets the signed webhook; a refused one (an
    internal target, not http) fails the document with InvalidSubmissionError, nothing delivered."""
    from ocrstream.streaming.ingestor import content_sha256
    from services.ingest.stage import raw_key_document_id

    good = encode(render_page(["RAW HOOK 2504"], size=28))
    cases = {"raw-ok": (receiver.url + "/hook").encode(), "raw-internal": b"http://10.1.2.3/hook",
             "raw-ftp": b"ftp://127.0.0.1/hook", "raw-binary": b"\xff\xfe"}
    ids = {}
    for key, header in cases.items():
        await produce_raw(stack_settings, good, key, header)
        ids[key] = raw_key_document_id(key, content_sha256(good))
    results = await wait_for_results(stack_settings, list(ids.values()), timeout_s=300)
    assert results[ids["raw-ok"]].status == "done"
    for key in ("raw-internal", "raw-ftp", "raw-binary"):
        assert results[ids[key]].status == "failed", key
        assert results[ids[key]].error.type == "InvalidSubmissionError", results[ids[key]].error
    for _ in range(DELIVERY_WAIT_S * 10):
        rows = await outbox_rows(stack_settings, list(ids.values()))
        if ids["raw-ok"] in rows and rows[ids["raw-ok"]]["status"] != "pending":
            break
        await asyncio.sleep(0.1)
    assert set(rows) == {ids["raw-ok"]}  # refused targets never reach the outbox
    assert rows[ids["raw-ok"]]["status"] == "delivered" and rows[ids["raw-ok"]]["url"] == receiver.url + "/hook"
    (body,) = receiver.by_document()[ids["raw-ok"]]
    assert body["status"] == "done" and "RAW HOOK" in body["text"].upper()


async def test_a_key_webhook_serves_submissions_without_their_own_callback(
        webhook_pipeline, stack_settings, receiver, keys):
    """``ocrstream webhook add tenant-b URL``: that key's submissions without a callback_url get
    their webhook there; one with its own callback_url gets it there instead; another key's get
    none; after ``webhook remove`` none either. Internal targets are refused by ``add`` too."""
    _, env = webhook_pipeline
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    await wait_http(api + "/healthz", 120)
    refused = await asyncio.to_thread(cli, env, "webhook", "add", "tenant-b", "http://10.9.8.7/hook")
    assert refused.returncode != 0 and "internal address" in refused.stderr
    added = await asyncio.to_thread(cli, env, "webhook", "add", "tenant-b", receiver.url + "/hook")
    assert added.returncode == 0, added.stderr
    listed = await asyncio.to_thread(cli, env, "webhook", "list", "--keys")
    assert f"tenant-b  {receiver.url}/hook" in listed.stdout
    ids = {}
    async with httpx.AsyncClient() as client:
        async def post(name: str, key: str, callback: str | None = None) -> str:
            data = encode(render_page([f"KEY HOOK {name.upper()}"], size=28))
            resp = await client.post(api + "/v1/documents", files={"file": (f"{name}.png", data)},
                                     data={"callback_url": callback} if callback else {}, headers=bearer(keys, key))
            assert resp.status_code == 202, resp.text
            return resp.json()["document_id"]

        ids["by-key"] = await post("by-key", "tenant-b")
        ids["own-url"] = await post("own-url", "tenant-b", receiver.url + "/hook?own")
        ids["other-key"] = await post("other-key", "own")
        await wait_for_results(stack_settings, list(ids.values()), timeout_s=300)
        removed = await asyncio.to_thread(cli, env, "webhook", "remove", "tenant-b")
        assert removed.returncode == 0, removed.stderr
        assert (await asyncio.to_thread(cli, env, "webhook", "remove", "tenant-b")).returncode != 0
        ids["after-remove"] = await post("after-remove", "tenant-b")
    await wait_for_results(stack_settings, [ids["after-remove"]], timeout_s=300)
    for _ in range(DELIVERY_WAIT_S * 10):
        rows = await outbox_rows(stack_settings, list(ids.values()))
        if all(rows.get(ids[n]) is not None and rows[ids[n]]["status"] == "delivered" for n in ("by-key", "own-url")):
            break
        await asyncio.sleep(0.1)
    assert rows[ids["by-key"]]["url"] == receiver.url + "/hook"
    assert rows[ids["own-url"]]["url"] == receiver.url + "/hook?own"
    assert ids["other-key"] not in rows and ids["after-remove"] not in rows
    delivered = receiver.by_document()
    assert len(delivered[ids["by-key"]]) == 1 and len(delivered[ids["own-url"]]) == 1


BURST = 16


async def test_no_webhook_is_lost_under_a_half_failing_receiver_and_a_store_killed_mid_burst(
        webhook_pipeline, stack_settings, receiver, keys):
    """A burst of documents with callbacks to a receiver that fails half of all requests (seeded;
    never a delivery's last allowed attempt, whose bound the first test covers); the store is
    killed (SIGKILL) once some of them are stored and started again. Every document's webhook
    arrives, signed, exactly once after de-duplication by webhook-id; the outbox holds every one
    as delivered (0 lost)."""
    stages, env = webhook_pipeline
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    await wait_http(api + "/healthz", 120)
    bad_before = receiver.bad_signatures
    ids: list[str] = []
    async with httpx.AsyncClient() as client:
        for i in range(BURST):
            data = encode(render_page([f"BURST {i:02d} WEBHOOK"], size=28))
            resp = await client.post(api + "/v1/documents", files={"file": (f"burst-{i}.png", data)},
                                     data={"callback_url": receiver.url + "/flaky"}, headers=bearer(keys))
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["document_id"])
    for _ in range(3000):  # wait for the burst to be partly stored, then kill the store
        stored = len(await outbox_rows(stack_settings, ids))
        if stored >= 3:
            break
        await asyncio.sleep(0.1)
    assert 3 <= stored < BURST, f"{stored} of {BURST} stored: not mid-burst"
    stages.stop_one("store", sig=signal.SIGKILL)
    stages.start_one("store")
    results = await wait_for_results(stack_settings, ids, timeout_s=600)
    assert all(results[d].status == "done" for d in ids)
    for _ in range(DELIVERY_WAIT_S * 2 * 10):  # a delivery leased by the killed store waits out its lease
        rows = await outbox_rows(stack_settings, ids)
        if len(rows) == BURST and all(r["status"] == "delivered" for r in rows.values()):
            break
        await asyncio.sleep(0.1)
    delivered = receiver.by_document()
    attempts = [r["attempts"] for r in rows.values()]
    print(f"\nburst of {BURST}, store killed with {stored} stored: receiver answered {receiver.flaky['requests']} "
          f"requests, {receiver.flaky['failed']} with 500 ({100 * receiver.flaky['failed'] / receiver.flaky['requests']:.0f} %); "
          f"attempts per delivery {min(attempts)}..{max(attempts)}; duplicates after delivery: {receiver.duplicates}")
    assert len(rows) == BURST and all(r["status"] == "delivered" for r in rows.values()), \
        {d[:8]: (r["status"], r["attempts"], r["last_error"]) for d, r in rows.items()}
    assert receiver.bad_signatures == bad_before  # every request verified against the secret
    assert all(len(delivered.get(d, [])) == 1 for d in ids)  # each exactly once after de-duplication
    assert receiver.flaky["failed"] >= receiver.flaky["requests"] // 4  # the receiver did fail a lot
