"""Trace context through the stage runtime and the HTTP door (ocrstream/streaming/tracing.py), on
fakes with the OpenTelemetry SDK's in-memory exporter: one span per record with the record's
``traceparent`` as parent, its context in the headers of every output and dead letter, child
spans, failures; and, with tracing off, the caller's context passed on unchanged within its bounds.

The same through the four stage processes against a real OTLP/HTTP receiver: tests/test_tracing_e2e.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ocrstream.errors import NotAnImageError
from ocrstream.streaming import tracing
from ocrstream.streaming.stage import Output

from .fakes import OUT_TOPIC, RawOutput, ScriptedStage, record

pytestmark = pytest.mark.unit

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01".encode()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, every ended span in the returned exporter; off afterwards."""
    exporter = InMemorySpanExporter()
    assert tracing.configure("unit", {}, exporter=exporter, batch=False, set_global=False)
    yield exporter
    tracing.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        found.setdefault(s.name, []).append(s)
    return found


def trace_header(headers: list[tuple[str, bytes]]) -> tuple[str, str]:
    """(trace id, parent span id) of a ``traceparent`` header among ``headers``."""
    (value,) = [v for k, v in headers if k == tracing.TRACEPARENT]
    _, trace_id, span_id, _ = value.decode().split("-")
    return trace_id, span_id


class ChildStage(ScriptedStage):
    """A scripted stage whose handling opens a child span ``step``."""

    async def handle(self, record):
        async with tracing.span("step", {"offset": record.offset}):
            return await super().handle(record)


