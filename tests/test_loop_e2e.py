"""The whole loop on the embedded stack, through the commands a user runs (issue 21's goal):
documents in -> regions on the review page (real browser) -> three corrections by keyboard ->
label-export -> a tiny fine-tune -> register -> shadow on new traffic (compare) -> promote (the
running recognize stage switches) -> reprocess -> the new version served, the old one kept, the
verified text kept."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone

import asyncpg
import httpx
import pytest

from ocrstream.ops.launcher import StageProcesses, free_port
from tests.review_data import render_page
from tests.test_pipeline_e2e import wait_http
from tests.test_review_page import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

LINES = ["TOTAL RM 12.50", "CASH 20.00", "CHANGE 7.50"]


def cli(env, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], capture_output=True, text=True, env=env,
                         timeout=timeout)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out


async def until(check, what: str):
    """Poll ``check()`` (async) every half second until it returns a truthy value (bounded by the test's timeout)."""
    while not (found := await check()):
        await asyncio.sleep(0.5)
    return found


@pytest.fixture(scope="module")
def loop_stack(stack_env, tmp_path_factory):
    """The four stages and the query API as processes; recognize follows promotions (polling each second)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (./test.sh installs it as root)")
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"loop-{uuid.uuid4().hex[:6]}", "OCRSTREAM_DEVICE": "cpu",
           "OCRSTREAM_MODEL_CACHE_DIR": str(tmp_path_factory.mktemp("models"))}
    stage_env = {"recognize": {"OCRSTREAM_FOLLOW_PROMOTED_MODEL": "true", "OCRSTREAM_MODEL_POLL_S": "1",
                               "OCRSTREAM_METRICS_PORT": str(free_port())}}
    with StageProcesses(env, tmp_path_factory.mktemp("loop-logs"), stage_env=stage_env) as stages:
        yield stages, env


async def test_review_train_register_shadow_promote_reprocess(loop_stack, stack_settings, tmp_path):
    from playwright.async_api import async_playwright, expect

    stages, env = loop_stack
    started = datetime.now(timezone.utc).isoformat()
    api = f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}"
    await wait_http(f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}/healthz", 300)
    await wait_http(api + "/healthz", 300)

    # 1. documents in, read by the shipped model
    png, _ = render_page(LINES)
    page = tmp_path / "receipt.png"
    page.write_bytes(png)
    out = cli(env, "submit", "--wait", "--timeout", "300", str(page))
    doc = out.stdout.split()[0]
    conn = await asyncpg.connect(stack_settings.dsn)
    try:
        first = await conn.fetchrow("SELECT model, result_version FROM documents WHERE document_id = $1", doc)
        before = first["model"]  # the shipped model, or one an earlier test of the session promoted
        assert before and first["result_version"] == 1

        # 2. the review page in a real browser: three corrections by keyboard
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                tab = await browser.new_page()
                await tab.goto(f"{api}/review?document={doc}&threshold=1")
                await tab.locator("#key").fill("local")  # loopback without keys: any key, reviewer "local"
                await tab.keyboard.press("Enter")
                text = tab.locator("#text")
                for n in range(3):
                    await expect(tab.locator("#progress")).to_contain_text(f"{n + 1} of ")
                    await tab.keyboard.press("Control+A")
                    await tab.keyboard.type(f"{LINES[n].lower()} [checked]")  # unmistakably a person's text
                    await tab.keyboard.press("Enter")
                    await expect(tab.locator("#status")).to_contain_text("saved")
                assert await text.input_value() != ""
            finally:
                await browser.close()
        verified = dict(await conn.fetch("SELECT region_id, verified_text FROM regions WHERE document_id = $1"
                                         " AND verified_text IS NOT NULL", doc))
        assert sorted(verified.values()) == sorted(f"{line.lower()} [checked]" for line in LINES)

        # 3. label-export -> a tiny fine-tune (forced past the gate: three lines) -> register
        cli(env, "model", "label-export", str(tmp_path / "labels"), "--from-store", "--since", started)
        lines = (tmp_path / "labels" / "lines.jsonl").read_text().splitlines()
        assert {json.loads(line)["text"] for line in lines} >= set(verified.values())
        labels = str(tmp_path / "labels" / "lines.jsonl")
        tuned = cli(env, "model", "finetune", str(tmp_path / "tuned"), "--train", labels, "--val", labels,
                    "--max-steps", "2", "--eval-every", "100", "--val-limit", "3", "--batch-size", "3", "--force",
                    timeout=600).stdout
        served = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["int8"]["served"]
        assert f"serves in {'int8' if served else 'fp32'}" in tuned, tuned
        registered = cli(env, "model", "register", str(tmp_path / "tuned")).stdout
        sha = registered.split("registered: ")[1].split()[0]
        model_id = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["id"]

        # 4. shadow on new traffic, compared
        log = open(tmp_path / "shadow.log", "ab")
        shadow = subprocess.Popen([sys.executable, "-m", "ocrstream.cli", "run", "recognize", "--shadow", sha],
                                  env={**env, "OCRSTREAM_METRICS_PORT": str(free_port())}, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        try:
            page2 = tmp_path / "second.png"
            page2.write_bytes(render_page(["SUBTOTAL 9.90", "TAX 0.60"])[0])
            doc2 = cli(env, "submit", "--wait", "--timeout", "300", str(page2)).stdout.split()[0]

            async def shadow_read_it():  # the shadow group starts at the topic's beginning: earlier traffic first
                return await conn.fetchval("SELECT count(*) FROM shadow_readings WHERE sha256 = $1 AND document_id = $2",
                                           sha, doc2)

            assert await until(shadow_read_it, "the shadow's readings of the new document") >= 2
            result = json.loads(cli(env, "model", "compare", sha, "--json").stdout)
            assert result["model_id"] == model_id and result["regions"] >= 2
            assert 0 <= result["agreement"] <= 1 and result["cpu_ms_per_line"] > 0
        finally:
            shadow.terminate()
            shadow.wait(60)

        # 5. promote -> the running recognize stage switches (the refusal without --force of a model
        # that failed the gate: tests/test_model_promotion.py)
        forced = json.loads((tmp_path / "tuned" / "manifest.json").read_text())["metrics"]["gate_forced"]
        cli(env, "model", "promote", sha, *(["--force"] if forced else []))
        recognize_metrics = f"http://127.0.0.1:{stages.stage_env['recognize']['OCRSTREAM_METRICS_PORT']}"

        async def serving() -> bool:
            async with httpx.AsyncClient() as client:
                body = (await client.get(recognize_metrics + "/metrics")).text
            return any(line.startswith("ocrstream_stage_info{") and 'key="model"' in line
                       and f'value="{model_id}"' in line and line.endswith(" 1.0") for line in body.splitlines())

        await until(serving, "recognize serving the promoted model")

        # 6. reprocess: a new version by the promoted model, the old one kept, the corrections kept
        cli(env, "reprocess", "--document", doc, "--rate", "10")

        async def second_version():
            return await conn.fetchrow("SELECT model, result_version FROM documents WHERE document_id = $1"
                                       " AND result_version = 2", doc)

        row = await until(second_version, "the reprocessed result")
        assert row["model"] == model_id
        async with httpx.AsyncClient(base_url=api) as client:
            newest = (await client.get(f"/v1/documents/{doc}")).json()
            old = (await client.get(f"/v1/documents/{doc}", params={"version": 1})).json()
            versions = (await client.get(f"/v1/documents/{doc}/versions")).json()
        assert newest["result_version"] == 2 and newest["model"] == model_id
        assert old["result_version"] == 1 and old["model"] == before != model_id
        assert [(v["version"], v["model"]) for v in versions] == [(1, before), (2, model_id)]
        kept = {r["verified_text"] for r in newest["regions"] if r["verified_text"]}
        assert kept == set(verified.values())
        assert not stages.dead()
    finally:
        await conn.close()
