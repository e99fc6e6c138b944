"""``ocrstream status``: is the pipeline running, is anything stuck, what failed last, what to do.

:func:`collect` checks, concurrently and each within a few seconds:

* the stack's endpoints: the Kafka API (a metadata request; which pipeline topics exist), S3 (the
  bucket), PostgreSQL (a query), the ingest HTTP API (``/healthz``) and the query API
  (``/healthz``), at the addresses of this process's settings (``OCRSTREAM_*``, or the dev
  stack's ``.ocrstream/dev/stack.env``);
* each stage: its consumer group as the broker sees it (state and members: one member per
  running process, wherever it runs), the stage processes on this host that talk to the same
  broker (PID, uptime, RSS, log file, from ``/proc``), readiness (a process runs and the group is
  ``Stable`` with at least one member: models loaded, partitions assigned; with a broker on
  loopback, as the embedded one, "a process runs" means one on this host, because tansu keeps
  a stopped process in the member list), what each of those processes says of itself: its own
  ``GET /readyz`` on its metrics port (from its environment or dotenv file), asked with a
  :data:`READYZ_TIMEOUT_S` timeout (:func:`probe_readyz`: ``ready``, ``not ready``, ``stranded``
  when a dependency it needs does not answer it, ``frozen`` when it does not answer at all, e.g.
  ``kill -STOP``; any of the last three makes the stage not ready), and consumer lag computed from outside:
  the fetch high-water mark of each input partition minus the group's committed offset (see
  :mod:`ocrstream.streaming.offsets`);
* documents ``done``/``failed`` in the last hour, their pages by text source (read from the
  PDF's text layer or OCRed), and the last few failures with the stage and error type
  (PostgreSQL ``documents``, ``pages``).

Every problem found comes with what to do about it. :func:`render` draws one screen (rich
tables); :meth:`StatusReport.as_dict` is the ``--json`` form. Exit code (:attr:`StatusReport.exit_code`):
0 healthy, 1 something is down or not ready, 3 no stack at all (nothing answers).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ocrstream.contracts import events
from ocrstream.contracts.stages import STAGE_INPUTS
from ocrstream.environment import env_file_path
from ocrstream.settings import Settings

CHECK_TIMEOUT_S = 5.0
RECENT_WINDOW_S = 3600
#: How long a stage process has to answer its ``/readyz`` before it counts as frozen, seconds.
READYZ_TIMEOUT_S = 3.0
#: The dependencies a stage's ``/readyz`` checks (ocrstream/streaming/health.py): failing ones strand it.
DEPENDENCIES = ("kafka", "s3", "postgres")


@dataclass
class Endpoint:
    """One service of the stack: ``ok`` None means not configured (port 0)."""

    name: str
    address: str
    ok: bool | None
    detail: str = ""
    latency_ms: float | None = None


@dataclass
class StageProcess:
    """A stage process on this host (from /proc) and what its own ``/readyz`` said: ``readiness``
    is ``ready``, ``not ready``, ``stranded`` (a dependency does not answer it), ``frozen`` (no
    answer within :data:`READYZ_TIMEOUT_S`) or ``unknown`` (no readiness port: metrics off, or
    not open yet)."""

    pid: int
    uptime_s: float
    rss_mib: float
    log: str | None
    metrics_port: int | None = None
    readiness: str = "unknown"
    readiness_detail: str = ""
    #: what its models run on, from its ``/metrics`` (:func:`probe_runs_on`): recognize's provider
    #: (``CPUExecutionProvider-int8``), preprocess's detector backend (``openvino-bf16``); "" if none
    runs_on: str = ""

    @property
    def unready(self) -> bool:
        """The process says it is not ready, or cannot say (frozen)."""
        return self.readiness in ("not ready", "stranded", "frozen")


@dataclass
class StageStatus:
    """A stage's consumer group, processes, readiness and lag (messages not yet committed)."""

    name: str
    consumes: list[str]
    group: str
    group_state: str | None = None
    members: int | None = None
    processes: list[StageProcess] = field(default_factory=list)
    running: bool = False
    ready: bool = False
    lag: int | None = None
    lag_by_topic: dict[str, int] = field(default_factory=dict)


@dataclass
class Failure:
    """A recently failed document."""

    document_id: str
    filename: str | None
    stage: str | None
    error_type: str | None
    message: str | None
    at: str | None


@dataclass
class Problem:
    """Something down or stuck, and what to do about it."""

    what: str
    do: str


