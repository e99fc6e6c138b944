"""The fault suite's rig: one embedded stack (broker log on S3, the default) and the four stage
processes, shared by the scenarios of tests/faults/ (dependencies come back on the same ports
and data, so the stages survive every scenario); documents from tools/loadgen.py; the outcome
audited by ocrstream/ops/audit.py; one figures row per scenario, printed at the end of the run and
written to ``$OCRSTREAM_FAULT_REPORT`` (JSON) when set.

Options: ``--fault-docs N`` documents per scenario (default 30: eight scenarios, 240 distinct
documents in all); ``--soak`` runs 200 documents per scenario and longer outages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import pytest

from ocrstream.devstack import EmbeddedStack, purge, stop_running
from ocrstream.ops.audit import AuditReport, audit, final_count, wait_until_drained
from ocrstream.ops.launcher import STAGES, StageProcesses, free_port
from ocrstream.settings import Settings
from tools.loadgen import LoadGenerator, Submission, make_documents

SESSION_TIMEOUT_MS = 6000
FIGURES: list["Figures"] = []


@dataclass
class Figures:
    """One row of the suite's table."""

    fault: str
    documents: int
    done: int
    failed: int
    lost: int
    duplicated: int
    recover_s: float | None  # fault over (service back / stage restarted) -> first new result
    drain_s: float  # fault over -> every document final and every lag 0
    stall_s: float = 0.0  # longest time without a document becoming final, fault start -> last one final
    door_retries: int = 0
    notes: str = ""


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    write = terminalreporter.write_line
    write("")
    write("fault suite figures (time to recover: fault over -> next document final; longest stall: no "
          "document final, from the fault until the last one; drained: all final, every lag 0, after the fault)")
    write("| fault | documents | done | failed | lost | duplicated | time to recover | longest stall | drained after "
          "| door retries |")
    write("|---|---|---|---|---|---|---|---|---|---|")
    for f in FIGURES:
        rec = "-" if f.recover_s is None else f"{f.recover_s:.1f} s"
        write(f"| {f.fault} | {f.documents} | {f.done} | {f.failed} | {f.lost} | {f.duplicated} | {rec} | "
              f"{f.stall_s:.1f} s | {f.drain_s:.1f} s | {f.door_retries} |")
    if path := os.environ.get("OCRSTREAM_FAULT_REPORT"):
        Path(path).write_text(json.dumps([asdict(f) for f in FIGURES], indent=1))


class Progress:
    """Polls how many of the run's documents are final (published), remembering when it rose."""

    def __init__(self, settings: Settings):
        self.settings, self.ids, self.rises = settings, [], []  # rises: (monotonic s, count)
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        last = -1
        while True:
            try:
                n = await asyncio.wait_for(final_count(self.settings, list(self.ids)), 5)
                if n > last:
                    self.rises.append((time.monotonic(), n))
                    last = n
            except Exception:  # noqa: BLE001 - PostgreSQL may be the fault
                pass
            await asyncio.sleep(0.25)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def first_rise_after(self, t: float) -> float | None:
        return next((when - t for when, _ in self.rises if when > t), None)

    def longest_stall(self, start: float, end: float) -> float:
        """The longest time in [start, end] during which no document became final."""
        times = [start] + [when for when, _ in self.rises if start < when < end] + [end]
        return max(b - a for a, b in zip(times, times[1:]))

    def current(self) -> int:
        return self.rises[-1][1] if self.rises else 0


