"""Serving a stage's HTTP API (uvicorn) beside its Kafka loop, in the same event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from fastapi import FastAPI

log = logging.getLogger(__name__)


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the stage loop owns SIGTERM/SIGINT."""

    def capture_signals(self):
        return contextlib.nullcontext()


async def serve_until(app: FastAPI, host: str, port: int, stop: asyncio.Event, name: str) -> None:
    """Serve ``app`` on ``host:port`` until ``stop`` is set, then shut down gracefully."""
    server = _QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    log.info("%s: HTTP API on http://%s:%d (OpenAPI docs at /docs)", name, host, port)
    await stop.wait()
    server.should_exit = True
    await task