@dataclass
class StatusReport:
    """Everything ``ocrstream status`` shows."""

    checked_at: str
    endpoints: list[Endpoint]
    stages: list[StageStatus]
    #: {"done": n, "failed": n, "pages_pdf_text": n, "pages_ocr": n} in the last hour (pages by where their
    #: text came from: the PDF's text layer or OCR); None if unknown
    documents: dict[str, int] | None
    failures: list[Failure]
    problems: list[Problem]
    #: webhook deliveries in the outbox by status: {"pending": n, "failed": n} (all time; ``ocrstream
    #: webhook list --failed``); None if unknown (no outbox table yet, PostgreSQL down)
    webhooks: dict[str, int] | None = None

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def no_stack(self) -> bool:
        """Nothing of the stack answers (Kafka, S3 and PostgreSQL all unreachable)."""
        return all(e.ok is False for e in self.endpoints if e.name in ("Kafka API", "S3", "PostgreSQL"))

    @property
    def exit_code(self) -> int:
        return 3 if self.no_stack else 0 if self.healthy else 1

    def as_dict(self) -> dict:
        return {"healthy": self.healthy, **asdict(self)}


async def _timed(coro, timeout_s: float = CHECK_TIMEOUT_S):
    """(result, milliseconds) of ``coro``; raises its exception or TimeoutError."""
    started = time.perf_counter()
    result = await asyncio.wait_for(coro, timeout_s)
    return result, (time.perf_counter() - started) * 1000


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__


async def check_kafka(settings: Settings) -> Endpoint:
    """A metadata request; the detail says which pipeline topics exist."""
    from ocrstream.streaming.kafka import client_options
    from ocrstream.streaming.offsets import topic_names

    try:
        topics, ms = await _timed(topic_names({**client_options(settings), "request_timeout_ms": 3000}))
    except Exception as exc:  # noqa: BLE001 - reported
        return Endpoint("Kafka API", settings.kafka_bootstrap, False, _error(exc))
    present = [t for t in events.ALL_TOPICS if t in topics]
    return Endpoint("Kafka API", settings.kafka_bootstrap, True,
                    f"{len(present)}/{len(events.ALL_TOPICS)} pipeline topics", ms)


async def check_s3(settings: Settings) -> Endpoint:
    """The bucket exists (a client that fails fast: no urllib3 retries)."""
    import minio
    import urllib3

    def probe() -> bool:
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=3), retries=urllib3.Retry(total=0))
        client = minio.Minio(settings.s3_endpoint, access_key=settings.s3_access_key,
                             secret_key=settings.s3_secret_key.get_secret_value(), secure=settings.s3_secure,
                             region=settings.s3_region, http_client=http)
        return client.bucket_exists(settings.s3_bucket)

    try:
        exists, ms = await _timed(asyncio.to_thread(probe))
    except Exception as exc:  # noqa: BLE001 - reported
        return Endpoint("S3", settings.s3_endpoint, False, _error(exc))
    return Endpoint("S3", settings.s3_endpoint, True,
                    f"bucket {settings.s3_bucket}" + ("" if exists else " not created yet (ingest creates it)"), ms)


async def check_postgres(settings: Settings, n_failures: int) -> tuple[Endpoint, dict | None, list[Failure]]:
    """Connect and read the last hour's counts and the last ``n_failures`` failures."""
    import asyncpg

    from ocrstream.storage import documents

    address = settings.dsn.rsplit("@", 1)[-1]

    async def probe():
        conn = await asyncpg.connect(settings.dsn, timeout=3)
        try:
            if not await documents.has_documents_table(conn):
                return None, []
            counts = await documents.recent_counts(conn, RECENT_WINDOW_S)
            pages = await documents.recent_page_sources(conn, RECENT_WINDOW_S)
            return ({**counts, **{f"pages_{k.replace('-', '_')}": v for k, v in pages.items()}},
                    await documents.last_failures(conn, n_failures))
        finally:
            await conn.close()

    try:
        (counts, rows), ms = await _timed(probe())
    except Exception as exc:  # noqa: BLE001 - reported
        return Endpoint("PostgreSQL", address, False, _error(exc)), None, []
    if counts is None:
        return Endpoint("PostgreSQL", address, True, "no documents table yet (the store stage creates it)"), None, []
    failures = [Failure(r["document_id"], r["filename"], r["error_stage"], r["error_type"],
                        (r["error_message"] or "")[:160], r["stored_at"].isoformat() if r["stored_at"] else None)
                for r in rows]
    return (Endpoint("PostgreSQL", address, True, "documents table", ms),
            {"done": counts.get("done", 0), "failed": counts.get("failed", 0),
             "pages_pdf_text": counts.get("pages_pdf_text", 0), "pages_ocr": counts.get("pages_ocr", 0)}, failures)


