"""An OTLP/HTTP trace receiver on 127.0.0.1 for tests and benchmarks: what a collector (Jaeger, the
OpenTelemetry Collector) does with ``POST /v1/traces``, minus the storage.

Each request body is decoded as the protobuf ``ExportTraceServiceRequest`` (``opentelemetry-proto``,
gzip or not) and its spans are kept as flat dicts; the answer is an empty
``ExportTraceServiceResponse``, as a collector gives. Used by ``tests/test_tracing_e2e.py`` (one trace
per document across the four stages) and ``bench/bench_first_minute.py --trace`` (where a receipt's
time goes). Point a process at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.url>``.

Bounds: a request body over :data:`MAX_BODY_BYTES` is refused (400); spans are kept in memory for the
receiver's life (a test's or a benchmark's few thousand).
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["MAX_BODY_BYTES", "OtlpReceiver"]

#: The largest request body the receiver accepts, bytes.
MAX_BODY_BYTES = 16 * 1024 * 1024


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (an ephemeral port, :attr:`url`); a context manager
    that serves from a daemon thread.

    Attributes:
        spans: every received span as a dict: ``service`` (the resource's ``service.name``), ``name``,
            ``trace_id`` / ``span_id`` / ``parent`` (hex; ``parent`` None for a root), ``kind`` (int),
            ``start`` / ``end`` (int, ns since the epoch), ``status`` (int code) and ``attributes``
            (``{key: str | int | float | bool | None}``).
        requests: export requests received.
    """

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                size = int(self.headers.get("Content-Length") or 0)
                if self.path != "/v1/traces" or size > MAX_BODY_BYTES or \
                        self.headers.get("Content-Type") != "application/x-protobuf":
                    self.send_error(400 if self.path == "/v1/traces" else 404)
                    return
                body = self.rfile.read(size)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="otlp-receiver", daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        """Flatten a request's resource spans into :attr:`spans`."""
        decoded = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    attributes = {}
                    for a in s.attributes:
                        kind = a.value.WhichOneof("value")
                        attributes[a.key] = getattr(a.value, kind) if kind else None
                    decoded.append({
                        "service": resource.get("service.name"), "name": s.name,
                        "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex() or None, "kind": s.kind,
                        "start": s.start_time_unix_nano, "end": s.end_time_unix_nano,
                        "status": s.status.code, "attributes": attributes})
        with self.lock:
            self.requests += 1
            self.spans += decoded

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans received so far of one trace (hex id)."""
        with self.lock:
            return [s for s in self.spans if s["trace_id"] == trace_id]

    def all_spans(self) -> list[dict[str, Any]]:
        """A copy of every span received so far."""
        with self.lock:
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
