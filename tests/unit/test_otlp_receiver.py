"""tools/otlp_receiver.py: an OTLP/HTTP export request is decoded into flat spans; a body over the bound,
a wrong path or content type is refused and adds nothing."""

from __future__ import annotations

import gzip

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tools import otlp_receiver
from tools.otlp_receiver import OtlpReceiver

pytestmark = pytest.mark.unit

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def export_request() -> bytes:
    span = Span(trace_id=bytes(range(16)), span_id=bytes(range(8)), name="recognize", kind=5,
                start_time_unix_nano=1_000, end_time_unix_nano=5_000,
                attributes=[KeyValue(key="ocrstream.regions", value=AnyValue(int_value=42)),
                            KeyValue(key="ocrstream.document_id", value=AnyValue(string_value="doc-1"))])
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="ocrstream-recognize"))])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource, scope_spans=[ScopeSpans(spans=[span])])]).SerializeToString()


def test_an_export_request_becomes_flat_spans_gzip_or_not():
    body = export_request()
    with OtlpReceiver() as receiver:
        plain = httpx.post(f"{receiver.url}/v1/traces", content=body, headers=PROTOBUF)
        zipped = httpx.post(f"{receiver.url}/v1/traces", content=gzip.compress(body),
                            headers={**PROTOBUF, "Content-Encoding": "gzip"})
        spans = receiver.all_spans()
    assert plain.status_code == zipped.status_code == 200
    assert receiver.requests == 2 and len(spans) == 2 and spans[0] == spans[1]
    assert spans[0] == {"service": "ocrstream-recognize", "name": "recognize", "trace_id": bytes(range(16)).hex(),
                        "span_id": bytes(range(8)).hex(), "parent": None, "kind": 5, "start": 1_000, "end": 5_000,
                        "status": 0, "attributes": {"ocrstream.regions": 42, "ocrstream.document_id": "doc-1"}}
    assert receiver.trace(bytes(range(16)).hex()) == spans and receiver.trace("00" * 16) == []


def test_a_body_over_the_bound_a_wrong_path_or_type_is_refused(monkeypatch):
    body = export_request()
    monkeypatch.setattr(otlp_receiver, "MAX_BODY_BYTES", len(body) - 1)  # this body crosses it by one byte
    with OtlpReceiver() as receiver:
        too_big = httpx.post(f"{receiver.url}/v1/traces", content=body, headers=PROTOBUF)
        wrong_path = httpx.post(f"{receiver.url}/v1/metrics", content=body, headers=PROTOBUF)
        wrong_type = httpx.post(f"{receiver.url}/v1/traces", content=body, headers={"Content-Type": "application/json"})
        assert [too_big.status_code, wrong_path.status_code, wrong_type.status_code] == [400, 404, 400]
        assert receiver.all_spans() == [] and receiver.requests == 0
        monkeypatch.setattr(otlp_receiver, "MAX_BODY_BYTES", len(body))  # at the bound: taken
        assert httpx.post(f"{receiver.url}/v1/traces", content=body, headers=PROTOBUF).status_code == 200
        assert len(receiver.all_spans()) == 1