async def check_webhooks(settings: Settings) -> dict[str, int] | None:
    """Webhook deliveries pending and failed (ocrstream/storage/outbox.py); None when unknown."""
    import asyncpg

    from ocrstream.storage import outbox

    async def probe() -> dict[str, int] | None:
        conn = await asyncpg.connect(settings.dsn, timeout=3)
        try:
            if not await conn.fetchval("SELECT to_regclass('webhook_outbox') IS NOT NULL"):
                return None
            counts = await outbox.open_counts(conn)
            return {"pending": counts.get("pending", 0), "failed": counts.get("failed", 0)}
        finally:
            await conn.close()

    try:
        return (await _timed(probe()))[0]
    except Exception:  # noqa: BLE001 - PostgreSQL's own check reports why
        return None


async def check_http(name: str, host: str, port: int) -> Endpoint:
    """``GET /healthz`` on a stage's HTTP API (``ok`` None when the port is 0: not served)."""
    import httpx

    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{host}:{port}"
    if not port:
        return Endpoint(name, "-", None, "off (port 0)")
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            response, ms = await _timed(client.get(url + "/healthz"))
        response.raise_for_status()
    except Exception as exc:  # noqa: BLE001 - reported
        return Endpoint(name, url, False, _error(exc))
    return Endpoint(name, url, True, "GET /healthz", ms)


async def probe_readyz(port: int, timeout_s: float = READYZ_TIMEOUT_S, host: str = "127.0.0.1") -> tuple[str, str]:
    """``(readiness, detail)`` of the stage process serving ``/readyz`` on ``host:port``:
    ``ready`` (200), ``stranded`` (503 with a dependency check failing, other than "not checked
    yet"), ``not ready`` (any other 503 or status), ``frozen`` (no answer within ``timeout_s``:
    stopped or hung), ``unknown`` (nothing listens: metrics off, or the process is starting)."""
    import httpx

    where = f"/readyz on port {port}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await asyncio.wait_for(client.get(f"http://{host}:{port}/readyz"), timeout_s)
    except (httpx.TimeoutException, asyncio.TimeoutError):
        return "frozen", f"{where} did not answer within {timeout_s:g} s"
    except httpx.TransportError as exc:
        return "unknown", f"{where}: {_error(exc)}"
    if response.status_code == 200:
        return "ready", f"{where}: ready"
    try:
        checks = response.json().get("checks") or {}
    except (ValueError, AttributeError):
        checks = {}
    failing = {name: str(c.get("detail", "")) for name, c in checks.items() if isinstance(c, dict) and not c.get("ok")}
    stranded = [n for n in DEPENDENCIES if n in failing and failing[n] != "not checked yet"]
    if stranded:
        return "stranded", "cannot reach " + "; ".join(f"{n} ({failing[n][:120]})" for n in stranded)
    return "not ready", "; ".join(f"{n}: {d[:120]}" for n, d in failing.items()) or f"{where}: HTTP {response.status_code}"


#: ``ocrstream_stage_info`` keys that say what a stage's models run on (issue 22: the backend chosen
#: by the CPU's capabilities at start), in the order :func:`probe_runs_on` joins them.
RUNS_ON_KEYS = ("provider", "detector_backend")


