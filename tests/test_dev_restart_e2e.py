"""Stages left running across ``ocrstream dev down`` / ``ocrstream dev up`` on the same state dir
(issue 24: the stack used to come back on new ports, and running stages never recovered): the
stack comes back on the same endpoints and the ingest and store processes carry on unaided --
a raw record refused after the restart reaches PostgreSQL through Kafka, and a PNG is stored in
S3 and announced on ``ocr.ingested.v1``."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import asyncpg
import pytest

from ocrstream.contracts import events
from ocrstream.devstack import EmbeddedStack, stop_running
from ocrstream.ops import dlq
from ocrstream.ops.launcher import StageProcesses
from ocrstream.settings import Settings
from ocrstream.streaming.ingestor import content_sha256
from ocrstream.streaming.kafka import make_producer
from tests.test_replays import png

pytestmark = pytest.mark.slow

WAIT_S = 120  # bound of every wait: the goal is recovery within 30 s of `dev up`


async def round_trip(settings: Settings, tag: str) -> float:
    """Send a refused record and a PNG to the raw topic; seconds until both came through
    (the failed row in PostgreSQL, the ingested event with the PNG's hash)."""
    started = time.monotonic()
    image = png(hash(tag) & 0xFFFF)
    producer = make_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(events.RAW, f"not an image {tag}".encode(), headers=[("filename", f"{tag}.txt".encode())])
        await producer.send_and_wait(events.RAW, image)
    finally:
        await producer.stop()
    deadline = time.monotonic() + WAIT_S
    failed = ingested = False
    while not (failed and ingested):
        assert time.monotonic() < deadline, f"{tag}: failed row {failed}, ingested {ingested}"
        try:
            conn = await asyncpg.connect(settings.dsn, timeout=5)
            try:
                failed = failed or bool(await conn.fetchval(
                    "SELECT count(*) FROM documents WHERE filename = $1 AND status = 'failed'", f"{tag}.txt"))
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):  # no table yet: the store is still migrating
            pass
        if not ingested:
            records = await dlq.read_partitions(settings, events.INGESTED, idle_s=0.5)
            ingested = any(events.decode(events.INGESTED, r.value).document.content_sha256 == content_sha256(image)
                           for r in records)
        await asyncio.sleep(1)
    return time.monotonic() - started


async def test_running_stages_carry_on_across_dev_down_and_up(tmp_path):
    state_dir = tmp_path / "stack"
    endpoints = EmbeddedStack(state_dir, log=lambda line: None).start()
    env = {**os.environ, **endpoints.as_env(), "OCRSTREAM_ENV_FILE": str(tmp_path / "none.env"),
           "OCRSTREAM_HTTP_PORT": "0", "OCRSTREAM_QUERY_PORT": "0", "OCRSTREAM_METRICS_PORT": "0",
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"restart-{uuid.uuid4().hex[:6]}",
           "OCRSTREAM_SESSION_TIMEOUT_MS": "6000", "OCRSTREAM_HEARTBEAT_INTERVAL_MS": "1000",
           "OCRSTREAM_RETRY_INITIAL_S": "0.2", "OCRSTREAM_RETRY_MAX_S": "2", "OCRSTREAM_RETRY_MAX_ATTEMPTS": "200"}
    settings = Settings.from_env(env)
    try:
        with StageProcesses(env, tmp_path / "logs", stages=("ingest", "store")) as stages:
            await round_trip(settings, "before")
            assert stop_running(state_dir) is True  # dev down, the stages still running
            await asyncio.sleep(2)  # they meet a stack that is gone
            assert EmbeddedStack(state_dir, log=lambda line: None).start() == endpoints  # dev up: same endpoints
            seconds = await round_trip(settings, "after")
            print(f"\nafter dev up: a record went through ingest and store in {seconds:.1f} s")
            assert stages.dead() == {}, {name: stages.log_tail(name) for name in stages.dead()}
    finally:
        stop_running(state_dir)
