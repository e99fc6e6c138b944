"""One trace per document through the four stage processes, received by a real OTLP/HTTP receiver.

The stages run as in production (``python -m ocrstream.cli run STAGE``, tests/conftest.py's way)
on the embedded stack with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at :class:`tools.otlp_receiver.OtlpReceiver`:
an HTTP server that decodes each ``POST /v1/traces`` body as the protobuf
``ExportTraceServiceRequest`` (``opentelemetry-proto``) and answers as a collector does. A document
submitted at the HTTP door with the caller's ``traceparent`` gives one trace (the caller's) with the
door's span, one span per stage, each the parent of the next, and the stages' child spans; a
document that fails in preprocess gives one trace whose dead letter reaches the store's span.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Iterator

import httpx
import pytest

from ocrstream.ops.launcher import STAGES, StageProcesses, free_port
from ocrstream.streaming.results import wait_for_results
from tests.test_pipeline_e2e import wait_http
from tools.otlp_receiver import OtlpReceiver
from tools.render_samples import encode, render_page

pytestmark = pytest.mark.slow

#: How long the spans of a finished document may take to reach the receiver (the stages export
#: every 200 ms here; a bound, not a speed check).
SPANS_WAIT_S = 120


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced_pipeline(stack_env, receiver, tmp_path_factory):
    """The four stages as processes exporting traces to ``receiver`` every 200 ms: the env."""
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": "0",
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"trace-{uuid.uuid4().hex[:6]}",
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    env.pop("OTEL_SERVICE_NAME", None)
    with StageProcesses(env, tmp_path_factory.mktemp("trace-logs"), stages=STAGES) as stages:
        yield stages, env


async def wait_spans(receiver: OtlpReceiver, trace_id: str, names: set[str]) -> list[dict]:
    """The spans of ``trace_id`` once every name in ``names`` was received (bounded wait)."""
    for _ in range(SPANS_WAIT_S * 10):
        spans = receiver.trace(trace_id)
        if names <= {s["name"] for s in spans}:
            return spans
        await asyncio.sleep(0.1)
    raise AssertionError(f"trace {trace_id}: got {sorted({s['name'] for s in receiver.trace(trace_id)})}, "
                         f"expected {sorted(names)}")


def span_table(spans: list[dict]) -> str:
    """The spans of one trace as a table, parents before children, times in ms from the first."""
    t0 = min(s["start"] for s in spans)
    names = {s["span_id"]: s["name"] for s in spans}
    rows = ["| span | service | parent | start ms | duration ms | attributes |", "|---|---|---|---|---|---|"]
    for s in sorted(spans, key=lambda s: s["start"]):
        attrs = {k: v for k, v in s["attributes"].items() if k.startswith(("ocrstream.", "error."))
                 and k not in ("ocrstream.stage",)}
        shown = ", ".join(f"{k.removeprefix('ocrstream.')}={v}" for k, v in sorted(attrs.items()))
        rows.append(f"| {s['name']} | {s['service']} | {names.get(s['parent'], s['parent'] or '-')} "
                    f"| {(s['start'] - t0) / 1e6:.1f} | {(s['end'] - s['start']) / 1e6:.1f} | {shown} |")
    return "\n".join(rows)


def one(spans: list[dict], name: str) -> dict:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, found)
    return found[0]


STAGE_SPANS = {"ingest submit", "preprocess", "recognize", "store"}
CHILDREN = {"decode": "preprocess", "cleanup": "preprocess", "detection": "preprocess", "crop": "preprocess",
            "recognition": "recognize", "postprocess": "store", "db write": "store"}


async def test_one_trace_per_document_across_the_four_stages(traced_pipeline, stack_settings, receiver):
    _, env = traced_pipeline
    api = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
    await wait_http(api + "/healthz", 120)
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    good = encode(render_page(["TRACE ME 2501", "ONE TRACE PER DOCUMENT"], size=28))
    jpeg = encode(render_page(["truncated page"], size=30), "JPEG", quality=90)
    async with httpx.AsyncClient() as client:
        resp = await client.post(api + "/v1/documents", files={"file": ("traced.png", good)},
                                 headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"})
        assert resp.status_code == 202, resp.text
        doc_id = resp.json()["document_id"]
        bad = await client.post(api + "/v1/documents", files={"file": ("truncated.jpg", jpeg[: len(jpeg) // 2])})
        assert bad.status_code == 202, bad.text
        bad_id = bad.json()["document_id"]
    results = await wait_for_results(stack_settings, [doc_id, bad_id], timeout_s=300)
    assert results[doc_id].status == "done" and results[bad_id].status == "failed"

    # The good document: the caller's trace, the door's span, a span per stage, each the parent of the next.
    spans = await wait_spans(receiver, caller_trace, STAGE_SPANS | set(CHILDREN))
    print(f"\ntrace {caller_trace} (document {doc_id}):\n{span_table(spans)}")
    door, pre, rec, store = (one(spans, n) for n in ("ingest submit", "preprocess", "recognize", "store"))
    by_id = {s["span_id"]: s for s in spans}
    # the door's span descends from the caller's, through FastAPI's own server spans if any
    # (``POST /v1/documents`` > ``fastapi.endpoint``, FastAPI's native OpenTelemetry support)
    chain = []
    parent = door["parent"]
    while parent in by_id:
        chain.append(by_id[parent]["name"])
        parent = by_id[parent]["parent"]
    assert parent == caller_span and set(chain) <= {"fastapi.endpoint", "POST /v1/documents"}, chain
    assert pre["parent"] == door["span_id"] and rec["parent"] == pre["span_id"] and store["parent"] == rec["span_id"]
    assert [s["service"] for s in (door, pre, rec, store)] == [
        "ocrstream-ingest", "ocrstream-preprocess", "ocrstream-recognize", "ocrstream-store"]
    for s in (door, pre, rec, store):
        assert s["attributes"]["ocrstream.document_id"] == doc_id
    assert pre["attributes"]["ocrstream.pages"] == 1 and pre["attributes"]["ocrstream.regions"] >= 2
    assert rec["attributes"]["ocrstream.model"] and store["attributes"]["ocrstream.status"] == "done"
    for s in spans:
        if s["name"] in CHILDREN:
            assert by_id[s["parent"]]["name"] == CHILDREN[s["name"]], s
    assert all(s["status"] != 2 for s in spans)  # STATUS_CODE_ERROR

    # The failed document: a trace started at the door, failed in preprocess, its dead letter stored.
    bad_door = next(s for s in receiver.spans if s["name"] == "ingest submit"
                    and s["attributes"].get("ocrstream.document_id") == bad_id)
    failed = await wait_spans(receiver, bad_door["trace_id"], {"ingest submit", "preprocess", "store", "db write"})
    print(f"\ntrace {bad_door['trace_id']} (document {bad_id}, failed):\n{span_table(failed)}")
    roots = [s for s in failed if s["parent"] is None]  # a new trace, started at the door
    assert len(roots) == 1 and roots[0]["service"] == "ocrstream-ingest" and bad_door["trace_id"] != caller_trace
    pre, store = one(failed, "preprocess"), one(failed, "store")
    assert pre["parent"] == bad_door["span_id"] and store["parent"] == pre["span_id"]
    assert pre["status"] == 2 and pre["attributes"]["error.type"] == "TruncatedImageError"
    assert store["attributes"]["ocrstream.status"] == "failed"
    assert store["attributes"]["messaging.destination.name"] == "ocr.dlq.v1"
    assert "recognize" not in {s["name"] for s in failed}
