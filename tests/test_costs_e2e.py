"""What each document cost, through the four stage processes and the query API on the embedded stack.

A document submitted at the HTTP door with an API key (the tenant) and one through the CLI door
arrive with a ``costs`` entry of every stage in their results events (in stage order, CPU > 0
where the work is); the store keeps their sums in ``document_costs``; the query API shows them;
the store's ``/metrics`` counts pages and CPU seconds by API key and door; ``ocrstream usage``
prints them per key and per door. A document that fails in preprocess still carries what ingest
and the store spent.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ocrstream.contracts.event_models import UNSET
from ocrstream.ops.launcher import PROCESSES, StageProcesses, free_port
from ocrstream.streaming.auth import create_key
from ocrstream.streaming.results import wait_for_results
from tests.test_pipeline_e2e import wait_http
from tools.render_samples import encode, render_page

pytestmark = pytest.mark.slow

STAGE_ORDER = ["ingest", "preprocess", "recognize", "store"]


@pytest.fixture(scope="module")
def cost_pipeline(stack_env, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.jsonl"
    token = create_key(keys, "tenant-a", ("ingest", "query"))
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
           "OCRSTREAM_API_KEYS_FILE": str(keys), "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"cost-{uuid.uuid4().hex[:6]}"}
    ports = {stage: {"OCRSTREAM_METRICS_PORT": str(free_port())} for stage in PROCESSES}
    with StageProcesses(env, tmp_path_factory.mktemp("cost-logs"), stage_env=ports) as stages:
        yield stages, env, token, ports


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], env=env, capture_output=True,
                          text=True, timeout=300)


async def test_every_stage_adds_its_cost_and_the_store_the_api_metrics_and_usage_show_them(
        cost_pipeline, stack_settings, tmp_path):
    _, env, token, ports = cost_pipeline
    api, query = (f"http://127.0.0.1:{env[k]}" for k in ("OCRSTREAM_HTTP_PORT", "OCRSTREAM_QUERY_PORT"))
    auth = {"Authorization": f"Bearer {token}"}
    await wait_http(api + "/healthz", 120)
    good = encode(render_page(["COSTS 2503", "TOTAL 12.50"], size=28))
    jpeg = encode(render_page(["truncated"], size=30), "JPEG", quality=90)
    ids: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        for name, data in (("http.png", good), ("failed.jpg", jpeg[: len(jpeg) // 2])):
            resp = await client.post(api + "/v1/documents", files={"file": (name, data)}, headers=auth)
            assert resp.status_code == 202, resp.text
            ids[name] = resp.json()["document_id"]
    (tmp_path / "cli.png").write_bytes(encode(render_page(["CLI COSTS 77"], size=28)))
    out = await asyncio.to_thread(cli, env, "submit", "--via", "kafka", str(tmp_path / "cli.png"))
    assert out.returncode == 0, out.stdout + out.stderr
    ids["cli.png"] = re.search(r"\b([0-9a-f]{32})\b", out.stdout).group(1)
    results = await wait_for_results(stack_settings, list(ids.values()), timeout_s=300)

    print("\n| document | stage | CPU-s | wall-s | bytes in | bytes out |\n|---|---|---|---|---|---|")
    for name in ("http.png", "cli.png"):
        event = results[ids[name]]
        assert event.status == "done"
        assert [c.stage for c in event.costs] == STAGE_ORDER
        for c in event.costs:
            print(f"| {name} | {c.stage} | {c.cpu_s:.4f} | {c.wall_s:.4f} | {c.bytes_in} | {c.bytes_out} |")
            assert c.wall_s > 0 and c.cpu_s >= 0
        by_stage = {c.stage: c for c in event.costs}
        assert by_stage["preprocess"].cpu_s > 0.01 and by_stage["recognize"].cpu_s > 0.001  # detection, recognition
        assert by_stage["preprocess"].bytes_in >= event.document.size_bytes  # the original was read
        assert by_stage["preprocess"].bytes_out > 0 and by_stage["recognize"].bytes_in > 0  # crop packs
    assert results[ids["http.png"]].document.api_key == "tenant-a"
    assert results[ids["cli.png"]].document.api_key is UNSET  # no key at the CLI door
    failed = results[ids["failed.jpg"]]
    assert failed.status == "failed" and [c.stage for c in failed.costs] == ["ingest", "store"]

    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        rows = {r["document_id"]: r for r in await conn.fetch(
            "SELECT * FROM document_costs WHERE document_id = ANY($1::text[])", list(ids.values()))}
    finally:
        await conn.close()
    assert set(rows) == set(ids.values())
    http_row = rows[ids["http.png"]]
    assert http_row["api_key"] == "tenant-a" and http_row["door"] == "http" and http_row["pages"] == 1
    assert http_row["cpu_s"] == pytest.approx(sum(c.cpu_s for c in results[ids["http.png"]].costs), abs=1e-3)
    assert rows[ids["cli.png"]]["api_key"] is None and rows[ids["cli.png"]]["door"] == "cli"
    assert rows[ids["failed.jpg"]]["status"] == "failed" and rows[ids["failed.jpg"]]["pages"] == 0

    await wait_http(query + "/healthz", 60)
    async with httpx.AsyncClient(timeout=30) as client:
        doc = (await client.get(f"{query}/v1/documents/{ids['http.png']}", headers=auth)).json()
    assert [s["stage"] for s in doc["costs"]["stages"]] == STAGE_ORDER
    assert doc["costs"]["cpu_s"] == pytest.approx(http_row["cpu_s"])

    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"http://127.0.0.1:{ports['store']['OCRSTREAM_METRICS_PORT']}/metrics")).text
    metrics = [s for family in text_string_to_metric_families(text) for s in family.samples]
    pages = {(s.labels["api_key"], s.labels["door"]): s.value for s in metrics
             if s.name == "ocrstream_tenant_pages_total"}
    cpu = {(s.labels["api_key"], s.labels["door"]): s.value for s in metrics
           if s.name == "ocrstream_tenant_cpu_seconds_total"}
    assert pages[("tenant-a", "http")] >= 1 and pages[("none", "cli")] >= 1
    assert cpu[("tenant-a", "http")] >= http_row["cpu_s"] - 1e-3

    by_key = await asyncio.to_thread(cli, env, "usage", "--since", "1h", "--by", "key")
    assert by_key.returncode == 0, by_key.stderr
    print(by_key.stdout)
    assert re.search(r"^\| tenant-a \| \d+ \| \d+ \| [\d.]+ \|", by_key.stdout, re.M), by_key.stdout
    by_door = await asyncio.to_thread(cli, env, "usage", "--since", "1h", "--by", "door")
    assert re.search(r"^\| http \|", by_door.stdout, re.M) and re.search(r"^\| cli \|", by_door.stdout, re.M)
