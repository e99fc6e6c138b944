"""Ingest killed (SIGKILL) under HTTP uploads from clients that retry with an ``Idempotency-Key``
(issue 24: 200 uploads gave 203 documents), and clients that give up waiting for an answer the
door was still writing: every upload is one document -- the ids the clients were given are the
only ids ``ocr.ingested.v1`` carries for their bytes, none is missing."""

from __future__ import annotations

import io
import random
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from ocrstream.contracts import events
from ocrstream.ops import dlq
from ocrstream.ops.launcher import StageProcesses, free_port
from ocrstream.streaming.ingestor import content_sha256
from tests.test_pipeline_e2e import wait_http

pytestmark = pytest.mark.slow

UPLOADS = 40
CLIENTS = 4
KILLS_AT = (10, 20, 30)  # ingest is SIGKILLed when this many uploads were accepted (then restarted)
MAX_TRIES = 400  # per upload: retries while the door is down (bounded)


def png(seed: int) -> bytes:
    rng = random.Random(seed)
    image = Image.new("L", (64, 64))  # noise: ~4 KB that PNG cannot shrink
    image.putdata([rng.randrange(256) for _ in range(64 * 64)])
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def upload(url: str, data: bytes, accepted: list, give_up_first: bool = False) -> str:
    """POST ``data`` until the door answers 202, with one Idempotency-Key for every try.
    ``give_up_first``: the first try asks the door to wait 3 s for the result and stops reading
    after 1 s (its answer is lost for certain, after the door accepted the document)."""
    key = uuid.uuid4().hex
    for attempt in range(MAX_TRIES):
        lose = give_up_first and attempt == 0
        try:
            resp = httpx.post(url + "/v1/documents", files={"file": ("u.png", data)}, params={"wait": 3} if lose else None,
                              headers={"Idempotency-Key": key}, timeout=httpx.Timeout(10, read=1 if lose else 10))
        except httpx.TransportError:  # refused while down, or the answer lost
            time.sleep(0.2)
            continue
        if resp.status_code == 503:
            time.sleep(0.2)
            continue
        assert resp.status_code == 202, resp.text
        accepted.append(resp.json()["document_id"])
        return resp.json()["document_id"]
    raise AssertionError(f"not accepted after {MAX_TRIES} tries")


async def test_ingest_killed_under_retried_uploads_makes_one_document_per_upload(stack_env, tmp_path):
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": "0",
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"idem-{uuid.uuid4().hex[:6]}", "OCRSTREAM_RATE_LIMIT_PER_MINUTE": "0"}
    url = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    seed = random.randrange(1 << 30)
    files = [png(seed + i) for i in range(UPLOADS)]
    with StageProcesses(env, tmp_path / "logs", stages=("ingest",)) as stages:
        await wait_http(url + "/healthz", timeout_s=120)
        accepted: list[str] = []
        killed = threading.Event()

        def killer() -> None:
            for at in KILLS_AT:
                while len(accepted) < at:
                    time.sleep(0.005)
                stages.stop_one("ingest", sig=signal.SIGKILL)  # uploads in flight lose their answers
                stages.start_one("ingest")
            killed.set()

        with ThreadPoolExecutor(CLIENTS + 1) as pool:
            kill = pool.submit(killer)
            ids = list(pool.map(lambda i: upload(url, files[i], accepted, give_up_first=i % 5 == 0), range(UPLOADS)))
            kill.result(timeout=300)
        assert killed.is_set()

    by_sha: dict[str, set[str]] = {}
    wanted = {content_sha256(data) for data in files}
    for record in await dlq.read_partitions(stack_env_settings(stack_env), events.INGESTED):
        event = events.decode(events.INGESTED, record.value)
        if event.document.content_sha256 in wanted:
            by_sha.setdefault(event.document.content_sha256, set()).add(event.document_id)
    assert len(set(ids)) == UPLOADS
    assert {sha: docs for sha, docs in by_sha.items() if len(docs) > 1} == {}  # no upload made two documents
    assert {content_sha256(data): {doc} for data, doc in zip(files, ids)} == by_sha  # none lost
    print(f"\n{UPLOADS} uploads by {CLIENTS} retrying clients, ingest SIGKILLed {len(KILLS_AT)} times: "
          f"{len(by_sha)} documents, 0 duplicated, 0 lost")


def stack_env_settings(env):
    from ocrstream.settings import Settings

    return Settings.from_env(env)
