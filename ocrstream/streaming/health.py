"""Liveness and readiness of a stage process, served beside ``/metrics`` on the metrics port.

* ``GET /healthz`` - 200 while the process and its HTTP thread are alive (liveness probe).
* ``GET /readyz`` - 200 when the stage is ready, else 503; both with a JSON body naming every
  check. Ready means: each dependency the stage needs answers (Kafka metadata, the S3 bucket,
  a fresh PostgreSQL connection running ``SELECT 1``; :data:`NEEDS`), the stage loop polled
  Kafka within ``health_max_poll_age_s``, and it is not stuck in retries (retries growing
  without a commit for longer than ``health_max_retry_s``).
* ``GET /metrics`` - the Prometheus exposition of the process's registry.

Dependencies are probed by :meth:`Health.run` in the stage's event loop every
``health_probe_interval_s`` seconds, each bounded by ``health_probe_timeout_s``; a probe that
is still hanging (e.g. a server that accepts but never answers) counts as failing.

Crash-only: when a dependency has failed every probe for longer than ``dependency_exit_s``
(e.g. the local stack came back elsewhere), :meth:`Health.run` records why in
:attr:`Health.stranded` and sets the process's stop event; the stage shuts down and exits with
status :data:`STRANDED_EXIT_STATUS` so that its supervisor restarts it with fresh settings,
instead of hanging on endpoints that will never answer. The HTTP
server runs in a daemon thread and only reads the last results, so a busy event loop never
makes ``/healthz`` time out.

The stage loop reports through two module-level hooks: :func:`mark_poll` after each poll of
Kafka and :func:`metrics.mark_commit` after each commit (read here from the registry).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3
from minio import Minio
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ocrstream.contracts.stages import OPTIONAL_PROCESSES, PROCESSES
from ocrstream.settings import Settings
from ocrstream.streaming import metrics

log = logging.getLogger(__name__)

#: Exit status of a process whose dependencies stayed unreachable (:attr:`Health.stranded`).
STRANDED_EXIT_STATUS = 3

#: What each process needs to be ready (ingest needs PostgreSQL too when duplicates are reused).
NEEDS = {name: spec.needs for name, spec in {**PROCESSES, **OPTIONAL_PROCESSES}.items()}


@dataclass
class Check:
    """Outcome of one readiness check: ``ok`` and a human-readable ``detail``."""

    ok: bool
    detail: str
    since: float = field(default_factory=time.time)


class Health:
    """Readiness state of one stage process (one instance per process: :data:`HEALTH`)."""

    def __init__(self) -> None:
        self.stage = ""
        self.settings: Settings | None = None
        self.needs: tuple[str, ...] = ()
        self.checks: dict[str, Check] = {}
        self.last_poll: float | None = None
        self.retrying_since: float | None = None
        self._retries_seen = 0.0
        self._commit_seen = 0.0
        self._kafka: Any = None  # aiokafka's AIOKafkaClient, made by the first probe
        self._s3: Minio | None = None
        self.stranded: str | None = None  # why the process gave up (crash-only), None while it has not

    def configure(self, stage: str, settings: Settings) -> None:
        """Set the stage and what it needs; every dependency starts as not yet checked."""
        self.stage, self.settings = stage, settings
        needs: tuple[str, ...] = NEEDS.get(stage, ("kafka",))
        if stage == "ingest" and settings.duplicates == "reuse":
            needs += ("postgres",)
        self.needs = needs
        self.checks = {name: Check(False, "not checked yet") for name in needs}
        self.stranded = None

    def stranded_for(self, now: float | None = None) -> tuple[float, str]:
        """``(seconds, name)`` of the dependency that has failed every probe the longest
        (``(0.0, "")`` when all answer)."""
        now = time.time() if now is None else now
        failing = [(now - c.since, name) for name, c in self.checks.items() if not c.ok]
        return max(failing) if failing else (0.0, "")

    def mark_poll(self) -> None:
        """The stage loop polled Kafka (hook in the stage runner)."""
        self.last_poll = time.time()

    # ---- readiness
    def readiness(self) -> tuple[bool, dict[str, dict[str, Any]]]:
        """(ready, {check name: {"ok", "detail"}}) from the last probe results and loop state."""
        s, now = self.settings, time.time()
        report = {name: {"ok": c.ok, "detail": c.detail} for name, c in self.checks.items()}
        if s is None:
            return False, {"configured": {"ok": False, "detail": "stage not started"}}
        if "kafka" not in self.needs:  # no Kafka loop to watch (the query API)
            return all(c["ok"] for c in report.values()), report
        age = None if self.last_poll is None else now - self.last_poll
        report["poll"] = {"ok": age is not None and age <= s.health_max_poll_age_s,
                          "detail": "no poll yet" if age is None else f"last poll {age:.1f} s ago"}
        stuck = None if self.retrying_since is None else now - self.retrying_since
        report["retries"] = {"ok": stuck is None or stuck <= s.health_max_retry_s,
                             "detail": "not retrying" if stuck is None
                             else f"retrying without a commit for {stuck:.0f} s"}
        return all(c["ok"] for c in report.values()), report

    def _track_retries(self) -> None:
        """Retrying = the retry counter grew since the last probe and no commit happened."""
        retries, commit = _stage_total(metrics.RETRIES, self.stage), _stage_total(metrics.LAST_COMMIT, self.stage)
        grew, committed = retries > self._retries_seen, commit > self._commit_seen
        self._retries_seen, self._commit_seen = retries, commit
        if grew and not committed:
            self.retrying_since = self.retrying_since or time.time()
        else:
            self.retrying_since = None

    # ---- probes
    async def run(self, stop: asyncio.Event) -> None:
        """Probe every dependency every ``health_probe_interval_s`` until ``stop``."""
        s = self.settings
        if s is None:  # not configured (a stage run in-process without run_stage): nothing to probe
            return
        pending: dict[str, asyncio.Task[None]] = {}
        try:
            while not stop.is_set():
                self._track_retries()
                for name in self.needs:
                    if name not in pending:  # each probe is bounded by health_probe_timeout_s
                        pending[name] = asyncio.create_task(self._probe(name))
                for name, task in list(pending.items()):
                    if task.done():
                        del pending[name]
                if self._give_up(stop):
                    return
                try:
                    await asyncio.wait_for(stop.wait(), timeout=s.health_probe_interval_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in pending.values():
                task.cancel()
            if self._kafka is not None:
                await self._kafka.close()

    def _give_up(self, stop: asyncio.Event) -> bool:
        """Crash-only (module doc): True, with :attr:`stranded` set and ``stop`` set, once a
        dependency has failed for longer than ``dependency_exit_s``."""
        s = self.settings
        assert s is not None
        failing_s, name = self.stranded_for()
        if not s.dependency_exit_s or failing_s <= s.dependency_exit_s:
            return False
        self.stranded = (f"{name} has not answered for {failing_s:.0f} s (OCRSTREAM_DEPENDENCY_EXIT_S="
                         f"{s.dependency_exit_s:g}): {self.checks[name].detail}")
        log.error("%s: stranded: %s; exiting with status %d so that the supervisor restarts it with fresh settings",
                  self.stage, self.stranded, STRANDED_EXIT_STATUS)
        stop.set()
        return True

    async def _probe(self, name: str) -> None:
        probe: Callable[[], Awaitable[str]] = getattr(self, f"_probe_{name}")
        started = time.time()
        assert self.settings is not None  # run() probes only once configured
        try:
            detail = await asyncio.wait_for(probe(), timeout=self.settings.health_probe_timeout_s)
            self.checks[name] = Check(True, detail, started)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - any failure means not ready
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else f"{type(exc).__name__}: {exc}"
            previous = self.checks.get(name)
            since = previous.since if previous is not None and not previous.ok else started  # failing since
            self.checks[name] = Check(False, reason[:300], since)

    async def _probe_kafka(self) -> str:
        from ocrstream.streaming.kafka import client_options
        from ocrstream.streaming.offsets import bootstrap_client

        s = self.settings
        assert s is not None
        if self._kafka is None:
            self._kafka = await bootstrap_client({**client_options(s),
                                                  "request_timeout_ms": int(s.health_probe_timeout_s * 1000)})
        metadata = await self._kafka.fetch_all_metadata()
        if not metadata.brokers():
            raise ConnectionError("no broker in the metadata")
        return f"{len(metadata.brokers())} broker(s)"

    async def _probe_s3(self) -> str:
        s = self.settings
        assert s is not None
        if self._s3 is None:  # its own client: short timeouts, no retries
            timeout = urllib3.Timeout(connect=s.health_probe_timeout_s, read=s.health_probe_timeout_s)
            self._s3 = Minio(s.s3_endpoint, access_key=s.s3_access_key, secret_key=s.s3_secret_key.get_secret_value(),
                             secure=s.s3_secure, region=s.s3_region,
                             http_client=urllib3.PoolManager(timeout=timeout, retries=False))
        if not await asyncio.to_thread(self._s3.bucket_exists, s.s3_bucket):
            raise LookupError(f"bucket {s.s3_bucket} does not exist")
        return f"bucket {s.s3_bucket}"

    async def _probe_postgres(self) -> str:
        import asyncpg  # here: processes that import the stage runtime without serving probes need no driver

        s = self.settings
        assert s is not None
        timeout = s.health_probe_timeout_s
        conn = await asyncpg.connect(s.dsn, timeout=timeout)
        try:
            await conn.fetchval("SELECT 1", timeout=timeout)
        finally:
            await conn.close(timeout=timeout)
        return "SELECT 1 ok"


def _stage_total(metric: Any, stage: str) -> float:
    """Sum of ``metric``'s samples labelled ``stage`` (counters: their ``_total`` samples)."""
    return float(sum(s.value for m in metric.collect() for s in m.samples
               if s.labels.get("stage") == stage and not s.name.endswith("_created")))


HEALTH = Health()


def mark_poll() -> None:
    """Hook: the stage loop just polled Kafka."""
    HEALTH.mark_poll()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._send(200, json.dumps({"ok": True, "stage": HEALTH.stage}).encode(), "application/json")
        elif path == "/readyz":
            ready, report = HEALTH.readiness()
            body = json.dumps({"ready": ready, "stage": HEALTH.stage, "checks": report}).encode()
            self._send(200 if ready else 503, body, "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz, /readyz\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: Any) -> None:  # probes every few seconds: keep logs quiet
        log.debug("%s %s", self.address_string(), fmt % args)


def serve(port: int, stage: str, settings: Settings, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Configure :data:`HEALTH` for ``stage`` and serve /metrics, /healthz, /readyz on
    ``host:port`` in a daemon thread (None and nothing served for port 0)."""
    HEALTH.configure(stage, settings)
    if not port:
        return None
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    return server
