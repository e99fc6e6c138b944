"""Traces: one trace per document across the stages, W3C trace context in the Kafka headers.

Every event the pipeline produces carries ``traceparent`` (and ``tracestate`` when there is one)
as Kafka record headers, in the W3C Trace Context format
(https://www.w3.org/TR/trace-context/). A trace starts at the door:

* the HTTP door (``POST /v1/documents``) continues the caller's trace when the request carries a
  ``traceparent`` header (:class:`TraceContextMiddleware`), else starts one; its span is
  ``ingest submit`` (:func:`door`), also used by ``ocrstream submit``;
* the raw topic and the bucket door start one in the ingest stage (a raw record that carries a
  ``traceparent`` header continues that trace instead);

and each stage continues it: the runtime (:mod:`ocrstream.streaming.stage`) opens one span per
consumed record (named after the stage, kind CONSUMER, parent = the record's ``traceparent``),
makes it current while the stage handles the record (:func:`use`), writes its context into the
headers of every event the record produced, dead letters included (:meth:`BatchTrace.stamp`), and
ends it once those events are acked and the offsets committed. The stages add child spans: decode,
clean-up, detection and crop per page (preprocess, timed in the decoder worker and replayed here,
:func:`add_phases`), recognition (recognize), post-processing and the database write (store)
(:func:`span`, :func:`child`). Attributes: ``ocrstream.document_id``, ``ocrstream.pages``,
``ocrstream.regions``, ``ocrstream.model``, ``ocrstream.status``, ``error.type`` (the typed error of
a failure), and the OpenTelemetry messaging attributes of the consumed record.

**On/off.** Off unless the OpenTelemetry SDK's own variables name an OTLP endpoint:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true``
or ``OTEL_TRACES_EXPORTER=none`` keep it off. On, spans go through the SDK's BatchSpanProcessor
(its own thread: never the event loop; ``OTEL_BSP_SCHEDULE_DELAY`` ms between exports,
``OTEL_BSP_MAX_QUEUE_SIZE`` spans queued at most, beyond which spans are dropped, never waited
for) to the OTLP/HTTP protobuf exporter (``OTEL_EXPORTER_OTLP_TIMEOUT``, headers, compression:
the SDK's variables); sampling is the SDK's (``OTEL_TRACES_SAMPLER``, default: parent-based,
always on). The service name is ``ocrstream-<process>`` unless ``OTEL_SERVICE_NAME`` is set. Off,
nothing of the SDK is imported, no span object is made, and a ``traceparent``/``tracestate`` a
record or request carried is copied unchanged onto what it produced (after a format check,
:func:`valid_traceparent`, and at most :data:`MAX_TRACESTATE_BYTES`), so a stage without tracing
does not break the trace of the others.

Only this module imports the SDK and the exporter; the OCR library (:mod:`ocrstream.ocr`) may use
the OpenTelemetry API only, and today uses none (the decoder worker reports timed phases instead).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

__all__ = ["TRACEPARENT", "TRACESTATE", "BatchTrace", "TraceContextMiddleware", "add_phases", "begin",
           "child", "configure", "door", "enabled", "shutdown", "span", "use"]

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
#: A ``tracestate`` longer than this (bytes) is not passed on (W3C: vendors keep it within 512).
MAX_TRACESTATE_BYTES: Final = 512
#: Document ids as span attributes are cut to this many characters.
MAX_ATTRIBUTE_CHARS: Final = 200
#: The instrumentation scope of every span.
SCOPE: Final = "ocrstream"

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
_W3C = TraceContextTextMapPropagator()
Headers = Sequence[tuple[str, bytes]]


class _State:
    tracer: trace.Tracer | None = None
    provider: TracerProvider | None = None


_state = _State()
#: The trace headers of the HTTP request being served, passed on unchanged when tracing is off.
_incoming: contextvars.ContextVar[tuple[tuple[str, bytes], ...]] = contextvars.ContextVar(
    "ocrstream_trace_incoming", default=())


# ------------------------------------------------------------------------------------ set-up

def endpoint_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """True when the SDK's variables ask for traces: an OTLP endpoint is set
    (``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), the SDK is not
    disabled (``OTEL_SDK_DISABLED``) and the traces exporter is not ``none``."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
                or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip())


