"""The HTTP door client's pure parts: where the door is, how its answers are read."""

import json

import pytest

from services.core.settings import Settings
from services.http_submit import DoorAnswer, DoorRefusedError, _answer, door_url

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
    from services.http_submit import HttpDoor

    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"0" * 2000)
    door = HttpDoor(Settings(_env_file=None, max_document_bytes=1000, ingest_url="http://127.0.0.1:1"))
    answer = door.submit(big)  # no door at that address: answered before any connection
    assert answer.status == "rejected" and answer.error[0] == "DocumentTooLargeError"
