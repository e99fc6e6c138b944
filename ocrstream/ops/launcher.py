"""Starting the four stages and the query API as separate OS processes (``ocrstream run NAME``).

Used by the demo and the end-to-end tests, so both run exactly what production runs:
one process per stage plus the query API (``ocrstream run api``, not started when
``OCRSTREAM_QUERY_PORT`` is 0), configured only through ``OCRSTREAM_*`` environment variables.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ocrstream.contracts import stages
from ocrstream.settings import Settings

#: The four stages and every process of the pipeline (the stages and the query API), in order.
STAGES: tuple[str, ...] = tuple(stages.STAGES)
PROCESSES: tuple[str, ...] = tuple(stages.PROCESSES)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StageProcesses:
    """The running stage (and query API) processes; logs go to ``log_dir/<name>.log``."""

    def __init__(self, env: dict[str, str], log_dir: Path, stages: tuple[str, ...] = PROCESSES,
                 stage_env: dict[str, dict[str, str]] | None = None):
        self.env, self.log_dir, self.stages = env, log_dir, stages
        self.stage_env = stage_env or {}  # per-stage overrides, e.g. its metrics port
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> "StageProcesses":
        """Spawn every stage (``python -m ocrstream.cli run STAGE``) in its own session, and the
        query API unless ``OCRSTREAM_QUERY_PORT`` is 0."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for stage in self.stages:
            if stage == "api" and self.env.get("OCRSTREAM_QUERY_PORT", "").strip() == "0":
                continue
            self.start_one(stage)
        return self

    def start_one(self, stage: str, name: str | None = None) -> None:
        """(Re)start one stage process; ``name`` (default: the stage) tells replicas apart,
        e.g. ``start_one("recognize", "recognize-2")`` runs a second recognize process in the
        same consumer group (log ``recognize-2.log``)."""
        name = name or stage
        log = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "ocrstream.cli", "run", stage],
            env={**self.env, **self.stage_env.get(stage, {}), **self.stage_env.get(name, {})},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def dead(self) -> dict[str, int]:
        """Stages whose process has exited, with their exit codes."""
        return {s: p.returncode for s, p in self.procs.items() if p.poll() is not None}

    def log_tail(self, stage: str, lines: int = 30) -> str:
        """The last ``lines`` lines of a stage's log."""
        path = self.log_dir / f"{stage}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop_one(self, stage: str, timeout_s: float = 20, sig: int = signal.SIGTERM) -> int | None:
        """Signal one stage process (by its name; SIGTERM: graceful) and wait; SIGKILL after ``timeout_s``."""
        proc = self.procs[stage]
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def stop(self, timeout_s: float = 20) -> None:
        """Stop every stage (graceful first)."""
        deadline = time.monotonic() + timeout_s
        for stage in self.procs:
            self.stop_one(stage, max(1.0, deadline - time.monotonic()))

    def __enter__(self) -> "StageProcesses":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def stop_local_processes(settings: Settings, timeout_s: float = 20.0) -> list[tuple[str, int]]:
    """Stop every ``ocrstream run NAME`` process on this host (NAME: a stage, ``api``, a shadow
    recognize) that uses ``settings``' Kafka bootstrap (found as ``ocrstream status`` finds them:
    :func:`ocrstream.ops.status.local_stage_processes`): SIGTERM (each stops polling, finishes or
    abandons its batch and exits), SIGKILL to any still running after ``timeout_s`` seconds.
    Returns ``(name, pid)`` of each process signalled; processes of other stacks are left alone."""
    from ocrstream.ops.status import local_stage_processes

    targets = [(name, p.pid) for name, procs in local_stage_processes(settings, PROCESSES).items() for p in procs]
    for _, pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while any(_alive(pid) for _, pid in targets) and time.monotonic() < deadline:
        time.sleep(0.1)
    for _, pid in targets:
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
    return targets


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not reaped by its parent, counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False