async def probe_runs_on(port: int, timeout_s: float = READYZ_TIMEOUT_S, host: str = "127.0.0.1") -> str:
    """What the models of the stage process serving ``/metrics`` on ``host:port`` run on: the values
    of its ``ocrstream_stage_info`` series with a key in :data:`RUNS_ON_KEYS`, joined by ", "
    (parsed by ``prometheus_client``'s text parser); "" when it has none or does not answer."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await asyncio.wait_for(client.get(f"http://{host}:{port}/metrics"), timeout_s)
    except (httpx.HTTPError, asyncio.TimeoutError):
        return ""
    if response.status_code != 200:
        return ""
    found: dict[str, str] = {}
    try:
        for family in text_string_to_metric_families(response.text):
            if family.name == "ocrstream_stage_info":
                found.update((x.labels["key"], x.labels["value"]) for x in family.samples
                             if x.labels.get("key") in RUNS_ON_KEYS and x.value)
    except ValueError:  # not Prometheus text
        return ""
    return ", ".join(found[k] for k in RUNS_ON_KEYS if k in found)


async def ask_processes(local: dict[str, list[StageProcess]]) -> None:
    """Ask every local stage process's ``/readyz`` at once (each within :data:`READYZ_TIMEOUT_S`),
    then, of those that answered, what their models run on (:func:`probe_runs_on`); the answers go
    into the processes."""
    procs = [p for ps in local.values() for p in ps if p.metrics_port]

    async def ask(p: StageProcess) -> None:
        assert p.metrics_port
        p.readiness, p.readiness_detail = await probe_readyz(p.metrics_port)
        if p.readiness not in ("frozen", "unknown"):
            p.runs_on = await probe_runs_on(p.metrics_port)

    await asyncio.gather(*(ask(p) for p in procs))


async def check_stages(settings: Settings, local: dict[str, list[StageProcess]] | None = None,
                       extra: Sequence[StageStatus] = ()) -> list[StageStatus]:
    """Group state, members, committed offsets and lag of every stage and of ``extra`` groups
    (shadow models, :func:`shadow_stages`; Kafka must answer); ``local``: this host's stage
    processes (default: found now), with their ``/readyz`` answers."""
    from ocrstream.streaming.offsets import committed_offsets, describe_groups, fetch_highwaters, partitions_of, probe_consumer

    stages = [StageStatus(name, list(topics), f"{settings.consumer_group_prefix}-{name}")
              for name, topics in STAGE_INPUTS.items()] + list(extra)
    probe = probe_consumer(settings, fetch_max_wait_ms=10)
    await probe.start()
    try:
        partitions = await partitions_of(probe, sorted({t for s in stages for t in s.consumes}))
        probe.assign(partitions)
        highwaters = await fetch_highwaters(probe, partitions, timeout_s=CHECK_TIMEOUT_S)
        beginnings = await probe.beginning_offsets(partitions) if partitions else {}
    finally:
        await probe.stop()
    groups = await describe_groups(settings, [s.group for s in stages])
    committed = await asyncio.gather(*[
        committed_offsets(settings, s.group, [tp for tp in partitions if tp.topic in s.consumes]) for s in stages])
    local = local_stage_processes(settings) if local is None else local
    loopback = all(_is_loopback(address.rsplit(":", 1)[0]) for address in settings.kafka_bootstrap.split(","))
    for stage, offsets in zip(stages, committed):
        group = groups.get(stage.group)
        stage.group_state = group.state if group else "Dead"
        stage.members = len(group.members) if group else 0
        stage.processes = local.get(stage.name, [])
        # A broker on loopback only serves this host, so this host's processes are the truth
        # (tansu keeps a stopped process in the group's member list).
        stage.running = bool(stage.processes) if loopback else stage.members > 0
        stage.ready = stage.running and stage.group_state == "Stable" and stage.members > 0 \
            and not any(p.unready for p in stage.processes)
        for tp, offset in offsets.items():
            behind = max(0, highwaters[tp] - (beginnings[tp] if offset is None else offset))
            stage.lag_by_topic[tp.topic] = stage.lag_by_topic.get(tp.topic, 0) + behind
        stage.lag = sum(stage.lag_by_topic.values())
    return stages


def _is_loopback(host: str) -> bool:
    import ipaddress

    host = host.strip().strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _setting_of(pid: int, variable: str) -> str | None:
    """The value of ``variable`` (``OCRSTREAM_...``) a process uses: its environment, else the
    dotenv file it reads; None when neither sets it."""
    env = _env_of(pid)
    if variable in env:
        return env[variable]
    env_file = env_file_path(env, Path(os.readlink(f"/proc/{pid}/cwd")))
    if env_file is not None:
        for line in env_file.read_text().splitlines():
            if line.startswith(variable + "="):
                return line.split("=", 1)[1].strip()
    return None


def _bootstrap_of(pid: int) -> str:
    """The Kafka bootstrap a stage process uses: its environment, else the dotenv file it reads."""
    return _setting_of(pid, "OCRSTREAM_KAFKA_BOOTSTRAP") or Settings.model_fields["kafka_bootstrap"].default


def _metrics_port_of(pid: int, stage: str) -> int | None:
    """The port of a stage process's ``/metrics`` and ``/readyz`` (None: off, or unreadable)."""
    from ocrstream.contracts.stages import metrics_port

    value = _setting_of(pid, "OCRSTREAM_METRICS_PORT")
    if value is None or not value.strip():
        return metrics_port(stage, None)
    return int(value) if value.strip().isdigit() and 0 < int(value) < 65536 else None


