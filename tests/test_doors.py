"""The HTTP doors as an attacker or an unlucky client meets them, against the real ingest and
store processes: API keys (401/403), the per-key rate limit (429), bodies over the limit
refused before they are read (413, with and without Content-Length), unsupported types (415),
empty bodies (400), pagination bounds; start-up refusing a public port without keys; names and
ids from outside made safe."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid

import httpx
import pytest

from ocrstream.ops.launcher import StageProcesses, free_port
from ocrstream.streaming.auth import create_key, is_loopback
from ocrstream.streaming.names import sanitize_filename
from services.ingest.stage import raw_document_id, raw_key_document_id
from tests.test_pipeline_e2e import render, wait_http

LIMIT = 200_000  # OCRSTREAM_MAX_DOCUMENT_BYTES of the doors under test
RATE = 8  # requests per minute per key


@pytest.fixture(scope="module")
def doors(stack_env, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "api-keys.jsonl"
    full = create_key(keys, "full")
    query_only = create_key(keys, "reader", ("query",))
    limited = create_key(keys, "limited")
    env = {**stack_env, "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
           "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"doors-{uuid.uuid4().hex[:6]}",
           "OCRSTREAM_API_KEYS_FILE": str(keys), "OCRSTREAM_MAX_DOCUMENT_BYTES": str(LIMIT),
           "OCRSTREAM_RATE_LIMIT_PER_MINUTE": str(RATE)}
    with StageProcesses(env, tmp_path_factory.mktemp("door-logs"), stages=("ingest", "store", "api")) as stages:
        yield {"ingest": f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}",
               "query": f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}",
               "full": full, "reader": query_only, "limited": limited, "stages": stages, "keys": keys, "env": env}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_keys_are_required_and_scoped(doors):
    await wait_http(doors["ingest"] + "/healthz")
    png = render("k.png", ["KEYED DOOR 11"])
    async with httpx.AsyncClient() as client:
        url = doors["ingest"] + "/v1/documents"
        assert (await client.post(url, files={"file": ("k.png", png)})).status_code == 401
        wrong = await client.post(url, files={"file": ("k.png", png)}, headers=bearer("ocs_not-a-key"))
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert (await client.post(url, files={"file": ("k.png", png)},
                                  headers=bearer(doors["reader"]))).status_code == 403
        ok = await client.post(url, files={"file": ("k.png", png)}, headers={"X-API-Key": doors["full"]})
        assert ok.status_code == 202, ok.text
        await wait_http(doors["query"] + "/healthz")
        assert (await client.get(doors["query"] + "/v1/documents")).status_code == 401
        listed = await client.get(doors["query"] + "/v1/documents", headers=bearer(doors["reader"]))
        assert listed.status_code == 200
        too_many = await client.get(doors["query"] + "/v1/documents", params={"limit": 5000},
                                    headers=bearer(doors["reader"]))
        assert too_many.status_code == 422  # at most 200 rows per page
    # the keys file holds hashes only, readable by its owner only
    assert doors["full"] not in doors["keys"].read_text()
    assert oct(doors["keys"].stat().st_mode & 0o777) == "0o600"


async def test_submit_never_goes_around_a_keyed_door_silently(doors, tmp_path):
    """``ocrstream submit`` against a door with a keys file: without OCRSTREAM_API_KEY (auto or --via
    http) an error naming the variable, nothing submitted; with a key, the HTTP door, said on stderr;
    ``--via kafka`` goes around the door on purpose, and says so."""
    import subprocess
    import sys

    await wait_http(doors["ingest"] + "/healthz")
    page = tmp_path / "keyed.png"
    page.write_bytes(render("keyed.png", ["KEYED SUBMIT 27"]))
    env = {**doors["env"], "OCRSTREAM_INGEST_URL": doors["ingest"]}

    def submit(*args: str, key: str | None = None) -> subprocess.CompletedProcess:
        run_env = {k: v for k, v in env.items() if k != "OCRSTREAM_API_KEY"}
        return subprocess.run([sys.executable, "-m", "ocrstream.cli", "submit", *args, str(page)],
                              env={**run_env, **({"OCRSTREAM_API_KEY": key} if key else {})},
                              capture_output=True, text=True, timeout=120)

    for via in ("auto", "http"):
        out = submit("--via", via)
        assert out.returncode == 1 and out.stdout == "", (out.stdout, out.stderr)
        assert "answered 401" in out.stderr and "OCRSTREAM_API_KEY is not set" in out.stderr, out.stderr
        assert "--via kafka" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    scoped = submit(key=doors["reader"])  # a key without the ingest scope
    assert scoped.returncode == 1 and "answered 403" in scoped.stderr and "OCRSTREAM_API_KEY" in scoped.stderr
    keyed = submit(key=doors["full"])
    assert keyed.returncode == 0, keyed.stderr
    assert f"submitted through the ingest HTTP door at {doors['ingest']}" in keyed.stderr
    around = submit("--via", "kafka")
    assert around.returncode == 0, around.stderr
    assert "submitted through Kafka (--via kafka)" in around.stderr and "keyed.png" in around.stdout


async def test_rate_limit_per_key(doors):
    await wait_http(doors["ingest"] + "/healthz")
    async with httpx.AsyncClient() as client:
        statuses = [(await client.post(doors["ingest"] + "/v1/documents", files={"file": ("x.txt", b"text")},
                                       headers=bearer(doors["limited"]))).status_code for _ in range(RATE + 2)]
        assert statuses[:RATE] == [415] * RATE  # admitted (then refused for its type)
        assert statuses[RATE:] == [429, 429]
        limited = await client.post(doors["ingest"] + "/v1/documents", files={"file": ("x.txt", b"text")},
                                    headers=bearer(doors["limited"]))
        assert int(limited.headers["retry-after"]) >= 1
        # another key is not affected
        other = await client.post(doors["ingest"] + "/v1/documents", files={"file": ("x.txt", b"text")},
                                  headers=bearer(doors["full"]))
        assert other.status_code == 415


async def test_bodies_over_the_limit_are_refused_before_they_are_read(doors):
    await wait_http(doors["ingest"] + "/healthz")
    host, port = doors["ingest"].removeprefix("http://").split(":")
    # Content-Length over the limit: 413 while the client has sent the headers only.
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"POST /v1/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {doors['full']}\r\n"
                     f"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {50 * LIMIT}\r\n\r\n".encode())
        assert sock.recv(4096).split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Request Entity Too Large"

    # No Content-Length (chunked): counted while it streams, refused once past the limit.
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(f"POST /v1/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {doors['full']}\r\n"
                     "Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        part = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.png\"\r\n\r\n"
        sent = 0
        try:
            for chunk in [part] + [b"\0" * 10_000] * 5000:  # 50 MB, 250 times the limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:  # the server answered and stopped reading: our send blocks or fails
            pass
        sock.settimeout(10)
        reply = sock.recv(65536)
    assert reply.split(b"\r\n", 1)[0] == b"HTTP/1.1 413 Request Entity Too Large", reply[:200]
    assert b"DocumentTooLargeError" in reply
    assert sent < 5000 * 10_000  # the server stopped reading long before the end

    async with httpx.AsyncClient() as client:
        empty = await client.post(doors["ingest"] + "/v1/documents", files={"file": ("e.png", b"")},
                                  headers=bearer(doors["full"]))
        assert empty.status_code == 400 and empty.json()["detail"]["error"] == "EmptyDocumentError"
        svg = await client.post(doors["ingest"] + "/v1/documents", headers=bearer(doors["full"]),
                                files={"file": ("x.svg", b"<svg xmlns='http://www.w3.org/2000/svg'/>")})
        assert svg.status_code == 415 and svg.json()["detail"]["error"] == "NotAnImageError"
    assert not doors["stages"].dead()


def test_a_public_port_without_keys_fails_start_up(stack_env, tmp_path):
    env = {**stack_env, "OCRSTREAM_HTTP_HOST": "0.0.0.0", "OCRSTREAM_HTTP_PORT": str(free_port()),
           "OCRSTREAM_API_KEYS_FILE": ""}
    proc = subprocess.run([sys.executable, "-m", "ocrstream.cli", "run", "ingest"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "beyond loopback" in proc.stderr and "ocrstream apikey create" in proc.stderr


def test_a_missing_templates_directory_fails_start_up(stack_env, tmp_path):
    env = {**stack_env, "OCRSTREAM_TEMPLATES_DIR": str(tmp_path / "nope")}
    proc = subprocess.run([sys.executable, "-m", "ocrstream.cli", "run", "preprocess"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "OCRSTREAM_TEMPLATES_DIR" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("name, safe", [
    ("../../etc/passwd", "passwd"), ("a\x00b.png", "ab.png"), ("x" * 300 + ".jpg", "x" * 251 + ".jpg"),
    ("\u202egpj.exe", "gpj.exe"), ("C:\\scans\\r.png", "r.png"), ("", None), ("..", None),
    ("line\nbreak.png", "linebreak.png"), ("reçu 😀.png", "reçu 😀.png")])
def test_filenames_are_sanitised(name, safe):
    assert sanitize_filename(name) == safe


def test_raw_ids_are_scoped_by_key_and_content():
    class Rec:
        topic, partition, offset, timestamp, headers = "ocr.raw.v1", 0, 7, 1_700_000_000_000, ()

        def __init__(self, key):
            self.key = key

    a, b = "a" * 64, "b" * 64
    assert raw_document_id(Rec(b"shop-1"), a) == (raw_key_document_id("shop-1", a), "shop-1")
    assert raw_document_id(Rec(b"shop-1"), a)[0] != raw_document_id(Rec(b"shop-1"), b)[0]  # no overwrite
    assert raw_document_id(Rec(None), a)[0] != raw_document_id(Rec(None), b)[0]
    for bad in (b"\xff\xfe", b"x" * 300, b"a\nb"):
        with pytest.raises(Exception, match="not a valid external id"):
            raw_document_id(Rec(bad), a)


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")


def test_rate_limit_of_zero_means_unlimited(stack_settings):
    from ocrstream.streaming.auth import Authenticator
    auth = Authenticator(stack_settings.model_copy(update={"rate_limit_per_minute": 0}), "127.0.0.1")
    assert auth.limit is None and not auth.required


def test_raw_template_header_is_bounded():
    from ocrstream.errors import InvalidSubmissionError
    from services.ingest.stage import MAX_TEMPLATE_NAME_CHARS, template_header

    assert template_header(b"lab-report") == "lab-report" and template_header(b"") is None
    assert template_header(b"x" * MAX_TEMPLATE_NAME_CHARS) == "x" * MAX_TEMPLATE_NAME_CHARS
    for bad in (b"x" * (MAX_TEMPLATE_NAME_CHARS + 1), b"\xff\xfe", b"lab\x00report"):
        with pytest.raises(InvalidSubmissionError):
            template_header(bad)