@dataclass
class Rig:
    """The shared stack + stage processes, and the doings of the scenarios."""

    state_dir: Path
    stack: EmbeddedStack
    stages: StageProcesses
    settings: Settings
    http_url: str
    docs_per_scenario: int
    soak: bool
    seed: int = 0
    all_expected: dict = field(default_factory=dict)

    # ---- the stack's services, by the pids in stack.json
    def service_pid(self, name: str) -> int:
        services = json.loads((self.state_dir / "stack.json").read_text())["services"]
        return next(s["pid"] for s in services if s["name"] == name)

    def signal_service(self, name: str, sig: int) -> None:
        os.killpg(self.service_pid(name), sig)
        if sig == signal.SIGKILL:
            self._reap(self.service_pid(name))

    @staticmethod
    def _reap(pid: int) -> None:
        try:
            os.waitpid(pid, 0)  # this process started it: reap, or it lingers as a zombie
        except ChildProcessError:
            pass

    def revive(self) -> float:
        """What `ocrstream dev up` does on a stack with dead services; seconds it took."""
        t0 = time.monotonic()
        EmbeddedStack(self.state_dir, log=lambda m: print(f"  [devstack] {m}")).start()
        return time.monotonic() - t0

    def healthy(self) -> None:
        """Fail (with their logs) when stage processes died: no fault may make a stage exit."""
        dead = self.stages.dead()
        assert not dead, {name: (code, self.stages.log_tail(name)) for name, code in dead.items()}

    async def consuming(self, name: str, timeout_s: float = 180) -> None:
        """Wait until stage process ``name`` has joined its group (its log says it consumes)."""
        deadline = time.monotonic() + timeout_s
        while "consuming" not in self.stages.log_tail(name, 10_000):
            assert name not in self.stages.dead() and time.monotonic() < deadline, self.stages.log_tail(name)
            await asyncio.sleep(0.5)

    async def wait_http(self, timeout_s: float = 120) -> None:
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                try:
                    if (await client.get(self.http_url + "/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise TimeoutError("ingest HTTP door not up")

    # ---- one scenario
    async def scenario(self, fault: str, inject, *, docs: int | None = None, start_at: float = 0.25,
                       duplicates_allowed: bool = False, notes: str = "") -> AuditReport:
        """Submit documents through all doors; once ``start_at`` of them are final, await
        ``inject(rig)`` (the fault; it returns when the fault is over); then wait for the drain,
        audit, record and check the figures. Returns the audit."""
        self.healthy()
        await self.wait_http()
        self.seed += 1
        count = docs or self.docs_per_scenario
        documents = make_documents(count, seed=hash((fault, self.seed)) & 0xFFFF, bad_every=25)
        gen = LoadGenerator(self.settings, self.http_url, give_up_s=240,
                            log=lambda line: print(f"  [loadgen] {line}"))
        progress = Progress(self.settings)
        t0 = time.monotonic()
        # Spread the submissions over the scenario: the doors are also under the fault.
        load = asyncio.create_task(gen.run(documents, rate_per_s=max(2.0, count / 40)))
        progress.start()
        try:
            while progress.current() < max(1, int(start_at * count)):
                progress.ids = [s.document_id for s in gen.submissions]
                assert not load.done() or load.exception() is None, load.exception()
                assert time.monotonic() - t0 < 600, f"no progress before the fault: {progress.current()}"
                await asyncio.sleep(0.25)
            fault_start = time.monotonic()
            print(f"\n[{fault}] fault at {fault_start - t0:.1f} s, {progress.current()} of {count} final")
            await inject(self)
            fault_over = time.monotonic()
            print(f"[{fault}] fault over at {fault_over - t0:.1f} s")
            submissions: list[Submission] = await load
            progress.ids = [s.document_id for s in submissions]
            expected = {s.document_id: s.expected for s in submissions}
            await wait_until_drained(self.settings, expected, timeout_s=600)
            drained_at = time.monotonic()
            drain_s = drained_at - fault_over
            await asyncio.sleep(1)
        finally:
            await progress.stop()
            if not load.done():
                load.cancel()
        report = await audit(self.settings, expected)
        self.all_expected.update(expected)
        figures = Figures(fault, report.submitted, report.done, report.failed, len(report.lost),
                          report.duplicated, progress.first_rise_after(fault_over), drain_s,
                          progress.longest_stall(fault_start, progress.rises[-1][0] if progress.rises else drained_at), gen.retries, notes)
        FIGURES.append(figures)
        print(f"[{fault}] {report.summary()}; recover {figures.recover_s} s, drained {drain_s:.1f} s "
              f"after the fault, door retries {gen.retries}")
        assert len(expected) == count == len(documents)
        assert report.lost == [] and report.wrong == [], report.summary()
        assert report.stuck == [], report.summary()
        assert report.failed == report.failed_as_expected == count // 25
        if not duplicates_allowed:
            assert report.duplicated == 0, report.duplicated_documents
        self.healthy()
        return report


@pytest.fixture(scope="module")
def rig(request, tmp_path_factory):
    soak = request.config.getoption("--soak")
    docs = request.config.getoption("--fault-docs") or (200 if soak else 30)
    # Not under pytest's base temp dir: every pytest session started meanwhile on the machine
    # (same user) chmods /tmp/pytest-of-<user> to 0700, and PostgreSQL, which runs as `nobody`
    # when we are root, then loses its data directory (PANIC at the next checkpoint).
    state_dir = Path(tempfile.mkdtemp(prefix="ocrstream-faults-"))
    logs = tmp_path_factory.mktemp("stage-logs")
    stack = EmbeddedStack(state_dir, log=lambda m: print(f"  [devstack] {m}"))
    endpoints = stack.start()
    try:
        env = {**os.environ, **endpoints.as_env(), **STAGE_ENV,
               "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": "0",
               "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"faults-{uuid.uuid4().hex[:6]}"}
        settings = Settings.from_env(env)
        # Static group membership for the four stage processes (restarted in place after a kill:
        # they take their partitions back without waiting out the session timeout,
        # bench/bench_takeover.py); extra replicas ("recognize-2", "-3") are dynamic members.
        stage_env = {stage: {"OCRSTREAM_GROUP_INSTANCE_ID": f"{stage}-1"} for stage in STAGES}
        stage_env["recognize-2"] = stage_env["recognize-3"] = {"OCRSTREAM_GROUP_INSTANCE_ID": ""}
        with StageProcesses(env, logs, stage_env=stage_env) as stages:
            yield Rig(state_dir, stack, stages, settings, f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}",
                      docs, soak)
    finally:
        stop_running(state_dir)  # also what a scenario revived (started by another EmbeddedStack)
        stack.stop()
        purge(state_dir)


#: Stage settings of the suite (as tests/conftest.py's stack_env): short group timeouts and
#: retries, one ONNX thread (2-core CI machines), no metrics ports.
STAGE_ENV = {
    "OCRSTREAM_SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
    "OCRSTREAM_HEARTBEAT_INTERVAL_MS": "1000",
    "OCRSTREAM_METRICS_PORT": "0",
    "OCRSTREAM_RETRY_INITIAL_S": "0.2",
    "OCRSTREAM_RETRY_MAX_S": "2",
    "OCRSTREAM_RETRY_MAX_ATTEMPTS": "200",  # outages of ~a minute must not exhaust a record's retries
    "OCRSTREAM_S3_TIMEOUT_S": "3",
    "OCRSTREAM_POSTGRES_TIMEOUT_S": "3",
    "OCRSTREAM_KAFKA_REQUEST_TIMEOUT_MS": "10000",
    "OMP_WAIT_POLICY": "PASSIVE",
    "OCRSTREAM_ORT_THREADS": "1",
}
