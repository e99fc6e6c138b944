"""Health probes of the running stages (the shared end-to-end pipeline): /healthz while alive,
/readyz 503 while S3 or PostgreSQL hangs (the embedded server frozen with SIGSTOP) and 200
again once it is back; and the readiness rules (poll age, stuck retries) on their own."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from services.core import health, metrics
from services.core.settings import Settings
from services.launcher import STAGES

pytestmark = pytest.mark.slow


def url(pipeline, stage: str, path: str) -> str:
    stages, _ = pipeline
    return f"http://127.0.0.1:{stages.stage_env[stage]['OCRSTREAM_METRICS_PORT']}{path}"


async def wait_status(client: httpx.AsyncClient, target: str, status: int, timeout_s: float = 240) -> dict:
    """Poll ``target`` until it answers ``status``; its JSON body."""
    last = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            resp = await client.get(target, timeout=5)
            last = resp.status_code, resp.text
            if resp.status_code == status:
                return resp.json()
        except httpx.TransportError as exc:
            last = repr(exc)
        await asyncio.sleep(0.5)
    raise AssertionError(f"{target} never answered {status}; last: {last}")


async def test_every_stage_is_alive_and_ready(pipeline):
    async with httpx.AsyncClient() as client:
        for stage in STAGES:
            assert (await wait_status(client, url(pipeline, stage, "/healthz"), 200))["ok"] is True
            body = await wait_status(client, url(pipeline, stage, "/readyz"), 200)
            assert body["ready"] and body["checks"]["kafka"]["ok"] and body["checks"]["poll"]["ok"], body
        store = (await client.get(url(pipeline, "store", "/readyz"))).json()["checks"]
        assert set(store) == {"kafka", "postgres", "poll", "retries"}
        ingest = (await client.get(url(pipeline, "ingest", "/readyz"))).json()["checks"]
        assert set(ingest) == {"kafka", "s3", "poll", "retries"}


@pytest.mark.parametrize(("server", "stage", "check", "unaffected"),
                         [("s3", "preprocess", "s3", "store"), ("postgres", "store", "postgres", "preprocess")])
async def test_readyz_fails_while_a_dependency_is_down(pipeline, embedded_stack, server, stage, check, unaffected):
    async with httpx.AsyncClient() as client:
        await wait_status(client, url(pipeline, stage, "/readyz"), 200)
        embedded_stack.pause(server)
        try:
            body = await wait_status(client, url(pipeline, stage, "/readyz"), 503, timeout_s=30)
            assert body["checks"][check]["ok"] is False and not body["ready"], body
            assert (await client.get(url(pipeline, stage, "/healthz"))).status_code == 200  # alive
            assert (await client.get(url(pipeline, unaffected, "/readyz"))).status_code == 200
        finally:
            embedded_stack.resume(server)
        body = await wait_status(client, url(pipeline, stage, "/readyz"), 200, timeout_s=60)
        assert body["checks"][check]["ok"] is True


def test_readiness_needs_a_recent_poll_and_no_endless_retries():
    state = health.Health()
    state.configure("recognize", Settings(health_max_poll_age_s=30, health_max_retry_s=60))
    state.checks = {name: health.Check(True, "ok") for name in state.needs}
    assert state.readiness()[0] is False  # never polled
    state.mark_poll()
    assert state.readiness()[0] is True
    state.last_poll = time.time() - 31
    ready, report = state.readiness()
    assert not ready and not report["poll"]["ok"]
    state.mark_poll()

    metrics.RETRIES.labels("recognize", "ConnectionError").inc()
    state._track_retries()  # retries grew, no commit: retrying since now
    assert state.readiness()[0] is True
    state.retrying_since -= 61
    ready, report = state.readiness()
    assert not ready and "retrying without a commit" in report["retries"]["detail"]
    metrics.RETRIES.labels("recognize", "ConnectionError").inc()
    metrics.mark_commit("recognize")
    state._track_retries()  # a commit happened: progress
    assert state.readiness()[0] is True