def test_tracing_is_off_unless_the_sdk_variables_name_an_endpoint():
    assert not tracing.endpoint_configured({})
    assert tracing.endpoint_configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.endpoint_configured({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    on = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not tracing.endpoint_configured({**on, "OTEL_SDK_DISABLED": "true"})
    assert not tracing.endpoint_configured({**on, "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.configure("unit", {}) and not tracing.enabled()


async def test_each_record_gets_a_stage_span_continuing_its_trace_and_its_outputs_carry_it(harness, spans):
    h = harness(ChildStage)
    await h.runner.deliver([record(0, headers=((tracing.TRACEPARENT, PARENT),)), record(1)], asyncio.Event())
    found = by_name(spans)
    stage_spans = {s.attributes["ocrstream.document_id"]: s for s in found["unit"]}
    continued, started = stage_spans["doc-0"], stage_spans["doc-1"]
    assert continued.kind == SpanKind.CONSUMER
    assert format(continued.context.trace_id, "032x") == TRACE_ID
    assert format(continued.parent.span_id, "016x") == PARENT_ID
    assert started.parent is None and started.context.trace_id != continued.context.trace_id  # a new trace
    assert continued.attributes["messaging.destination.name"] == "ocr.ingested.v1"
    assert continued.attributes["messaging.kafka.offset"] == 0
    # the child span of the handling has the record's stage span as parent
    steps = {s.attributes["offset"]: s for s in found["step"]}
    assert steps[0].parent.span_id == continued.context.span_id
    assert steps[1].parent.span_id == started.context.span_id
    # every output carries its record's stage span as traceparent
    sent = {key: headers for topic, key, headers in h.producer.headers if topic == OUT_TOPIC}
    assert trace_header(sent["doc-0"]) == (TRACE_ID, format(continued.context.span_id, "016x"))
    assert trace_header(sent["doc-1"])[1] == format(started.context.span_id, "016x")


async def test_a_failure_marks_the_span_and_its_dead_letter_carries_the_trace(harness, spans):
    h = harness(lambda s: ScriptedStage(s, {0: [NotAnImageError("not an image")]}))
    await h.runner.deliver([record(0, headers=((tracing.TRACEPARENT, PARENT),))], asyncio.Event())
    (failed,) = by_name(spans)["unit"]
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == "NotAnImageError"
    (dead,) = [headers for topic, _, headers in h.producer.headers if topic == "ocr.dlq.v1"]
    assert trace_header(dead) == (TRACE_ID, format(failed.context.span_id, "016x"))


def test_child_spans_replay_timed_phases_under_the_current_span(spans):
    with tracing.span("preprocess") as parent:
        tracing.add_phases([("decode", 1_000, 2_000), ("detection", 2_000, 5_000)], {"ocrstream.page_index": 0})
    found = by_name(spans)
    decode, detection = found["decode"][0], found["detection"][0]
    assert parent is not None and decode.parent.span_id == parent.get_span_context().span_id
    assert (decode.start_time, decode.end_time, detection.end_time) == (1_000, 2_000, 5_000)
    assert detection.attributes["ocrstream.page_index"] == 0


def test_an_exception_leaving_a_span_marks_it_failed_and_propagates(spans):
    with pytest.raises(NotAnImageError), tracing.span("db write"):
        raise NotAnImageError("x")
    (s,) = by_name(spans)["db write"]
    assert s.status.status_code == StatusCode.ERROR and s.attributes["error.type"] == "NotAnImageError"


async def test_off_a_stage_passes_the_trace_headers_on_unchanged(harness):
    assert not tracing.enabled()
    h = harness(ScriptedStage)
    state = b"vendor=" + b"x" * (tracing.MAX_TRACESTATE_BYTES - 7)  # exactly the bound: kept
    await h.runner.deliver([record(0, headers=((tracing.TRACEPARENT, PARENT), (tracing.TRACESTATE, state))),
                            record(1, headers=((tracing.TRACEPARENT, PARENT), (tracing.TRACESTATE, state + b"x"))),
                            record(2, headers=((tracing.TRACEPARENT, b"00-not-a-trace-01"),)),
                            record(3)], asyncio.Event())
    sent = {key: headers for topic, key, headers in h.producer.headers}
    assert sent["doc-0"] == [(tracing.TRACEPARENT, PARENT), (tracing.TRACESTATE, state)]
    assert sent["doc-1"] == [(tracing.TRACEPARENT, PARENT)]  # one byte over: tracestate dropped
    assert sent["doc-2"] == [] and sent["doc-3"] == []  # malformed or none: nothing passed on


@pytest.mark.parametrize("value, valid", [
    (PARENT, True), (f"00-{'0' * 32}-{PARENT_ID}-01".encode(), False), (f"00-{TRACE_ID}-{'0' * 16}-01".encode(), False),
    (PARENT.upper(), False), (PARENT + b" ", False), ("00-é".encode(), False)])
def test_traceparent_format(value, valid):
    assert tracing.valid_traceparent(value) is valid


class TracedDoor:
    """The seam of the HTTP door: stamps its event inside :func:`tracing.door`, as Submitter does."""

    def __init__(self):
        self.outputs: list[Output] = []

    def app(self) -> FastAPI:
        app = FastAPI()
        app.add_middleware(tracing.TraceContextMiddleware)

        @app.post("/submit")
        async def submit() -> dict:
            with tracing.door("http", "doc-http", 3) as span:
                self.outputs += span.stamp([RawOutput(OUT_TOPIC, "doc-http", {})])
            return {}

        return app

    async def post(self, headers: dict[str, str]) -> list[tuple[str, bytes]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app()), base_url="http://door") as c:
            assert (await c.post("/submit", headers=headers)).status_code == 200
        return self.outputs[-1].headers


async def test_the_http_door_continues_the_callers_trace(spans):
    door = TracedDoor()
    headers = await door.post({"traceparent": PARENT.decode()})
    (submit,) = by_name(spans)["ingest submit"]
    assert submit.kind == SpanKind.PRODUCER and format(submit.parent.span_id, "016x") == PARENT_ID
    assert trace_header(headers) == (TRACE_ID, format(submit.context.span_id, "016x"))
    new = await door.post({})  # no traceparent: a new trace
    assert trace_header(new)[0] != TRACE_ID


async def test_off_the_http_door_passes_the_callers_trace_on():
    door = TracedDoor()
    assert await door.post({"traceparent": PARENT.decode()}) == [(tracing.TRACEPARENT, PARENT)]
    assert await door.post({}) == []


def test_span_attributes_come_from_the_events_and_unset_fields_add_nothing():
    from ocrstream.contracts.event_models import UNSET, ErrorInfo, ResultsEvent, Timestamps

    failed = ResultsEvent(version=1, document_id="d1", status="failed", timestamps=Timestamps(ingested="x"),
                          text="", pages=[], regions=[], error=ErrorInfo(stage="preprocess", type="TruncatedImageError",
                                                                          message="m"))
    assert failed.recognizer is UNSET
    assert tracing._event_attributes(failed) == {
        "ocrstream.document_id": "d1", "ocrstream.pages": 0, "ocrstream.regions": 0, "ocrstream.status": "failed",
        "error.type": "TruncatedImageError"}
    assert tracing._event_attributes({"not": "an event"}) == {}
