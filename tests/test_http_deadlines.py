"""Issue 24: header-read and body-read deadlines on both HTTP doors (the ingest door and the query
API), as real processes on the embedded stack, with real sockets.

Per door, 300 half-sent requests are held open: 100 connections that send nothing, 100 that
send part of a request's headers, 100 that send whole headers (``Content-Length: 1000``) and
10 bytes of body. Every one is closed by the server within its bound
(``OCRSTREAM_HTTP_HEADER_TIMEOUT_S`` / ``OCRSTREAM_HTTP_BODY_TIMEOUT_S`` plus slack for a
loaded 2-core machine), and while they are held the door keeps answering other requests.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from ocrstream.ops.launcher import StageProcesses, free_port
from tests.test_pipeline_e2e import wait_http

pytestmark = pytest.mark.slow

HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 2.0, 4.0
#: what the server may take beyond a deadline to close (timer, event loop busy with 600 sockets)
SLACK_S = 4.0
HELD = 100  # connections per kind of half-sent request (3 kinds per door)
#: the first bytes of a well-formed body (a parser error would be answered at once)
BODY_START = {"ingest": b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                        b"Content-Type: image/png\r\n\r\n\x89PNG",
              "query": b'{"text": "0123'}


@pytest.fixture(scope="module")
def doors(stack_env, tmp_path_factory):
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"deadline-{uuid.uuid4().hex[:6]}",
           "OCRSTREAM_HTTP_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
           "OCRSTREAM_HTTP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with StageProcesses(env, tmp_path_factory.mktemp("deadline-logs"), stages=("ingest", "store", "api")):
        # routes that read their body before answering (FastAPI parses a body before the route's dependencies)
        yield {"ingest": ("127.0.0.1", int(env["OCRSTREAM_HTTP_PORT"]), "/v1/documents",
                          "multipart/form-data; boundary=xyz"),
               "query": ("127.0.0.1", int(env["OCRSTREAM_QUERY_PORT"]), "/v1/regions/1/verify", "application/json")}


async def hold(host: str, port: int, first_bytes: bytes) -> float | None:
    """Connect, send ``first_bytes``, wait for the server to close; seconds until it did (None: it
    answered something instead of closing silently, or did not close within the test's bound)."""
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    if first_bytes:
        writer.write(first_bytes)
        await writer.drain()
    try:
        data = await asyncio.wait_for(reader.read(65536), BODY_TIMEOUT_S + 3 * SLACK_S)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        return None
    finally:
        writer.close()
    return time.monotonic() - start if data == b"" or data.startswith(b"HTTP/1.1 4") else None


@pytest.mark.parametrize("door", ["ingest", "query"])
async def test_half_sent_requests_are_closed_within_the_bound_while_others_are_served(doors, door):
    host, port, path, content_type = doors[door]
    await wait_http(f"http://{host}:{port}/healthz")
    partial_headers = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Ty".encode()
    partial_body = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: 1000\r\n\r\n").encode() + BODY_START[door]
    kinds = {"nothing": b"", "partial headers": partial_headers, "partial body": partial_body}
    held = {kind: [asyncio.create_task(hold(host, port, first)) for _ in range(HELD)] for kind, first in kinds.items()}

    served = []
    async with httpx.AsyncClient(timeout=10) as client:
        while not all(t.done() for tasks in held.values() for t in tasks):
            served.append((await client.get(f"http://{host}:{port}/healthz")).status_code)
            await asyncio.sleep(0.25)
    closed = {kind: [t.result() for t in tasks] for kind, tasks in held.items()}

    bound = {"nothing": HEADER_TIMEOUT_S, "partial headers": HEADER_TIMEOUT_S, "partial body": BODY_TIMEOUT_S}
    for kind, seconds in closed.items():
        assert None not in seconds, (kind, seconds)
        assert max(seconds) <= bound[kind] + SLACK_S, (kind, max(seconds))
        assert min(seconds) >= bound[kind] - 0.5, (kind, min(seconds))  # the deadline, not some other close
    assert len(served) >= 4 and set(served) == {200}, served
    print(f"\n{door}: closed after (s) " + ", ".join(
        f"{kind} {min(s):.1f}-{max(s):.1f}" for kind, s in closed.items()) + f"; {len(served)} requests served meanwhile")
