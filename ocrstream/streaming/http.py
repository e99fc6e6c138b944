"""Serving a stage's HTTP API (uvicorn) beside its Kafka loop, in the same event loop, and what both
HTTP APIs (the ingest door, the query API) share: bounded parameter types, the typed 422 of a bad
parameter, OpenAPI docs behind the API key when keys are required, the body-size limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import datetime, timezone
from typing import Annotated, Any

import h11
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator
from uvicorn.protocols.http.h11_impl import H11Protocol

from ocrstream.errors import InternalError, InvalidParameterError, TransientError
from ocrstream.streaming.auth import Authenticator
from ocrstream.streaming.retry import is_transient

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


#: A parameter that names something (an id, a template, a field, an error type): no C0 control
#: character or DEL (PostgreSQL text cannot hold NUL; the others are never part of a name).
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*$"
#: Free text (a search query): no control character but tab, newline and carriage return.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
#: Longest id or name a parameter may hold, characters.
MAX_NAME_CHARS = 256


#: What a 422 says of a parameter that does not match its pattern (every pattern above).
CONTROL_MESSAGE = "must not hold control characters (NUL included)"


def _utc_instant(value: datetime) -> datetime:
    """``value`` in UTC (a naive time is UTC); ValueError when UTC cannot represent it
    (``0001-01-01T00:00:00+14:00`` is before year 1 in UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("the time is outside years 1..9999 in UTC") from None


#: An ISO 8601 time parameter, normalised to UTC and bounded to what UTC (and PostgreSQL) holds.
Instant = Annotated[datetime, AfterValidator(_utc_instant)]


async def _invalid_parameter(request: Request, exc: Exception) -> JSONResponse:
    """The typed 422 of a request whose parameters do not validate: ``{"detail": {"error":
    "InvalidParameterError", "message", "errors": [{"loc", "type", "msg"}]}}`` (the inputs are not
    echoed: they may be large or hold characters a client cannot show)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "type": e.get("type", ""),
               "msg": CONTROL_MESSAGE if e.get("type") == "string_pattern_mismatch" else e.get("msg", "")}
              for e in exc.errors()]
    message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors) or "invalid request"
    return JSONResponse(status_code=422, content=jsonable_encoder({"detail": {
        "error": InvalidParameterError.__name__, "message": message, "errors": errors}}))


#: ``Retry-After`` (seconds) of a 503: a dependency (database, object store, broker) did not answer.
UNAVAILABLE_RETRY_AFTER_S = 5


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """What an exception no route handled answers: 503 with ``Retry-After`` for a dependency that
    did not answer (:func:`~ocrstream.streaming.retry.is_transient`), else 500; both typed, and
    neither names a host, port, object key or the exception's text (that goes to the log)."""
    if is_transient(exc):
        log.warning("%s %s: a dependency did not answer: %s: %s", request.method, request.url.path,
                    type(exc).__name__, exc)
        return JSONResponse(status_code=503, headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}, content={
            "detail": {"error": TransientError.__name__,
                       "message": "a dependency of this API (database, object store or broker) did not answer; "
                                  "try again later"}})
    log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc, exc_info=exc)
    return JSONResponse(status_code=500, content={"detail": {"error": InternalError.__name__,
                                                             "message": "internal error (logged by the server)"}})


def create_api(title: str, auth: Authenticator, scope: str) -> FastAPI:
    """A FastAPI app for one door: typed 422s for bad parameters (:class:`InvalidParameterError`),
    typed 503/500s that show no internals (:func:`_unhandled`), and ``/openapi.json`` and
    ``/docs`` that need a key with ``scope`` when ``auth`` requires keys (the schema names every
    route and parameter: not for anyone who can reach the port)."""
    if not auth.required:
        app = FastAPI(title=title, version="1")
    else:
        app = FastAPI(title=title, version="1", openapi_url=None, docs_url=None, redoc_url=None)
        guard = [Depends(auth.require(scope))]

        @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=guard)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{title} - docs")

    app.add_exception_handler(RequestValidationError, _invalid_parameter)
    app.add_exception_handler(Exception, _unhandled)
    return app


class DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with the two deadlines uvicorn lacks (its ``timeout_keep_alive`` only
    covers the idle time between requests and restarts at every byte; uvicorn issue #157):

    * headers: the request line and headers must be in within :attr:`header_timeout_s` of the
      connection or of the request's first byte;
    * body: the whole body within :attr:`body_timeout_s` of the headers.

    Past a deadline the connection is closed (logged; a handler waiting on the body sees the
    client disconnect). Nothing is armed while the app answers a fully received request.
    Subclass per server with :func:`deadline_protocol`.
    """

    header_timeout_s = 10.0
    body_timeout_s = 120.0
    _deadline: asyncio.TimerHandle | None = None
    _phase: str | None = None  # "headers", "body" or None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", self.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._arm("headers", self.header_timeout_s)  # the first byte of the next request
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if state is h11.SEND_BODY and self._phase != "body":
            self._arm("body", self.body_timeout_s)
        elif state is not h11.IDLE and state is not h11.SEND_BODY:
            self._disarm()  # the request is in (or the connection is over)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired, phase, seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._phase = None, None

    def _expired(self, phase: str, seconds: float) -> None:
        self._deadline, self._phase = None, None
        if not self.transport.is_closing():
            log.info("HTTP: %s:%s sent no complete request %s within %.0f s: connection closed",
                     *(self.client or ("?", "?")), phase, seconds)
            self.transport.close()


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[DeadlineProtocol]:
    """A :class:`DeadlineProtocol` class with these deadlines (seconds), for ``uvicorn.Config(http=...)``."""
    return type("DeadlineProtocol", (DeadlineProtocol,),
                {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s})


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the stage loop owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until(app: FastAPI, host: str, port: int, stop: asyncio.Event, name: str, *,
                      header_timeout_s: float = 10.0, body_timeout_s: float = 120.0) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut down gracefully; requests
    whose headers or body do not arrive within ``header_timeout_s`` / ``body_timeout_s`` seconds
    have their connection closed (:class:`DeadlineProtocol`)."""
    server = _QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                         http=deadline_protocol(header_timeout_s, body_timeout_s)))
    task = asyncio.create_task(server.serve())
    log.info("%s: HTTP API on http://%s:%d (OpenAPI docs at /docs)", name, host, port)
    await stop.wait()
    server.should_exit = True
    await task


class BodyTooLarge(Exception):
    """Raised inside ``receive`` once a request body passes its limit."""


class BodyLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``.

    A ``Content-Length`` over the limit is refused before the app runs (nothing is read); a body
    without one (chunked) is counted as it streams and refused as soon as it passes the limit.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send, int(length))
        seen, started, exceeded = 0, False, False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            # The app may turn BodyTooLarge into its own error response (FastAPI answers 400 to
            # any exception while parsing a form): once the limit was passed, answer 413 instead.
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send, seen)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send: Send, size: int) -> None:
        body = (f'{{"detail":{{"error":"DocumentTooLargeError","message":"request body of at least {size} bytes '
                f'exceeds the limit of {self.max_bytes} bytes (OCRSTREAM_MAX_DOCUMENT_BYTES)"}}}}').encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
