"""The ``ocrstream`` command line, run as users run it (subprocesses)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def ocrstream(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.slow
def test_dev_up_writes_settings_and_down_stops(tmp_path):
    state = tmp_path / "dev"
    up = ocrstream("dev", "up", "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr
        env = dict(line.split("=", 1) for line in (state / "stack.env").read_text().splitlines())
        assert env["OCRSTREAM_KAFKA_BOOTSTRAP"].startswith("127.0.0.1:")
        assert env["OCRSTREAM_POSTGRES_DSN"].startswith("postgresql://")
        assert f"export OCRSTREAM_S3_ENDPOINT={env['OCRSTREAM_S3_ENDPOINT']}" in up.stdout
        secrets = [env[k] for k in ("OCRSTREAM_S3_SECRET_KEY", "OCRSTREAM_POSTGRES_DSN")]
        assert not any(secret in up.stdout + up.stderr for secret in secrets)  # printed as ********
        assert "export OCRSTREAM_S3_SECRET_KEY=********" in up.stdout
        again = ocrstream("dev", "up", "--state-dir", str(state))  # already up: same endpoints
        assert again.returncode == 0 and (state / "stack.env").read_text().count("127.0.0.1") >= 3
        assert f"OCRSTREAM_KAFKA_BOOTSTRAP={env['OCRSTREAM_KAFKA_BOOTSTRAP']}" in again.stdout
    finally:
        down = ocrstream("dev", "down", "--state-dir", str(state))
    assert down.returncode == 0 and "stack stopped" in down.stdout
    assert "no stack running" in ocrstream("dev", "down", "--state-dir", str(state)).stdout


def test_run_rejects_unknown_stage():
    result = ocrstream("run", "nope")
    assert result.returncode != 0 and "Invalid value" in result.stderr


def test_submit_of_missing_path_is_a_clear_error():
    result = ocrstream("submit", "/does/not/exist.png")
    assert result.returncode != 0 and "does not exist" in result.stderr


NO_STACK_ENV = {"OCRSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1", "OCRSTREAM_S3_ENDPOINT": "127.0.0.1:2",
                "OCRSTREAM_POSTGRES_DSN": "postgresql://x:y@127.0.0.1:3/none", "OCRSTREAM_ENV_FILE": "/nonexistent"}


@pytest.mark.parametrize("args", [["submit", "--wait", "samples/receipt.png"], ["status"]])
def test_without_a_stack_the_cli_prints_a_one_line_hint(args):
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], capture_output=True, text=True,
                            timeout=120, cwd=repo, env={**os.environ, **NO_STACK_ENV})
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr  # one line, no traceback, no client logs
    assert "ocrstream dev up" in result.stderr and "127.0.0.1:1" in result.stderr


def test_submit_via_http_without_a_door_is_a_one_line_error():
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, **NO_STACK_ENV, "OCRSTREAM_INGEST_URL": "http://127.0.0.1:1"}
    result = subprocess.run([sys.executable, "-m", "ocrstream.cli", "submit", "--via", "http", "--wait",
                             "samples/receipt.png"], capture_output=True, text=True, timeout=120, cwd=repo, env=env)
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "no ingest HTTP door answering at http://127.0.0.1:1" in result.stderr
