"""Versioned results and ``ocrstream reprocess`` on the embedded stack: a document read again keeps
its earlier result (``document_versions``, ``GET /v1/documents/{id}?version=N`` and ``/versions``),
its verified text moves to the new regions by box overlap (or stays, never lost), the results
event names the versions; reprocess selects, skips what the same model read, is paced and sends
the stored original again without uploading it."""

from __future__ import annotations

import hashlib
import json
import uuid

import httpx
import pytest

from ocrstream.contracts import events
from ocrstream.ops import reprocess as rp
from ocrstream.storage.db import create_read_pool
from ocrstream.storage.objectstore import ObjectStore
from ocrstream.storage.review import verify_region
from ocrstream.streaming.auth import Authenticator
from services.store.api import create_app
from services.store.stage import StoreStage, iou
from tests.review_data import LINES, recognized_event, render_page
from tests.test_model_promotion import ocrstream
from tests.test_pipeline_e2e import read_topic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
async def stored(stack_settings):
    """A store stage, the object store and a rendered original in it: ``(stage, key, sha, size, boxes)``."""
    stage = StoreStage(stack_settings)
    await stage.setup()
    store = ObjectStore(stack_settings)
    await store.ensure_bucket()
    png, boxes = render_page([text for text, _ in LINES])
    sha = hashlib.sha256(png).hexdigest()
    key = f"originals/{sha[:2]}/{sha}"
    await store.put(key, png, "image/png")
    yield stage, key, sha, len(png), boxes
    await stage.teardown()


def test_iou():
    assert iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0 and iou([0, 0, 10, 10], [20, 0, 30, 10]) == 0.0
    assert iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3) and iou([0, 0, 0, 5], [0, 0, 0, 5]) == 0.0


