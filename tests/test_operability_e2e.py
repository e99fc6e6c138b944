"""Operability end to end, on one pipeline (the four stages as processes on the real embedded
stack):

* health probes: /healthz while alive, /readyz 503 while S3 or PostgreSQL hangs (the embedded
  server frozen with SIGSTOP) and 200 again once it is back;
* a real Prometheus (Debian's package) scrapes the stages and the lag exporter with the alert
  rules of deploy/prometheus loaded; after documents went through every door, every dashboard
  expression must return data and every metric an alert rule reads must exist. Run with ``-s``
  to print each expression and how many series it returned (the table of the issue's note):
  ``.venv/bin/python -m pytest tests/test_operability_e2e.py -s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from ocrstream.client.client import submit_all
from ocrstream.ops.launcher import STAGES, free_port
from ocrstream.streaming.results import wait_for_results
from services.ingest.stage import raw_key_document_id
from tests.promql import selectors
from tests.test_pipeline_e2e import render, submit_raw

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
async def test_readyz_fails_while_a_dependency_is_down(pipeline, embedded_stack, server, stage, check,
                                                       unaffected):
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


# ---------------------------------------------------------------- Prometheus

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "10m", "$stage": ".*"}


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


@pytest.fixture(scope="module")
def lag_exporter(pipeline, tmp_path_factory):
    """``ocrstream lag-exporter`` for the pipeline's consumer groups: its metrics port."""
    _, env = pipeline
    port = free_port()
    log = open(tmp_path_factory.mktemp("lag") / "lag-exporter.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "ocrstream.cli", "lag-exporter", "--port", str(port)],
                            env={**env, "OCRSTREAM_LAG_EXPORTER_INTERVAL_S": "1"}, stdout=log,
                            stderr=subprocess.STDOUT)
    yield port
    proc.terminate()
    proc.wait(20)
    log.close()


