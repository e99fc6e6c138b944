"""Issue 24: the HTTP door's Idempotency-Key records (``_runtime/idempotency/`` in the bucket) are
kept for ``OCRSTREAM_IDEMPOTENCY_TTL_S`` and then swept, on the embedded stack's real object
store: the sweep keeps a record younger than the bound and deletes one older (crossing it), and
the ingest process sweeps by itself every ``OCRSTREAM_IDEMPOTENCY_SWEEP_INTERVAL_S``."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from ocrstream.ops.launcher import StageProcesses, free_port
from ocrstream.settings import Settings
from ocrstream.storage.objectstore import ObjectStore
from services.ingest.idempotency import PREFIX, IdempotencyKeys
from tests.test_pipeline_e2e import wait_http

pytestmark = pytest.mark.slow


async def test_a_record_is_kept_within_the_bound_and_swept_past_it(stack_settings):
    store = ObjectStore(stack_settings)
    await store.ensure_bucket()
    offset = [0.0]
    keys = IdempotencyKeys(store, ttl_s=5, clock=lambda: time.time() + offset[0])
    old, young = (IdempotencyKeys.scoped("sweep-test", uuid.uuid4().hex) for _ in range(2))
    await keys.remember(old, "f1", {"document_id": "a"})
    await asyncio.sleep(4)
    await keys.remember(young, "f2", {"document_id": "b"})
    await asyncio.sleep(3)  # old: ~7 s, young: ~3 s; swept past 5 + 1 s (the store's times have 1 s steps)

    assert await keys.sweep(store) >= 1
    assert not await store.exists(PREFIX + old) and await keys.recall(old) is None
    assert await store.exists(PREFIX + young) and (await keys.recall(young)).answer == {"document_id": "b"}

    offset[0] = 5.0  # young is now past the bound too
    assert await keys.sweep(store) >= 1
    assert not await store.exists(PREFIX + young)


def test_the_ingest_process_sweeps_by_itself(stack_env, tmp_path):
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": "0",
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"sweep-{uuid.uuid4().hex[:6]}",
           "OCRSTREAM_IDEMPOTENCY_TTL_S": "2", "OCRSTREAM_IDEMPOTENCY_SWEEP_INTERVAL_S": "1"}
    url = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    key = uuid.uuid4().hex
    with StageProcesses(env, tmp_path / "logs", stages=("ingest",)) as stages:
        asyncio.run(wait_http(url + "/healthz"))
        from tests.test_idempotent_uploads import png

        answer = httpx.post(url + "/v1/documents", files={"file": ("s.png", png(7))},
                            headers={"Idempotency-Key": key}, timeout=30)
        assert answer.status_code == 202, answer.text
        record = PREFIX + IdempotencyKeys.scoped(None, key)
        store = ObjectStore(Settings.from_env(env))
        assert asyncio.run(store.exists(record))
        written = time.monotonic()
        while asyncio.run(store.exists(record)):
            assert time.monotonic() - written < 15, stages.log_tail("ingest")
            time.sleep(0.5)
        gone_after = time.monotonic() - written
    assert gone_after >= 2.0  # kept for the retention time at least
    print(f"\nrecord swept {gone_after:.1f} s after it was written (TTL 2 s, sweep every 1 s)")