def local_stage_processes(settings: Settings, names: Iterable[str] = tuple(STAGE_INPUTS)) -> dict[str, list[StageProcess]]:
    """``{stage: [StageProcess]}`` of ``ocrstream run STAGE`` processes on this host (``STAGE`` one of
    ``names``: the four stages by default) that use the same Kafka bootstrap as ``settings`` (other
    stacks' stages are left out)."""
    wanted = frozenset(names)
    ticks, boot_uptime = os.sysconf("SC_CLK_TCK"), float(Path("/proc/uptime").read_text().split()[0])
    found: dict[str, list[StageProcess]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stage = next((argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "run"
                          and argv[i + 1] in wanted), None)
            if stage == "recognize" and "--shadow" in argv[:-1]:  # a shadow model, by its sha256's first 12 hex
                stage = f"recognize-shadow-{argv[argv.index('--shadow') + 1][:12]}"
            if stage is None or not any(a == "ocrstream.cli" or a.endswith("ocrstream") for a in argv):
                continue
            if _bootstrap_of(pid) != settings.kafka_bootstrap:
                continue
            stat = (entry / "stat").read_text()
            started_s = int(stat[stat.rindex(")") + 2:].split()[19]) / ticks
            rss_kib = next((int(line.split()[1]) for line in (entry / "status").read_text().splitlines()
                            if line.startswith("VmRSS:")), 0)
            log = os.readlink(entry / "fd" / "1")
            port = _metrics_port_of(pid, "recognize-shadow" if stage.startswith("recognize-shadow-") else stage)
        except (OSError, ValueError, StopIteration):
            continue  # gone meanwhile, or not ours to read
        found.setdefault(stage, []).append(StageProcess(
            pid, round(boot_uptime - started_s, 1), round(rss_kib / 1024, 1), log if log.startswith("/") else None,
            port))
    return found


def find_problems(endpoints: list[Endpoint], stages: list[StageStatus]) -> list[Problem]:
    """What is down or not ready, each with the command or check that fixes it."""
    problems = []
    by_name = {e.name: e for e in endpoints}
    for e in endpoints:
        if e.ok is not False:
            continue
        if e.name in ("Kafka API", "S3", "PostgreSQL"):
            problems.append(Problem(f"{e.name} at {e.address} does not answer",
                                    "local stack: `ocrstream dev down && ocrstream dev up` (logs in "
                                    ".ocrstream/dev/logs/); elsewhere check OCRSTREAM_* and the service"))
        else:
            stage = "ingest" if e.name.startswith("ingest") else "api"
            problems.append(Problem(f"{e.name} at {e.address} does not answer",
                                    f"it is served by `ocrstream run {stage}`: start that stage, or give it and "
                                    f"this command the same OCRSTREAM_{'HTTP' if stage == 'ingest' else 'QUERY'}_PORT"))
    if by_name.get("Kafka API") and by_name["Kafka API"].ok is False:
        return problems  # stages cannot be seen without the broker
    for s in stages:
        if s.ready:
            continue
        waiting = f"; {s.lag} message(s) wait for it" if s.lag else ""
        log = next((p.log for p in s.processes if p.log), None)
        if any(p.unready for p in s.processes):
            problems.extend(process_problem(s.name, p, waiting) for p in s.processes if p.unready)
        elif s.running:
            pids = ", ".join(str(p.pid) for p in s.processes) or "elsewhere"
            problems.append(Problem(
                f"stage {s.name} is not ready (process {pids} running, group {s.group} {s.group_state}){waiting}",
                "it is starting (loading models, joining its group) or stuck: wait a minute, then read "
                + (f"its log {log}" if log else "its log")))
        else:
            where = "no process on this host" if s.members else f"no member in group {s.group}"
            problems.append(Problem(f"stage {s.name} is not running ({where}){waiting}",
                                    f"start it: `ocrstream run {s.name}` (with the same OCRSTREAM_* settings)"))
    return problems


async def shadow_stages(settings: Settings) -> list[StageStatus]:
    """A :class:`StageStatus` per shadow model registered in PostgreSQL (``model_shadows``: ``ocrstream
    run recognize --shadow SHA``), named ``recognize-shadow-<sha256[:12]>``; [] when PostgreSQL does
    not answer or no shadow ever ran."""
    import asyncpg

    from ocrstream.contracts.events import REGIONS
    from ocrstream.storage.models import shadows

    try:
        conn = await asyncpg.connect(settings.dsn, timeout=3)
        try:
            rows = await shadows(conn)
        finally:
            await conn.close()
    except Exception:  # noqa: BLE001 - PostgreSQL's own check reports it
        return []
    return [StageStatus(f"recognize-shadow-{r['sha256'][:12]}", [REGIONS], r["consumer_group"]) for r in rows]


def process_problem(stage: str, p: StageProcess, waiting: str = "") -> Problem:
    """The problem of a stage process whose ``/readyz`` says it is not ready, or does not answer."""
    log = f"its log {p.log}" if p.log else "its log"
    if p.readiness == "frozen":
        return Problem(f"stage {stage} (pid {p.pid}) is frozen: {p.readiness_detail}{waiting}",
                       f"if it was stopped (`kill -STOP`), `kill -CONT {p.pid}`; otherwise it is hung: restart it "
                       f"(`kill {p.pid}`, then `ocrstream run {stage}`; a supervisor restarts it by itself) and read {log}")
    if p.readiness == "stranded":
        return Problem(f"stage {stage} (pid {p.pid}) is stranded: {p.readiness_detail}{waiting}",
                       "check that the dependency runs at the address the stage was started with (after "
                       f"`ocrstream dev down`/`dev up`: `ocrstream dev up` again on the same state dir), then restart "
                       f"the stage if it does not recover; read {log}")
    return Problem(f"stage {stage} (pid {p.pid}) is not ready: {p.readiness_detail}{waiting}",
                   f"it is starting (loading models, joining its group) or stuck: wait a minute, then read {log}")


async def collect(settings: Settings, *, n_failures: int = 5) -> StatusReport:
    """Run every check; the :class:`StatusReport`."""
    import aiokafka  # noqa: F401
    import asyncpg  # noqa: F401 - imported before the concurrent checks so that no check's
    import httpx  # noqa: F401   latency includes another's imports
    import minio  # noqa: F401

    local = await asyncio.to_thread(local_stage_processes, settings)
    shadows = asyncio.create_task(shadow_stages(settings))  # beside the checks below
    hooks = asyncio.create_task(check_webhooks(settings))
    kafka, s3, (pg, documents, failures), ingest_api, query_api, _ = await asyncio.gather(
        check_kafka(settings), check_s3(settings), check_postgres(settings, n_failures),
        check_http("ingest API", settings.http_host, settings.http_port),
        check_http("query API", settings.http_host, settings.query_port), ask_processes(local))
    webhooks = await hooks
    shadow = await shadows
    endpoints = [kafka, s3, pg, ingest_api, query_api]
    stages = [StageStatus(name, list(topics), f"{settings.consumer_group_prefix}-{name}")
              for name, topics in STAGE_INPUTS.items()] + shadow
    if kafka.ok:
        try:
            stages = await asyncio.wait_for(check_stages(settings, local, shadow), 3 * CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - reported as a problem of the broker
            kafka.ok, kafka.detail = False, f"consumer groups unreadable: {_error(exc)}"
    # a shadow that is not running is no problem of the pipeline (it ran once, or is stopped on purpose)
    pipeline = [st for st in stages if st.name in STAGE_INPUTS]
    return StatusReport(datetime.now(timezone.utc).isoformat(timespec="seconds"), endpoints, stages,
                        documents, failures, find_problems(endpoints, pipeline), webhooks)


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


#: Below this many columns (``COLUMNS``, the terminal, or 80 when piped) :func:`render` uses its narrow
#: layout: no column of topics or details, one process per line, failures as two lines each.
WIDE_COLUMNS = 120


def render(report: StatusReport, console=None) -> None:
    """Draw the report as one screen of rich tables on ``console`` (default: stdout, as wide as the
    terminal or ``COLUMNS``); no line is wider than the console, and under :data:`WIDE_COLUMNS`
    columns a narrower layout keeps each row on one line where it can."""
    from rich.console import Console

    console = console or Console()
    narrow = console.width < WIDE_COLUMNS
    verdict = "[bold green]healthy[/]" if report.healthy else f"[bold red]UNHEALTHY[/] ({len(report.problems)} problem(s))"
    console.print(f"[bold]ocrstream status[/]  {report.checked_at}  {verdict}")
    console.print(_stack_table(report.endpoints, narrow))
    if narrow:
        for e in report.endpoints:
            if e.ok is False and e.detail:
                console.print(f"  {e.name}: {e.detail}", markup=False)
    console.print(_stages_table(report.stages, narrow))
    docs = report.documents
    console.print("documents in the last hour: " + (
        "unknown" if docs is None else f"[green]{docs['done']} done[/], "
        + (f"[red]{docs['failed']} failed[/]" if docs["failed"] else "0 failed")
        + f"; pages: {docs.get('pages_pdf_text', 0)} read from the PDF's text, {docs.get('pages_ocr', 0)} OCRed"))
    if (hooks := report.webhooks) is not None:
        console.print(f"webhooks: {hooks['pending']} pending, " + (
            f"[red]{hooks['failed']} failed[/] (ocrstream webhook list --failed; ocrstream webhook replay)"
            if hooks["failed"] else "0 failed"))
    if report.failures and narrow:
        console.print("[bold]last failures[/]")
        for f in report.failures:
            console.print(f"  {(f.at or '')[11:19]}  {f.document_id[:12]}  {f.stage or '-'}  {f.error_type or '-'}",
                          markup=False)
            console.print(f"      {f.filename or '-'}: {(f.message or '')[:160]}", markup=False)
    elif report.failures:
        console.print(_failures_table(report.failures))
    if report.problems:
        console.print("[bold]what to do[/]")
        for p in report.problems:
            console.print(f" [red]x[/] {p.what}")
            console.print(f"     -> {p.do}", markup=False)
    else:
        console.print("[green]everything answers and every stage is ready[/]")


def _table(title: str, columns: dict[str, str]):
    """A rich table with ``columns`` ({name: justify}), as every table of :func:`render` looks."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    for name, justify in columns.items():
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    return table


def _stack_table(endpoints: list[Endpoint], narrow: bool):
    mark = {True: "[green]ok[/]", False: "[red]DOWN[/]", None: "[dim]off[/]"}
    columns = {"component": "left", "address": "left", "state": "left", "ms": "right"}
    table = _table("stack", columns if narrow else {**columns, "detail": "left"})
    for e in endpoints:
        row = [e.name, e.address, mark[e.ok], f"{e.latency_ms:.0f}" if e.latency_ms is not None else ""]
        table.add_row(*row, *([] if narrow else [e.detail]))
    return table


def _stages_table(stages: list[StageStatus], narrow: bool):
    if narrow:
        table = _table("stages", {"stage": "left", "group": "left", "ready": "left", "lag": "right",
                                  "pid, uptime, RSS": "left"})
        table.columns[-1].no_wrap = True
    else:
        table = _table("stages", {"stage": "left", "consumes": "left", "group members": "left",
                                  "processes on this host": "left", "ready": "left", "lag": "right"})
    for s in stages:
        procs = [f"{'' if narrow else 'pid '}{p.pid}{',' if narrow else ' up'} {_age(p.uptime_s)}{',' if narrow else ''} "
                 f"{p.rss_mib:.0f} MiB" + ("" if p.readiness in ("ready", "unknown") else f" [red]{p.readiness.upper()}[/]")
                 + ("" if narrow or not p.runs_on else f" on {p.runs_on}")
                 for p in s.processes]
        members = "?" if s.members is None else f"{s.members} ({s.group_state})"
        ready = "[green]yes[/]" if s.ready else "[red]no[/]"
        lag = "?" if s.lag is None else str(s.lag)
        if narrow:
            name = f"shadow-{s.name.removeprefix('recognize-shadow-')[:8]}" if s.name.startswith("recognize-shadow-") else s.name
            table.add_row(name, members, ready, lag, "\n".join(procs) or "-")
        else:
            table.add_row(s.name, ", ".join(s.consumes), members, ", ".join(procs) or "-", ready, lag)
    return table


def _failures_table(failures: list[Failure]):
    table = _table("last failures", {c: "left" for c in ("stored", "document", "file", "stage", "error type",
                                                         "message")})
    for f in failures:
        table.add_row((f.at or "")[11:19], f.document_id[:12], f.filename or "-", f.stage or "-",
                      f.error_type or "-", (f.message or "")[:80])
    return table
