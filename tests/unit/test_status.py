"""``ocrstream status`` pieces that need no stack (the end-to-end checks are in test_pipeline_e2e.py)."""

from __future__ import annotations

from ocrstream.contracts.stages import STAGE_INPUTS
from ocrstream.ops.status import Endpoint, StageStatus, _is_loopback, find_problems


def test_status_knows_each_stage_input_topics():
    from services.ingest.stage import IngestStage
    from services.preprocess.stage import PreprocessStage
    from services.recognize.stage import RecognizeStage
    from services.store.stage import StoreStage

    assert {cls.name: cls.input_topics for cls in (IngestStage, PreprocessStage, RecognizeStage, StoreStage)} \
        == STAGE_INPUTS


def test_problems_say_what_to_do():
    up = [Endpoint("Kafka API", "k", True), Endpoint("S3", "s", True), Endpoint("PostgreSQL", "p", True),
          Endpoint("ingest API", "http://i", False), Endpoint("query API", "-", None)]
    stopped = StageStatus("ingest", ["ocr.raw.v1"], "g-ingest", "Stable", 1, [], running=False, lag=3)
    problems = find_problems(up, [stopped])
    assert [p.what for p in problems] == ["ingest API at http://i does not answer",
                                          "stage ingest is not running (no process on this host); "
                                          "3 message(s) wait for it"]
    assert "ocrstream run ingest" in problems[1].do
    down = find_problems([Endpoint("Kafka API", "k", False)], [stopped])  # no broker: stages unknown
    assert len(down) == 1 and "ocrstream dev up" in down[0].do
    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and not _is_loopback("kafka-0.internal")


def test_one_table_of_processes_feeds_every_reader():
    """contracts.stages is the one table: metrics, health, launcher and the CLI read it."""
    from ocrstream.cli.processes import run
    from ocrstream.contracts.stages import PROCESSES, STAGES, metrics_port
    from ocrstream.ops import launcher
    from ocrstream.streaming import health, metrics

    assert launcher.STAGES == ("ingest", "preprocess", "recognize", "store")
    assert launcher.PROCESSES == (*launcher.STAGES, "api")
    assert metrics.STAGE_OUTPUTS == {name: s.outputs for name, s in STAGES.items()}
    assert health.NEEDS["api"] == ("postgres",) and set(health.NEEDS) == set(PROCESSES) | {"recognize-shadow"}
    assert health.NEEDS["recognize-shadow"] == ("kafka", "s3", "postgres") and metrics_port("recognize-shadow", None) == 9106
    assert list(run.params[0].type.choices) == list(PROCESSES)
    assert [metrics_port(n, None) for n in PROCESSES] == [9101, 9102, 9103, 9104, 9105]
    assert metrics_port("store", 0) == 0


def test_settings_are_grouped_described_and_print_no_secret(monkeypatch):
    from click.testing import CliRunner

    from ocrstream.cli.main import main
    from ocrstream.settings import GROUPS, Settings, describe, get_settings

    monkeypatch.setenv("OCRSTREAM_S3_SECRET_KEY", "hunter2-secret")
    get_settings.cache_clear()
    try:
        rows = describe(Settings())
        assert {r["group"] for r in rows} == set(GROUPS) and all(r["description"] for r in rows)
        assert len(rows) == len(Settings.model_fields)
        out = CliRunner().invoke(main, ["settings"])
        assert out.exit_code == 0, out.output
        assert "OCRSTREAM_S3_SECRET_KEY=**********" in out.output and "hunter2" not in out.output
        assert out.output.index("\nKafka\n") < out.output.index("\nObject store\n")
    finally:
        get_settings.cache_clear()


