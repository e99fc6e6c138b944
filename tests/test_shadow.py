"""A candidate model in shadow (services/recognize/shadow.py, ``ocrstream model compare``) on the
embedded stack: it reads the same regions as the live recognize stage into ``shadow_readings``,
never into events or results; compare prints agreement, CER against verified text, CPU per line
and regions compared; ``ocrstream status`` shows its consumer group and lag."""

from __future__ import annotations

import json
import uuid

import pytest

from ocrstream.storage.crops import pack_crops, page_crops_key
from ocrstream.storage.models import register_model
from ocrstream.storage.objectstore import ObjectStore
from services.recognize.shadow import ShadowStage
from services.recognize.stage import RecognizeStage
from services.store.stage import StoreStage
from tests.test_crops import regions_record
from tests.test_model_promotion import line_crops, loadable_model, ocrstream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


async def test_a_shadow_reads_live_regions_into_its_table_and_compare_sets_them_against_the_live_model(
        stack_settings, stack_env, tmp_path):
    settings = stack_settings.model_copy(update={"device": "cpu", "model_cache_dir": str(tmp_path / "cache")})
    model_id = loadable_model(tmp_path / "cand", f"shadow {uuid.uuid4().hex}", passed=True)
    candidate = await register_model(settings, tmp_path / "cand")
    store = ObjectStore(settings)
    data, spans = pack_crops(line_crops())
    docs = [f"shadow-{uuid.uuid4().hex[:10]}" for _ in range(3)]
    for doc in docs:
        await store.put(page_crops_key(doc, 0), data)
    records = [regions_record(doc, page_crops_key(doc, 0), spans) for doc in docs]
    gone = regions_record(f"shadow-gone-{uuid.uuid4().hex[:8]}", "crops/none/p0000.crops", spans)

    # the live model reads and the store keeps the first two documents; a person verifies one line
    live, sink = RecognizeStage(settings), StoreStage(settings)
    await live.setup()
    await sink.setup()
    try:
        for outputs in await live.handle_batch(records[:2]):
            await sink.store_done(outputs[0].event)
        await sink.pool.execute("UPDATE regions SET verified_text = 'TOTAL 12.50', verified_at = now()"
                                " WHERE document_id = $1 AND region_id = 'p0-r0'", docs[0])

        shadow = ShadowStage(settings, candidate.sha256)
        assert shadow.consumer_group() == f"{settings.consumer_group_prefix}-recognize-shadow-{candidate.sha256[:12]}"
        await shadow.setup()
        try:
            results = await shadow.handle_batch([*records, gone])
            assert results == [[], [], [], []]  # no event of any kind: not even a dead letter for the missing crops
            status = ocrstream(stack_env, "status", "--json")  # while it runs: its group and lag
            stages = {s["name"]: s for s in json.loads(status.stdout)["stages"]}
            mine = stages[f"recognize-shadow-{candidate.sha256[:12]}"]
            assert mine["group"] == shadow.consumer_group() and mine["consumes"] == ["ocr.regions.v1"]
            assert mine["lag"] is not None and mine["lag"] >= 0  # the group never committed: behind by the whole topic
        finally:
            await shadow.teardown()
        status = ocrstream(stack_env, "status", "--json")  # stopped: no longer listed
        assert f"recognize-shadow-{candidate.sha256[:12]}" not in {s["name"] for s in json.loads(status.stdout)["stages"]}
        rows = await sink.pool.fetch("SELECT document_id, region_id, text, cpu_ms FROM shadow_readings"
                                     " WHERE sha256 = $1 ORDER BY document_id, region_id", candidate.sha256)
        assert len(rows) == 6 and {r["text"] for r in rows} == {"TOTAL 12.50", "CASH 20.00"}
        assert all(r["cpu_ms"] > 0 for r in rows)
        assert await sink.pool.fetchval("SELECT count(*) FROM documents WHERE document_id = $1", docs[2]) == 0
    finally:
        await live.teardown()
        await sink.teardown()

    compared = ocrstream(stack_env, "model", "compare", candidate.sha256[:12], "--json")
    assert compared.returncode == 0, compared.stderr
    result = json.loads(compared.stdout)
    assert (result["model_id"], result["regions"], result["shadow_only"]) == (model_id, 4, 2)
    assert result["agreement"] == 1.0  # the same weights as the live model
    assert (result["verified"], result["cer_ci_shadow"], result["cer_ci_live"]) == (1, 0.0, 0.0)
    assert result["cpu_ms_per_line"] > 0
    table = ocrstream(stack_env, "model", "compare", model_id).stdout
    assert "regions compared      4 (+2 not stored yet)" in table and "agreement             100.00%" in table

