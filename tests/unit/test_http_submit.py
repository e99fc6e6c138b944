"""The HTTP door client's pure parts: where the door is, how its answers are read."""

import json

import pytest

from ocrstream.client.http_submit import DoorAnswer, DoorRefusedError, _answer, door_url
from ocrstream.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("env, url", [
    ({}, "http://127.0.0.1:8080"),
    ({"http_host": "0.0.0.0", "http_port": "9000"}, "http://127.0.0.1:9000"),
    ({"http_host": "::"}, "http://[::1]:8080"),
    ({"http_host": "ocr.internal", "ingest_url": "https://ocr.example.com/"}, "https://ocr.example.com"),
])
def test_door_url(env, url):
    assert door_url(Settings(_env_file=None, **env)) == url


def test_answers_are_read_by_status():
    result = {"document_id": "d1", "status": "done", "text": "TOTAL 9.00"}
    done = _answer("a.png", 200, json.dumps({"document_id": "d1", "object_key": "k", "status": "done",
                                              "result": result}).encode())
    assert done == DoorAnswer("a.png", "done", "d1", "k", result)
    queued = _answer("a.png", 202, b'{"document_id": "d2", "object_key": "k2", "status": "accepted"}')
    assert queued == DoorAnswer("a.png", "accepted", "d2", "k2", None)
    refused = _answer("b.gif", 415, b'{"detail": {"error": "NotAnImageError", "message": "not an image"}}')
    assert refused == DoorAnswer("b.gif", "rejected", error=("NotAnImageError", "not an image"))
    for status, body in ((401, b'{"detail": "missing API key"}'), (500, b"Internal Server Error"),
                         (202, b'{"status": "accepted"}')):
        with pytest.raises(DoorRefusedError) as caught:
            _answer("c.png", status, body)
        assert caught.value.status == status


def test_a_file_over_the_limit_is_rejected_without_a_request(tmp_path):
    from ocrstream.client.http_submit import HttpDoor

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"0" * 2000)
    door = HttpDoor(Settings(_env_file=None, max_document_bytes=1000, ingest_url="http://127.0.0.1:1"))
    answer = door.submit(big)  # no door at that address: answered before any connection
    assert answer.status == "rejected" and answer.error[0] == "DocumentTooLargeError"


class StandInDoor:
    """A real HTTP server on loopback that answers like the ingest door (``/healthz`` 200,
    ``POST /v1/documents`` 202 after ``delay_s``) and records the ``wait`` asked for and the
    most requests it held at once."""

    def __init__(self, delay_s: float = 0.0, drop: int = 0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlparse

        door = self
        self.waits: list[float] = []
        self.keys: list[str | None] = []  # the Idempotency-Key of every POST
        self.drop = drop  # this many POSTs are read, then the connection is closed without an answer
        self.in_flight = self.most_in_flight = 0
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self.answer(200, b'{"ok": true}')

            def do_POST(self):
                import time

                self.rfile.read(int(self.headers["Content-Length"]))
                with lock:
                    door.keys.append(self.headers.get("Idempotency-Key"))
                    if door.drop:
                        door.drop -= 1
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    door.waits.append(float(parse_qs(urlparse(self.path).query)["wait"][0]))
                    door.in_flight += 1
                    door.most_in_flight = max(door.most_in_flight, door.in_flight)
                time.sleep(delay_s)
                with lock:
                    door.in_flight -= 1
                self.answer(202, json.dumps({"document_id": f"d{len(door.waits)}", "object_key": "k",
                                             "status": "accepted"}).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    doors: list[StandInDoor] = []

    def make(delay_s: float = 0.0, drop: int = 0) -> StandInDoor:
        doors.append(StandInDoor(delay_s, drop))
        return doors[-1]

    yield make
    for door in doors:
        door.close()


def test_the_wait_asked_of_the_door_is_capped(stand_in, tmp_path):
    from ocrstream.client.http_submit import MAX_DOOR_WAIT_S, HttpDoor

    door = stand_in()
    (tmp_path / "a.png").write_bytes(b"\x89PNG....")
    client = HttpDoor(Settings(_env_file=None, ingest_url=door.url))
    assert client.submit(tmp_path / "a.png", wait_s=600).status == "accepted"
    assert client.submit(tmp_path / "a.png", wait_s=5).status == "accepted"
    assert door.waits == [MAX_DOOR_WAIT_S, 5.0]


def test_each_file_has_its_own_idempotency_key_and_keeps_it_when_resent(stand_in, tmp_path):
    from ocrstream.client.http_submit import RESENDS, DoorUnavailableError, HttpDoor

    door = stand_in(drop=1)  # the first answer is lost
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(b"\x89PNG....")
    client = HttpDoor(Settings(_env_file=None, ingest_url=door.url))
    assert client.submit(tmp_path / "a.png").status == "accepted"
    assert client.submit(tmp_path / "b.png").status == "accepted"
    assert len(door.keys) == 3 and door.keys[0] == door.keys[1] != door.keys[2]
    assert all(key and len(key) == 32 for key in door.keys)
    door.drop = RESENDS + 1  # every answer lost: bounded resends, then the door is unavailable
    with pytest.raises(DoorUnavailableError):
        client.submit(tmp_path / "a.png")
    assert len(door.keys) == 3 + RESENDS + 1 and len(set(door.keys[3:])) == 1


def test_at_most_max_in_flight_files_are_posted_at_once(stand_in, tmp_path):
    from ocrstream.client.http_submit import MAX_IN_FLIGHT, HttpDoor

    door = stand_in(delay_s=0.5)
    paths = []
    for i in range(3 * MAX_IN_FLIGHT):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(b"\x89PNG....")
    answers = HttpDoor(Settings(_env_file=None, ingest_url=door.url)).submit_all(paths)
    assert [a.filename for a in answers] == [p.name for p in paths]  # in the order given
    assert door.most_in_flight == MAX_IN_FLIGHT


def test_auto_takes_the_door_only_for_few_files_and_when_it_answers(stand_in):
    from ocrstream.cli.submit import HTTP_DOOR_MAX_FILES, takes_http_door
    from ocrstream.client.http_submit import HttpDoor

    door = HttpDoor(Settings(_env_file=None, ingest_url=stand_in().url))
    absent = HttpDoor(Settings(_env_file=None, ingest_url="http://127.0.0.1:1"))
    assert takes_http_door("auto", HTTP_DOOR_MAX_FILES, door)
    assert not takes_http_door("auto", HTTP_DOOR_MAX_FILES + 1, door)
    assert not takes_http_door("auto", 1, absent)
    assert takes_http_door("http", 100, absent) and not takes_http_door("kafka", 1, door)