def _http_server(status: int, data: bytes):
    """An HTTP server answering every GET with ``status`` and ``data``, on a free loopback port
    (daemon thread)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _readyz_server(status: int, body: dict):
    """A ``/readyz`` that answers ``status`` with ``body`` (:func:`_http_server`)."""
    import json

    return _http_server(status, json.dumps(body).encode())


async def test_readyz_answers_are_ready_not_ready_stranded_frozen_or_unknown():
    import socket

    from ocrstream.ops.status import probe_readyz

    cases = {
        "ready": (200, {"ready": True, "checks": {"kafka": {"ok": True, "detail": "ok"}}}),
        "stranded": (503, {"ready": False, "checks": {"kafka": {"ok": False, "detail": "KafkaConnectionError: 127.0.0.1:9"},
                                                      "poll": {"ok": False, "detail": "last poll 40 s ago"}}}),
        "not ready": (503, {"ready": False, "checks": {"kafka": {"ok": False, "detail": "not checked yet"},
                                                       "poll": {"ok": False, "detail": "no poll yet"}}}),
    }
    for expected, (status, body) in cases.items():
        server = _readyz_server(status, body)
        try:
            readiness, detail = await probe_readyz(server.server_address[1])
        finally:
            server.shutdown()
        assert readiness == expected, (expected, detail)
    assert "KafkaConnectionError" in (await probe_readyz(_readyz_server(*cases["stranded"]).server_address[1]))[1]
    # A process stopped with SIGSTOP: the kernel accepts the connection, nobody answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        readiness, detail = await probe_readyz(silent.getsockname()[1], timeout_s=0.5)
    assert readiness == "frozen" and "did not answer within 0.5 s" in detail
    with socket.socket() as closed:  # nothing listens: metrics off or starting, no verdict
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert (await probe_readyz(port))[0] == "unknown"


async def test_what_a_process_runs_on_is_read_from_its_stage_info():
    import socket
    import time

    from ocrstream.ops.status import probe_runs_on

    metrics = ("# HELP ocrstream_stage_info Static facts of a stage (value 1)\n# TYPE ocrstream_stage_info gauge\n"
               'ocrstream_stage_info{key="input_topics",stage="recognize",value="ocr.regions.v1"} 1.0\n'
               'ocrstream_stage_info{key="provider",stage="recognize",value="CPUExecutionProvider-int8"} 1.0\n'
               'ocrstream_stage_info{key="recognizer",stage="recognize",value="ppocr"} 1.0\n')
    server = _text_server(metrics)
    try:
        assert await probe_runs_on(server.server_address[1]) == "CPUExecutionProvider-int8"
    finally:
        server.shutdown()
    server = _text_server(metrics.replace('key="provider",stage="recognize",value="CPUExecutionProvider-int8"',
                                          'key="detector_backend",stage="preprocess",value="openvino-bf16"'))
    try:
        assert await probe_runs_on(server.server_address[1]) == "openvino-bf16"
    finally:
        server.shutdown()
    for text in ("# TYPE x gauge\nx 1.0\n", "not prometheus {{{"):  # nothing to say, or garbage: ""
        server = _text_server(text)
        try:
            assert await probe_runs_on(server.server_address[1]) == ""
        finally:
            server.shutdown()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert await probe_runs_on(port) == ""
    with socket.socket() as silent:  # accepted, never answered: given up after the timeout
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        assert await probe_runs_on(silent.getsockname()[1], timeout_s=0.5) == ""
        assert time.monotonic() - started < 5


def _text_server(text: str):
    """A ``/metrics`` that answers 200 with ``text`` (:func:`_http_server`)."""
    return _http_server(200, text.encode())


def test_a_frozen_or_stranded_process_makes_its_stage_a_problem():
    from ocrstream.ops.status import StageProcess

    up = [Endpoint("Kafka API", "k", True), Endpoint("S3", "s", True), Endpoint("PostgreSQL", "p", True)]
    frozen = StageProcess(41, 10.0, 300.0, "/logs/recognize.log", 9103, "frozen", "/readyz on port 9103 did not answer")
    stranded = StageProcess(42, 10.0, 300.0, None, 9104, "stranded", "cannot reach postgres (ConnectionRefusedError)")
    stages = [StageStatus("recognize", ["ocr.preprocessed.v1"], "g-recognize", "Stable", 1, [frozen], running=True),
              StageStatus("store", ["ocr.recognized.v1"], "g-store", "Stable", 1, [stranded], running=True, lag=2)]
    problems = find_problems(up, stages)
    assert [p.what.split(":")[0] for p in problems] == ["stage recognize (pid 41) is frozen",
                                                         "stage store (pid 42) is stranded"]
    assert "kill -CONT 41" in problems[0].do and "/logs/recognize.log" in problems[0].do
    assert "2 message(s) wait for it" in problems[1].what and "ocrstream dev up" in problems[1].do


def sample_report():
    """A report with every part: a component down, two processes per stage (one frozen), a failure."""
    from ocrstream.ops.status import Failure, Problem, StageProcess, StatusReport

    endpoints = [Endpoint("Kafka API", "127.0.0.1:39421", True, "", 3.2),
                 Endpoint("ingest HTTP API", "http://127.0.0.1:8080/healthz", False,
                          "ConnectionRefusedError: [Errno 111] Connection refused"),
                 Endpoint("query API", "http://127.0.0.1:8081/healthz", None)]
    stages = [StageStatus(name, ["ocr.recognized.v1", "ocr.dlq.v1"], f"ocrstream-{name}", "Stable", 2,
                          [StageProcess(123456, 3600.0, 612.0, None, 9101, "ready", "", "openvino-bf16"),
                           StageProcess(123457, 30.0, 312.0, None, 9101, "frozen")], True, True, 12345)
              for name in ("ingest", "preprocess", "recognize", "store", "recognize-shadow-1a2b3c4d5e6f")]
    failures = [Failure("0f3c2a9b8d7e6f5a4b3c", "truncated-receipt-with-a-long-name.jpg", "preprocess",
                        "TruncatedImageError", "image file is truncated (43 bytes not processed) " * 3,
                        "2026-12-06T12:00:01+00:00")]
    problems = [Problem("ingest HTTP API at http://127.0.0.1:8080/healthz does not answer",
                        "it is served by `ocrstream run ingest`: start that stage, or give it and this "
                        "command the same OCRSTREAM_HTTP_PORT")]
    return StatusReport("2026-12-06T13:10:00+00:00", endpoints, stages,
                        {"done": 12, "failed": 1, "pages_pdf_text": 2, "pages_ocr": 11}, failures, problems)


def test_status_is_readable_at_80_columns(monkeypatch, capsys):
    """COLUMNS=80 (or a pipe): no line over 80 characters, and each stage's row, with its readiness,
    lag and first process, on one line (the narrow layout; issue 27)."""
    import re

    from ocrstream.ops.status import render

    monkeypatch.setenv("COLUMNS", "80")
    render(sample_report())
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    for name in ("ingest", "preprocess", "recognize", "store", "shadow-1a2b3c4d"):
        assert any(re.match(rf"\s+{name}\s+2 \(Stable\)\s+yes\s+12345\s+123456, 60 min, 612 MiB", line)
                   for line in lines), (name, "\n".join(lines))
    assert any(line.strip() == "123457, 30 s, 312 MiB FROZEN" for line in lines)
    assert "  ingest HTTP API: ConnectionRefusedError: [Errno 111] Connection refused" in lines
    assert "  12:00:01  0f3c2a9b8d7e  preprocess  TruncatedImageError" in lines


def test_status_keeps_its_wide_layout_on_a_wide_terminal(monkeypatch, capsys):
    from ocrstream.ops.status import render

    monkeypatch.setenv("COLUMNS", "160")
    render(sample_report())
    out = capsys.readouterr().out
    assert "consumes" in out and "ocr.recognized.v1, ocr.dlq.v1" in out and "pid 123456 up 60 min" in out
    assert "612 MiB on openvino-bf16" in out  # what the process's models run on
    assert max(len(line) for line in out.splitlines()) <= 160
