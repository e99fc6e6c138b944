"""Serving a stage's HTTP API (uvicorn) beside its Kafka loop, in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the stage loop owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_until(app: FastAPI, host: str, port: int, stop: asyncio.Event, name: str) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut down gracefully."""
    server = _QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning"))
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