@pytest.fixture(scope="module")
def prometheus(pipeline, lag_exporter):
    """A Prometheus scraping every stage (job ocrstream, label service) each second: its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed: apt-get install prometheus (Debian; test.sh does it as root)")
    stages, _ = pipeline
    # not under pytest's basetemp: concurrent pytest sessions of the same user prune old basetemps
    work = Path(tempfile.mkdtemp(prefix="ocrstream-prometheus-"))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(DEPLOY / "prometheus/alerts.yml")],
        "scrape_configs": [
            {"job_name": "ocrstream", "static_configs": [
                {"targets": [f"127.0.0.1:{stages.stage_env[s]['OCRSTREAM_METRICS_PORT']}"], "labels": {"service": s}}
                for s in STAGES]},
            {"job_name": "ocrstream-lag", "static_configs": [{"targets": [f"127.0.0.1:{lag_exporter}"]}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(work / "prometheus.log", "wb")
    proc = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError((work / "prometheus.log").read_text()[-3000:])
        for _ in range(300):  # ready is not scraping: targets are applied a few seconds later
            up = httpx.get(base + "/api/v1/query", params={"query": "up"}, timeout=5).json()["data"]["result"]
            if len(up) == len(STAGES) + 1:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"not every target scraped: {up}")
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


async def query(client: httpx.AsyncClient, base: str, expr: str) -> list:
    resp = await client.get(base + "/api/v1/query", params={"query": expr})
    body = resp.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


async def traffic(pipeline, settings) -> None:
    """Documents through all three doors, one rejected at ingest, one failing in preprocess."""
    _, env = pipeline
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    ids = []
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                if (await client.get(api + "/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.2)
        page = render("p.png", ["PROMETHEUS HTTP 5"])
        resp = await client.post(api + "/v1/documents", files={"file": ("p.png", page)})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["document_id"])
        empty = await client.post(api + "/v1/documents", files={"file": ("e.png", b"")})
        assert empty.status_code == 400  # refused at the door: counted, no document
    page = render("raw.png", ["PROMETHEUS RAW 6"])
    for key, data in ((f"prom-{uuid.uuid4().hex[:8]}", page), (f"prom-empty-{uuid.uuid4().hex[:8]}", b"")):
        await submit_raw(settings, data, key)  # the empty one fails at ingest: a dead letter
        ids.append(raw_key_document_id(key, hashlib.sha256(data).hexdigest()))
    return ids


async def test_dashboard_and_alert_expressions_return_data(pipeline, prometheus, stack_settings, tmp_path):
    ids = await traffic(pipeline, stack_settings)
    jpeg = render("t.jpg", ["truncated"])
    (tmp_path / "cli.png").write_bytes(render("cli.png", ["PROMETHEUS CLI 7"]))
    (tmp_path / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    receipts = await submit_all(stack_settings, [tmp_path / "cli.png", tmp_path / "broken.jpg"])
    ids += [r.document_id for r in receipts]
    results = await wait_for_results(stack_settings, ids, timeout_s=600)
    assert sorted(r.status for r in results.values()) == ["done"] * 3 + ["failed"] * 2

    board = json.loads((DEPLOY / "grafana/dashboards/ocrstream.json").read_text())
    rules = [r for g in yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())["groups"] for r in g["rules"]]
    report, empty = [], []
    async with httpx.AsyncClient(timeout=10) as client:
        # every scrape target up and the e2e latency of the documents above scraped
        for _ in range(120):
            up = await query(client, prometheus, 'up{job=~"ocrstream|ocrstream-lag"} == 1')
            stored = await query(client, prometheus, 'sum(rate(ocrstream_end_to_end_seconds_count[1m])) > 0')
            lag = await query(client, prometheus, "count by (stage) (ocrstream_group_lag)")
            # every door's documents scraped (other documents, e.g. earlier tests' bucket drops, can
            # make `stored` true first)
            doors = {r["metric"]["door"] for r in await _doors(prometheus)}
            if len(up) == 5 and stored and len(lag) == 4 and doors >= {"http", "kafka", "cli"}:
                break
            await asyncio.sleep(1)
        if not (len(up) == 5 and stored and len(lag) == 4):
            stages, _ = pipeline
            scraped = (await client.get(url(pipeline, "store", "/metrics"))).text
            raw = await query(client, prometheus, "ocrstream_end_to_end_seconds_count[3m]")
            raise AssertionError((stored, lag, stages.dead(), [line for line in scraped.splitlines()
                                  if line.startswith("ocrstream_end_to_end_seconds_count")], raw))

        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = grafana_to_promql(target["expr"])
                n = len(await query(client, prometheus, expr))
                report.append(("panel", panel["title"], target["legendFormat"], expr, n))
                if n == 0:
                    empty.append(expr)
        for rule in rules:
            expr = rule["expr"]
            n = len(await query(client, prometheus, expr))  # evaluates; firing or not
            report.append(("alert", rule["alert"], "firing now" if n else "not firing", " ".join(expr.split()), n))
            for selector in selectors(expr):
                n = len(await query(client, prometheus, selector))
                report.append(("alert", rule["alert"], "selector", selector, n))
                if n == 0:
                    empty.append(selector)
        for series in await query(client, prometheus, "ocrstream_group_lag > 0 or ocrstream_consumer_lag > 0"):
            print("lag > 0 (a refresh between a stage's publication and its commit):", series["metric"],
                  series["value"][1])
        loaded = (await client.get(prometheus + "/api/v1/rules")).json()["data"]["groups"]
        bad_rules = [(r["name"], r.get("lastError")) for g in loaded for r in g["rules"] if r["health"] == "err"]

    for kind, name, what, expr, n in report:
        print(f"{kind:5} | {name} | {what} | {expr} | {n} series")
    assert not empty, f"expressions without data: {empty}"
    assert len(loaded) == 3 and not bad_rules, bad_rules
    # every door's documents reached the store's end-to-end histogram
    assert {r["metric"]["door"] for r in await _doors(prometheus)} >= {"http", "kafka", "cli"}


async def _doors(base: str) -> list:
    async with httpx.AsyncClient(timeout=10) as client:
        return await query(client, base, "sum by (door) (ocrstream_end_to_end_seconds_count) > 0")
