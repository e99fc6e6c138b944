"""``ocrstream dev up`` / ``dev down`` as a reader runs them (subprocesses, real stack, real stage
processes): the settings file found from any directory (the pointer ``dev up`` records under
``$XDG_STATE_HOME``, ``--env-file``, ``OCRSTREAM_ENV_FILE``), and ``dev down`` stopping the
``ocrstream run`` processes of its stack, not another stack's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def reader_env(xdg: Path, **extra: str) -> dict[str, str]:
    """The environment of a reader's shell: no OCRSTREAM_* settings exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCRSTREAM_")}
    return {**env, "XDG_STATE_HOME": str(xdg), "OCRSTREAM_INFERENCE": "onnxruntime", **extra}


def ocrstream(*args: str, cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ocrstream.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def dev_stack(tmp_path_factory):
    """``ocrstream dev up`` run in a project directory, with its own state home; ``dev down --purge`` after."""
    root = tmp_path_factory.mktemp("devcli")
    project, xdg = root / "project", root / "xdg"
    project.mkdir()
    env = reader_env(xdg)
    up = ocrstream("dev", "up", "--kafka-storage", "memory", cwd=project, env=env)
    assert up.returncode == 0, up.stderr
    yield project, xdg, env, up
    ocrstream("dev", "down", "--purge", cwd=project, env=env)


def test_status_from_another_directory_finds_the_stack(dev_stack, tmp_path):
    project, xdg, env, up = dev_stack
    env_file = project / ".ocrstream" / "dev" / "stack.env"
    pointer = xdg / "ocrstream" / "env-file"
    assert pointer.read_text().strip() == str(env_file) and str(pointer) in up.stdout
    monitoring = project / ".ocrstream" / "dev" / "monitoring"  # tests/unit/test_monitoring.py checks them
    assert f"--config.file={monitoring}/prometheus.yml" in up.stdout
    assert (monitoring / "grafana" / "provisioning" / "datasources" / "prometheus.yml").is_file()
    bootstrap = next(line.split("=", 1)[1] for line in env_file.read_text().splitlines()
                     if line.startswith("OCRSTREAM_KAFKA_BOOTSTRAP="))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status = ocrstream("status", "--json", cwd=elsewhere, env=env)
    assert status.returncode in (0, 1), status.stderr  # 3 would be "no stack at all"
    kafka = next(e for e in json.loads(status.stdout)["endpoints"] if e["name"] == "Kafka API")
    assert (kafka["address"], kafka["ok"]) == (bootstrap, True)
    screen = ocrstream("status", cwd=elsewhere, env={**env, "COLUMNS": "80"})  # the narrow layout
    assert "stack" in screen.stdout and "Kafka API" in screen.stdout, screen.stdout
    assert max(len(line) for line in screen.stdout.splitlines()) <= 80, screen.stdout
    # --env-file and OCRSTREAM_ENV_FILE name the file when nothing was recorded (another state home)
    bare = reader_env(tmp_path / "empty-xdg")
    assert ocrstream("status", cwd=elsewhere, env=bare).returncode == 3
    for args, extra in ((["--env-file", str(env_file)], {}), ([], {"OCRSTREAM_ENV_FILE": str(env_file)})):
        found = ocrstream(*args, "status", "--json", cwd=elsewhere, env={**bare, **extra})
        assert found.returncode in (0, 1), found.stderr
        assert json.loads(found.stdout)["endpoints"][0]["address"] == bootstrap


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_dev_down_stops_the_stages_of_its_stack_only(dev_stack, tmp_path):
    project, xdg, env, _ = dev_stack
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log = open(tmp_path / "store.log", "w")
    # a real stage, started from another directory: it finds the stack through the recorded pointer
    store = subprocess.Popen([sys.executable, "-m", "ocrstream.cli", "run", "store"], cwd=elsewhere,
                             env={**env, "OCRSTREAM_METRICS_PORT": "0"}, stdout=log, stderr=subprocess.STDOUT)
    # a process of another stack (another bootstrap), named like a stage: dev down must leave it alone
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "ocrstream", "run", "ingest"],
                             env={**env, "OCRSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:1"})
    try:
        def store_seen() -> bool:
            out = ocrstream("status", "--json", cwd=elsewhere, env=env)
            stages = {s["name"]: s for s in json.loads(out.stdout)["stages"]} if out.stdout else {}
            return store.pid in [p["pid"] for p in stages.get("store", {}).get("processes", [])]

        wait_for(store_seen, 60, "status to list the store process")
        down = ocrstream("dev", "down", cwd=project, env=env)
        assert down.returncode == 0, down.stderr
        assert f"store (pid {store.pid})" in down.stdout and "stack stopped" in down.stdout, down.stdout
        assert store.wait(timeout=30) is not None  # stopped by dev down (SIGTERM), not left behind
        assert other.poll() is None and f"pid {other.pid}" not in down.stdout
    finally:
        for proc in (store, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.close()
        assert ocrstream("dev", "up", "--kafka-storage", "memory", cwd=project, env=env).returncode == 0