def configure(process: str, environ: Mapping[str, str] = os.environ, *,
              exporter: SpanExporter | None = None, batch: bool = True, set_global: bool = True) -> bool:
    """Turn tracing on for this process when :func:`endpoint_configured` (or ``exporter`` is given).

    Args:
        process: the process's name (``ingest``, ``preprocess``, ..., ``submit``): the service name
            is ``ocrstream-<process>`` unless ``OTEL_SERVICE_NAME`` is set.
        exporter: export there instead of OTLP/HTTP (tests: an in-memory exporter).
        batch: export from the SDK's batch processor (its own thread); False exports each span
            as it ends, in the ending thread (tests only).
        set_global: also install the provider as the OpenTelemetry API's global one (once per process).

    Returns whether tracing is on. Calling it again replaces the previous provider (shut down).
    Raises nothing for a bad endpoint: the exporter logs its export failures and drops the spans.
    """
    if exporter is None and not endpoint_configured(environ):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*
    shutdown()
    name = environ.get("OTEL_SERVICE_NAME", "").strip() or f"ocrstream-{process}"
    provider = TracerProvider(resource=Resource.create({"service.name": name, "ocrstream.process": process}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)  # the API warns and keeps the first when set twice
    _state.provider, _state.tracer = provider, provider.get_tracer(SCOPE)
    log.info("tracing on: service %s, exporter %s", name, type(exporter).__name__)
    return True


def shutdown() -> None:
    """Export what is queued (bounded by the exporter's timeout) and turn tracing off."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def enabled() -> bool:
    """Whether this process records spans (:func:`configure`)."""
    return _state.tracer is not None


# ------------------------------------------------------------------------------ headers

class _HeaderGetter(Getter[Headers]):
    """Reads W3C fields from Kafka record headers (``[(name, bytes)]``)."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = [v.decode("latin-1") for k, v in carrier if k == key and isinstance(v, bytes)]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _ in carrier]


class _HeaderSetter(Setter[MutableMapping[str, str]]):
    def set(self, carrier: MutableMapping[str, str], key: str, value: str) -> None:
        carrier[key] = value


_GETTER, _SETTER = _HeaderGetter(), _HeaderSetter()


def valid_traceparent(value: bytes) -> bool:
    """True for a well-formed W3C ``traceparent`` (``vv-<32 hex>-<16 hex>-ff``, ids not all zero)."""
    try:
        return bool(_TRACEPARENT.match(value.decode("ascii")))
    except UnicodeDecodeError:
        return False


def passed_on(headers: Iterable[tuple[str, Any]] | None) -> list[tuple[str, bytes]]:
    """The trace headers of ``headers`` that are passed on unchanged when tracing is off: a
    well-formed ``traceparent`` and, with it, a ``tracestate`` of at most
    :data:`MAX_TRACESTATE_BYTES` bytes (a longer one is dropped, the parent is kept)."""
    parent: bytes | None = None
    state: bytes | None = None
    for k, v in headers or ():
        if not isinstance(v, bytes):
            continue
        if k == TRACEPARENT:
            parent = v
        elif k == TRACESTATE:
            state = v
    if parent is None or not valid_traceparent(parent):
        return []
    out = [(TRACEPARENT, parent)]
    if state and len(state) <= MAX_TRACESTATE_BYTES:
        out.append((TRACESTATE, state))
    return out


def span_headers(span: Span) -> list[tuple[str, bytes]]:
    """``traceparent`` (and ``tracestate``) of ``span``'s context, as Kafka headers."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=trace.set_span_in_context(span), setter=_SETTER)
    return [(k, v.encode("latin-1")) for k, v in carrier.items() if k in (TRACEPARENT, TRACESTATE)]


def _set_headers(output: Any, headers: Sequence[tuple[str, bytes]]) -> None:
    """Replace the trace headers of ``output`` (an :class:`~ocrstream.streaming.stage.Output`)."""
    kept = [(k, v) for k, v in output.headers if k not in (TRACEPARENT, TRACESTATE)]
    output.headers[:] = kept + list(headers)


def _cut(value: object) -> str:
    return str(value)[:MAX_ATTRIBUTE_CHARS]


def _output_attributes(span: Span, outputs: Sequence[Any]) -> None:
    """What the produced events say about the document: id, pages, regions, model, status, error
    type. Never raises (an event without a field, or with it unset, adds nothing)."""
    try:
        for o in outputs:
            for key, value in _event_attributes(getattr(o, "event", None)).items():
                span.set_attribute(key, value)
    except Exception as exc:  # noqa: BLE001 - tracing never fails a record
        log.debug("trace attributes of %s: %s: %s", outputs, type(exc).__name__, exc)


def _event_attributes(event: Any) -> dict[str, str | int]:
    """Span attributes of one event (unset optional fields are msgspec's UNSET: skipped)."""
    found: dict[str, str | int] = {}
    if isinstance(doc_id := getattr(event, "document_id", None), str):
        found["ocrstream.document_id"] = _cut(doc_id)
    if isinstance(pages := getattr(event, "pages", None), list):
        found["ocrstream.pages"] = len(pages)
    if isinstance(regions := getattr(event, "regions", None), list):
        found["ocrstream.regions"] = len(regions)
    recognizer = getattr(event, "recognizer", None)
    if isinstance(name := getattr(recognizer, "name", None), str):
        found["ocrstream.recognizer"] = _cut(name)
    if isinstance(model := getattr(recognizer, "model", None), str):
        found["ocrstream.model"] = _cut(model)
    if isinstance(status := getattr(event, "status", None), str):
        found["ocrstream.status"] = status
    if isinstance(error_type := getattr(getattr(event, "error", None), "type", None), str) and error_type:
        found["error.type"] = _cut(error_type)
    return found


# ------------------------------------------------------------------------------ stage spans

#: The stage span of each record in hand (by ``id(record)``), for :func:`use` and :func:`child`
#: on the handler loop; entries live from :func:`begin` to :meth:`BatchTrace.end`.
_record_spans: dict[int, Span] = {}


class BatchTrace:
    """The stage spans of one micro-batch (:func:`begin`): one per record, ended by :meth:`end`."""

    def __init__(self, stage: str, group: str, records: Sequence[Any], tracer: trace.Tracer):
        self.spans: dict[int, Span] = {}
        for r in records:
            parent = _W3C.extract(list(r.headers or ()), getter=_GETTER)
            key = r.key.decode("utf-8", "replace") if r.key else ""
            s = tracer.start_span(stage, context=parent, kind=SpanKind.CONSUMER, attributes={
                "ocrstream.stage": stage, "ocrstream.document_id": _cut(key),
                "messaging.system": "kafka", "messaging.operation.type": "process",
                "messaging.destination.name": r.topic, "messaging.destination.partition.id": str(r.partition),
                "messaging.kafka.offset": r.offset, "messaging.consumer.group.name": group})
            self.spans[id(r)] = s
        _record_spans.update(self.spans)

    def stamp(self, record: Any, outputs: list[Any], error: BaseException | None = None) -> list[Any]:
        """Write the record's span context into ``outputs``' headers (returned); a failure
        (``error``, the typed error) marks the span as failed with its ``error.type``."""
        s = self.spans.get(id(record))
        if s is None:
            return outputs
        if error is not None:
            s.set_status(Status(StatusCode.ERROR, _cut(error)))
            s.set_attribute("error.type", type(error).__name__)
            s.record_exception(error)
        _output_attributes(s, outputs)
        headers = span_headers(s)
        for o in outputs:
            _set_headers(o, headers)
        return outputs

    def end(self) -> None:
        """End every span of the batch (idempotent)."""
        for key, s in self.spans.items():
            _record_spans.pop(key, None)
            s.end()
        self.spans = {}


class PassThrough:
    """Tracing off: outputs get their record's trace headers unchanged (:func:`passed_on`)."""

    def stamp(self, record: Any, outputs: list[Any], error: BaseException | None = None) -> list[Any]:
        if record.headers and outputs and (headers := passed_on(record.headers)):
            for o in outputs:
                _set_headers(o, headers)
        return outputs

    def end(self) -> None:
        pass


NO_TRACE: Final = PassThrough()


def begin(stage: str, group: str, records: Sequence[Any]) -> BatchTrace | PassThrough:
    """The stage spans of ``records`` (consumed Kafka records), started now; :data:`NO_TRACE`
    when tracing is off or there are no records."""
    tracer = _state.tracer
    if tracer is None or not records:
        return NO_TRACE
    return BatchTrace(stage, group, records, tracer)


def use(record: Any) -> contextlib.AbstractContextManager[Any]:
    """Make ``record``'s stage span current (spans started inside become its children)."""
    s = _record_spans.get(id(record)) if _state.tracer is not None else None
    return contextlib.nullcontext() if s is None else trace.use_span(s, end_on_exit=False)


class span:  # noqa: N801 - used like a function: ``with span(...)`` / ``async with span(...)``
    """A child span of the current one around a block, sync or async (``as`` gives the span, None
    when off). An exception leaving the block marks it failed (``error.type``) and propagates.

    ``async with`` lets it share one statement with other asynchronous context managers
    (``async with span("db write"), pool.acquire() as conn, conn.transaction():``).
    """

    __slots__ = ("attributes", "name", "_cm")

    def __init__(self, name: str, attributes: Mapping[str, Any] | None = None):
        self.name, self.attributes = name, attributes
        self._cm: contextlib.AbstractContextManager[Span] | None = None

    def __enter__(self) -> Span | None:
        tracer = _state.tracer
        if tracer is None:
            return None
        self._cm = tracer.start_as_current_span(self.name, attributes=dict(self.attributes or {}),
                                                record_exception=False, set_status_on_exception=False)
        return self._cm.__enter__()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        cm, self._cm = self._cm, None
        if cm is None:
            return
        if exc is not None:
            s = trace.get_current_span()
            s.set_status(Status(StatusCode.ERROR, _cut(exc)))
            s.set_attribute("error.type", type(exc).__name__)
        cm.__exit__(exc_type, exc, tb)

    async def __aenter__(self) -> Span | None:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self.__exit__(exc_type, exc, tb)


def child(record: Any | None, name: str, start_ns: int, end_ns: int,
          attributes: Mapping[str, Any] | None = None) -> None:
    """A finished child span of ``record``'s stage span (of the current span when ``record`` is
    None) that ran from ``start_ns`` to ``end_ns`` (``time.time_ns()``, ns since the epoch); for
    work timed elsewhere (a worker process, a call shared by a batch). Nothing when off."""
    tracer = _state.tracer
    if tracer is None:
        return
    parent_span = _record_spans.get(id(record)) if record is not None else trace.get_current_span()
    if parent_span is None:
        return
    s = tracer.start_span(name, context=trace.set_span_in_context(parent_span), start_time=start_ns,
                          attributes=dict(attributes or {}))
    s.end(end_time=end_ns)


def add_phases(phases: Iterable[tuple[str, int, int]], attributes: Mapping[str, Any] | None = None) -> None:
    """Child spans of the current span for ``phases``: ``(name, start_ns, end_ns)`` timed in a
    decoder worker (:class:`services.preprocess.worker.PageResult`). Nothing when off."""
    if _state.tracer is None:
        return
    for name, start_ns, end_ns in phases:
        child(None, name, start_ns, end_ns, attributes)


# ------------------------------------------------------------------------------ doors

class DoorSpan:
    """The door's span of one submission (:func:`door`): :meth:`stamp` its event."""

    def __init__(self, s: Span | None, incoming: Sequence[tuple[str, bytes]]):
        self.span, self.incoming = s, incoming

    def stamp(self, outputs: list[Any]) -> list[Any]:
        """Trace headers onto ``outputs`` (the door's span; off: the caller's, unchanged)."""
        headers = span_headers(self.span) if self.span is not None else self.incoming
        if self.span is not None:
            _output_attributes(self.span, outputs)
        if headers:
            for o in outputs:
                _set_headers(o, headers)
        return outputs

    def fail(self, error: BaseException) -> None:
        """Mark the submission as refused or failed (``error.type``)."""
        if self.span is not None:
            self.span.set_status(Status(StatusCode.ERROR, _cut(error)))
            self.span.set_attribute("error.type", type(error).__name__)


@contextlib.contextmanager
def door(source: str, document_id: str, size_bytes: int) -> Iterator[DoorSpan]:
    """The span ``ingest submit`` (kind PRODUCER) of one submission at a door (``source``:
    ``http``, ``cli``), a child of the current context (the HTTP caller's ``traceparent``,
    :class:`TraceContextMiddleware`) or a new trace; ended when the block exits."""
    tracer = _state.tracer
    if tracer is None:
        yield DoorSpan(None, _incoming.get())
        return
    with tracer.start_as_current_span("ingest submit", kind=SpanKind.PRODUCER, record_exception=False,
                                      set_status_on_exception=False, attributes={
                                          "ocrstream.stage": "ingest", "ocrstream.door": source,
                                          "ocrstream.document_id": _cut(document_id),
                                          "ocrstream.size_bytes": size_bytes}) as s:
        handle = DoorSpan(s, ())
        try:
            yield handle
        except BaseException as exc:
            handle.fail(exc)
            raise


class TraceContextMiddleware:
    """ASGI middleware: a request's ``traceparent``/``tracestate`` headers become the current
    context of its handler (the door's span continues the caller's trace) unless a server span is
    current already (FastAPI's native telemetry: ``POST /v1/documents``, then the door's parent);
    off, they are kept for :func:`door` to pass on unchanged. A malformed ``traceparent`` is
    ignored (new trace)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        raw = [(k.decode("latin-1").lower(), v) for k, v in scope.get("headers") or ()
               if k.lower() in (b"traceparent", b"tracestate")]
        if _state.tracer is None:
            token_in = _incoming.set(tuple(passed_on(raw)))
            try:
                await self.app(scope, receive, send)
            finally:
                _incoming.reset(token_in)
            return
        if trace.get_current_span().get_span_context().is_valid:
            # FastAPI's own server span (its native OpenTelemetry support, through the global
            # provider :func:`configure` installs) already continues the caller's trace
            await self.app(scope, receive, send)
            return
        ctx = _W3C.extract(raw, getter=_GETTER) if raw else otel_context.Context()
        token = otel_context.attach(ctx)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