async def test_a_new_result_keeps_the_old_one_and_the_verified_text(stored, stack_settings):
    stage, key, sha, size, boxes = stored
    doc = f"ver-{uuid.uuid4().hex[:10]}"
    first = await stage.store_done(recognized_event(doc, key, sha, size, boxes, None))
    assert (first.event.result_version, first.event.previous_version) == (1, None)
    ids = dict(await stage.pool.fetch("SELECT region_id, id FROM regions WHERE document_id = $1", doc))
    await verify_region(stage.pool, ids["p0-r0"], "TOTAL RM 12.5O", "alice")
    await verify_region(stage.pool, ids["p0-r0"], "TOTAL RM 12.50", "alice")  # one correction in the history
    await verify_region(stage.pool, ids["p0-r1"], "CASH 20.00", "bob")
    # redelivered: the same version is no new result
    assert await stage.pool.fetchval("SELECT result_version FROM documents WHERE document_id = $1", doc) == 1

    # read again: boxes moved by 2 px, the region ids in another order, line 1 (CASH) no longer found
    moved = [[x0 + 2, y0 + 1, x1 + 2, y1 + 1] for x0, y0, x1, y1 in boxes]
    again = recognized_event(doc, key, sha, size, [moved[3], moved[2], moved[0]], None)
    for region in again.regions:  # p0-r0 is now THANK YOU, p0-r2 is TOTAL
        region.text = {0: "THANK YOU", 1: "CHANGE 7.50", 2: "T0TAL RM 12.50"}[region.order]
        region.char_probs = [0.99] * len(region.text)
    second = await stage.store_done(again)
    assert (second.event.result_version, second.event.previous_version) == (2, 1)

    rows = {r["region_id"]: r for r in await stage.pool.fetch(
        "SELECT region_id, raw_text, verified_text, verified_by FROM regions WHERE document_id = $1", doc)}
    assert (rows["p0-r2"]["raw_text"], rows["p0-r2"]["verified_text"], rows["p0-r2"]["verified_by"]) == \
        ("T0TAL RM 12.50", "TOTAL RM 12.50", "alice")  # carried by box overlap to its new id
    assert rows["p0-r0"]["verified_text"] is None  # THANK YOU took the old id, not the correction
    assert rows["kept-1-p0-r1"]["verified_text"] == "CASH 20.00"  # no match: kept, never lost
    assert set(rows) == {"p0-r0", "p0-r1", "p0-r2", "kept-1-p0-r1"}
    history = await stage.pool.fetch("SELECT region_id, text FROM region_corrections WHERE document_id = $1", doc)
    assert [(h["region_id"], h["text"]) for h in history] == [("p0-r2", "TOTAL RM 12.5O")]  # the history moved too

    api = create_app(await create_read_pool(stack_settings), Authenticator(stack_settings, "127.0.0.1"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as client:
        newest = (await client.get(f"/v1/documents/{doc}")).json()
        old = (await client.get(f"/v1/documents/{doc}", params={"version": 1})).json()
        assert newest["result_version"] == 2 and "THANK YOU" in newest["text"]
        assert old["result_version"] == 1 and old["text"].startswith("#OTAL RM 12.50")
        assert (await client.get(f"/v1/documents/{doc}", params={"version": 2})).json()["text"] == newest["text"]
        versions = (await client.get(f"/v1/documents/{doc}/versions")).json()
        assert [(v["version"], v["current"]) for v in versions] == [(1, False), (2, True)]
        assert (await client.get(f"/v1/documents/{doc}", params={"version": 3})).status_code == 404
        assert (await client.get(f"/v1/documents/{doc}", params={"version": 0})).status_code == 422
        assert (await client.get("/v1/documents/nope/versions")).status_code == 404
        txt = await client.get(f"/v1/documents/{doc}/export", params={"format": "txt", "version": 1})
        assert txt.text.startswith("#OTAL")

    # a third result with the original boxes: both corrections find their lines again, nothing stays kept
    await stage.store_done(recognized_event(doc, key, sha, size, boxes, None))
    assert await stage.pool.fetchval("SELECT count(*) FROM document_versions WHERE document_id = $1", doc) == 2
    rows = dict(await stage.pool.fetch("SELECT region_id, verified_text FROM regions WHERE document_id = $1", doc))
    assert rows == {"p0-r0": "TOTAL RM 12.50", "p0-r1": "CASH 20.00", "p0-r2": None, "p0-r3": None}


async def test_reprocess_selects_skips_the_same_model_and_sends_the_stored_original(stored, stack_settings,
                                                                                     stack_env):
    stage, key, sha, size, boxes = stored
    docs = [f"rep-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    for doc in docs:
        await stage.store_done(recognized_event(doc, key, sha, size, boxes, None))
    now = await rp.current_model(stack_settings, stage.pool)
    await stage.pool.execute("UPDATE documents SET model = $2 WHERE document_id = $1", docs[0], now)  # read by it
    await stage.pool.execute("UPDATE documents SET model = 'ppocr-ft-000000000000' WHERE document_id = $1", docs[1])

    plan = await rp.plan(stack_settings, stage.pool, document=docs[0])
    assert plan.documents == [] and plan.same_model == [docs[0]]
    assert [d["document_id"] for d in (await rp.plan(stack_settings, stage.pool, document=docs[0],
                                                     force=True)).documents] == [docs[0]]
    assert docs[1] in {d["document_id"] for d in (await rp.plan(stack_settings, stage.pool,
                                                                model_not=now)).documents}
    assert docs[0] not in {d["document_id"] for d in (await rp.plan(stack_settings, stage.pool,
                                                                    model_not=now, force=True)).documents}
    with pytest.raises(ValueError):
        await rp.plan(stack_settings, stage.pool)

    dry = ocrstream(stack_env, "reprocess", "--document", docs[1], "--dry-run")
    assert dry.returncode == 0 and f"would read {docs[1]}" in dry.stdout and "1 document(s) would be" in dry.stdout
    assert ocrstream(stack_env, "reprocess").returncode == 2  # nothing named
    assert ocrstream(stack_env, "reprocess", "--all", "--rate", "0").returncode == 2  # the rate bound
    assert ocrstream(stack_env, "reprocess", "--all", "--rate", "1001").returncode == 2
    assert ocrstream(stack_env, "reprocess", "--since", "yesterday").returncode == 2

    sent = ocrstream(stack_env, "reprocess", "--document", docs[1], "--rate", "1000")
    assert sent.returncode == 0, sent.stderr
    records = [r for r in await read_topic(stack_settings, events.INGESTED) if r.key == docs[1].encode()]
    assert len(records) == 1
    event = json.loads(records[0].value)
    assert event["document"]["object_key"] == key and event["document"]["content_sha256"] == sha  # not re-uploaded


async def test_send_refuses_a_rate_outside_its_bounds(stack_settings, stored):
    stage, key, sha, size, _ = stored
    rows = [{"document_id": f"pace-{uuid.uuid4().hex[:8]}", "object_key": key, "content_sha256": sha,
             "size_bytes": size, "filename": None, "source": "cli", "template": None}]
    for rate in (0, -1, rp.MAX_RATE * 2):
        with pytest.raises(ValueError):
            await rp.send(stack_settings, rows, rate=rate)
    assert await rp.send(stack_settings, rows, rate=rp.MAX_RATE) == 1  # exactly the bound
