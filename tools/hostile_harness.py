"""Submit the hostile corpus (:mod:`tools.hostile_corpus`) to a running pipeline and judge it.

Used by ``tests/test_hostile.py`` and ``bench/bench_hostile.py``; both start the embedded stack
and the four stage processes (:class:`ocrstream.ops.launcher.StageProcesses`) with :func:`hostile_env`,
then call :func:`run_corpus`.

Each (case, door) is submitted alone and resolved before the next, so its time and memory are
its own:

* CLI: ``python -m ocrstream.cli submit --wait --timeout 30 FILE`` (a subprocess; exit code and
  output kept; the document id is the 32-hex token it prints);
* HTTP: ``POST /v1/documents`` with a hand-built multipart body (so that filenames reach the
  server byte for byte: httpx would percent-escape a NUL) and ``Authorization: Bearer <key>``;
* raw topic: an aiokafka producer on ``ocr.raw.v1`` (key, ``filename``/``template`` headers).

A submission is resolved when its ``documents`` row appears in PostgreSQL (``done`` or
``failed`` with ``error_stage``/``error_type``), found by the id the door returned, or for the
raw topic by its key, the dead letter naming its partition/offset, or the SHA-256 of its bytes
(ids may be scoped by ingest); or when the door refused it. Peak RSS of each stage's process
tree (the stage and its children, e.g. preprocess's decoder workers) is sampled every 100 ms from
``/proc``; the kernel's own peak of each stage process (``VmHWM``) is read at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sys
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from ocrstream.contracts import events
from ocrstream.contracts.event_models import UNSET
from ocrstream.contracts.stages import STAGE_INPUTS
from ocrstream.errors import InvalidEventError
from ocrstream.ocr.evaluation import cer
from ocrstream.ops.launcher import STAGES, free_port
from ocrstream.settings import Settings
from tools.hostile_corpus import TEST_BUDGET_ENV, TEXT_MAX_CER, Budget, Case, Door, Expect, Key, corpus

RESOLVE_GOAL_S = 30.0  # issue 8: every bad document resolved within 30 s
POLL_LIMIT_S = 45.0  # how long a submission is waited for (slower than the goal = a problem, not lost)
WARMUP_S = 300.0  # the first submission waits for the models to load
PREPROCESS_RSS_GOAL_MIB = 1.5 * 1024  # issue 8: peak RSS of preprocess <= 1.5 GiB

#: The test environment: the corpus's budgets, and time limits under the 30-s resolve goal (a
#: hung decoder or handler must give up before it; the defaults are 60 s and 120 s).
TEST_LIMITS = {**TEST_BUDGET_ENV, "OCRSTREAM_DECODE_TIMEOUT_S": "20", "OCRSTREAM_RECORD_TIMEOUT_S": "25"}
BIDI_CONTROLS = set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
DOOR_SOURCE = {Door.CLI: "cli", Door.HTTP: "http", Door.RAW: "kafka"}


def hostile_env(base_env: dict[str, str], workdir: Path) -> dict[str, str]:
    """Environment of the stages and the CLI: ``base_env`` + test budgets, fresh ports and group, API keys file."""
    return {**base_env, **TEST_LIMITS,
            "OCRSTREAM_SESSION_TIMEOUT_MS": "6000", "OCRSTREAM_HEARTBEAT_INTERVAL_MS": "1000",
            "OCRSTREAM_RETRY_INITIAL_S": "0.2", "OCRSTREAM_RETRY_MAX_S": "2", "OCRSTREAM_ORT_THREADS": "1",
            "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": "0",  # no query API: the four stages
            "OCRSTREAM_METRICS_PORT": "0", "OMP_WAIT_POLICY": "PASSIVE",
            "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"hostile-{uuid.uuid4().hex[:6]}",
            "OCRSTREAM_API_KEYS_FILE": str(workdir / "api-keys")}


def create_api_key(env: dict[str, str]) -> tuple[str | None, str]:
    """``ocrstream apikey create hostile --scopes ingest,query``: (the key, or None; the command's output).

    The key is taken as the longest token of 20+ characters of ``[A-Za-z0-9_.~+/=-]`` in stdout.
    """
    import subprocess

    out = subprocess.run([sys.executable, "-m", "ocrstream.cli", "apikey", "create", "hostile",
                          "--scopes", "ingest,query"], env=env, capture_output=True, text=True, timeout=120)
    tokens = re.findall(r"[A-Za-z0-9_.~+/=-]{20,}", out.stdout) if out.returncode == 0 else []
    key = max(tokens, key=len) if tokens else None
    return key, (out.stdout + out.stderr).strip()


# --- observations ----------------------------------------------------------------------------------


@dataclass
class Observed:
    """What happened to one submission. ``outcome``: done, failed, refused, missing (accepted,
    no row within the poll limit) or error (the door itself broke: transport error, CLI timeout)."""

    outcome: str
    stage: str | None = None
    error_type: str | None = None
    http_status: int | None = None
    exit_code: int | None = None
    seconds: float = 0.0
    document_id: str | None = None
    row: dict | None = None
    output: str = ""  # CLI stdout+stderr, HTTP body (cut)

    def describe(self) -> str:
        http = f" (http {self.http_status})" if self.http_status not in (None, 202) else ""
        if self.outcome == "failed":
            return f"failed {self.stage}/{self.error_type}{http}"
        if self.outcome == "refused":
            return "refused" + (f" {self.http_status}" if self.http_status else f" exit {self.exit_code}")
        return self.outcome + http


@dataclass
class Row:
    """One line of the table: a (case, door) submission, expectation, observation, memory, problems."""

    case: Case
    door: Door
    expect: Expect
    observed: Observed
    rss_mib: dict[str, float]
    filename: str | bytes
    data_sha256: str
    data_bytes: int
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class Report:
    """The whole run: rows, stage PIDs before/after, peak memory per stage."""

    rows: list[Row]
    pids_before: dict[str, int]
    pids_after: dict[str, int | None]  # None: the process is gone
    peak_tree_mib: dict[str, float]
    vmhwm_mib: dict[str, float]
    api_key_note: str
    seconds: float
    lag: dict[str, int] = field(default_factory=dict)  # uncommitted input records per stage after the corpus

    @property
    def stuck_stages(self) -> dict[str, int]:
        return {s: n for s, n in self.lag.items() if n}

    @property
    def mismatches(self) -> list[Row]:
        return [r for r in self.rows if not r.ok]

    @property
    def crashed_stages(self) -> list[str]:
        return [s for s, pid in self.pids_before.items() if self.pids_after.get(s) != pid]

    def table(self) -> str:
        """The corpus table (markdown): input, door, expected, observed, time, peak RSS per stage."""
        head = ("| input | bytes | door | expected | observed | error type | s | "
                + " | ".join(f"{s} MiB" for s in STAGES) + " | verdict |")
        lines = [head, "|" + "---|" * (head.count("|") - 1)]
        for r in self.rows:
            o = r.observed
            rss = " | ".join(f"{r.rss_mib.get(s, 0):.0f}" for s in STAGES)
            verdict = "ok" if r.ok else "MISMATCH: " + "; ".join(r.problems)
            lines.append(f"| {r.case.name} | {r.data_bytes} | {r.door.value} | {r.expect.describe(r.door)} | "
                         f"{o.describe()} | {o.error_type or ''} | {o.seconds:.1f} | {rss} | "
                         f"{verdict.replace('|', '/')} |")
        return "\n".join(lines)

    def summary(self) -> str:
        stages = ", ".join(
            f"{s}: pid {self.pids_before[s]} -> {self.pids_after.get(s) or 'GONE'}, peak tree RSS "
            f"{self.peak_tree_mib.get(s, 0):.0f} MiB (VmHWM {self.vmhwm_mib.get(s, 0):.0f} MiB)" for s in STAGES)
        pre = max(self.peak_tree_mib.get("preprocess", 0), self.vmhwm_mib.get("preprocess", 0))
        cases = {r.case.name for r in self.rows}
        return (f"{len(cases)} cases, {len(self.rows)} submissions, {len(self.mismatches)} mismatches, "
                f"{self.seconds:.0f} s\nstages: {stages}\n"
                f"crashed/restarted stages: {', '.join(self.crashed_stages) or 'none'}; uncommitted input "
                f"records per stage after the corpus: {self.lag or 'not measured'}; preprocess peak "
                f"{pre:.0f} MiB (goal <= {PREPROCESS_RSS_GOAL_MIB:.0f}: {'met' if pre <= PREPROCESS_RSS_GOAL_MIB else 'MISSED'})"
                f"\nAPI key: {self.api_key_note}")

    def as_json(self) -> dict:
        return {"summary": self.summary(), "rows": [
            {"case": r.case.name, "door": r.door.value, "expected": r.expect.describe(r.door),
             "observed": r.observed.describe(), "error_type": r.observed.error_type,
             "seconds": round(r.observed.seconds, 2), "rss_mib": r.rss_mib, "problems": r.problems}
            for r in self.rows], "pids_before": self.pids_before, "pids_after": self.pids_after,
            "peak_tree_mib": self.peak_tree_mib, "vmhwm_mib": self.vmhwm_mib, "lag": self.lag}


# --- memory ------------------------------------------------------------------------------------------


def _status_kib(pid: int, field_name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (``/proc/PID/task/*/children``)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


class RssSampler(threading.Thread):
    """Samples the summed RSS of each stage's process tree every ``interval_s`` (MiB).

    ``window()`` starts a new per-submission window; ``window_peaks()`` its maxima; ``peaks`` the
    run's maxima. Children that live less than ``interval_s`` can be missed: the stage's own
    ``VmHWM`` (exact, kernel-kept) is reported beside it.
    """

    def __init__(self, pids: dict[str, int], interval_s: float = 0.1):
        super().__init__(daemon=True, name="rss-sampler")
        self.pids, self.interval_s = pids, interval_s
        self.peaks = {s: 0.0 for s in pids}
        self._last = dict(self.peaks)  # the latest sample: a window starts from it (short windows have no sample)
        self._window = dict(self.peaks)
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval_s):
            sample = {s: sum(_status_kib(p, "VmRSS") for p in process_tree(pid)) / 1024 for s, pid in self.pids.items()}
            with self._lock:
                self._last = sample
                for s, mib in sample.items():
                    self.peaks[s] = max(self.peaks[s], mib)
                    self._window[s] = max(self._window[s], mib)

    def window(self) -> None:
        with self._lock:
            self._window = dict(self._last)

    def window_peaks(self) -> dict[str, float]:
        with self._lock:
            return dict(self._window)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def vmhwm_mib(self) -> dict[str, float]:
        return {s: _status_kib(pid, "VmHWM") / 1024 for s, pid in self.pids.items()}


# --- checks ------------------------------------------------------------------------------------------


def unsafe_filename(name: str | None) -> str | None:
    """Why a stored filename is not sanitised (path parts, control/bidi characters, > 255 chars), or None."""
    if name is None:
        return None
    if len(name) > 255:
        return f"stored filename has {len(name)} characters"
    if "/" in name or "\\" in name or name in (".", ".."):
        return f"stored filename {name!r} is a path"
    if bad := [c for c in name if unicodedata.category(c) == "Cc" or c in BIDI_CONTROLS]:
        return f"stored filename {name!r} keeps control characters {bad!r}"
    return None


def missing_lines(text: str, lines: tuple[str, ...]) -> list[str]:
    """Expected ``lines`` with no line of ``text`` within TEXT_MAX_CER of them."""
    read = [line for line in re.split(r"[\n\f]", text) if line.strip()] or [""]
    return [want for want in lines if min(cer([got], [want], ci=True) for got in read) > TEXT_MAX_CER]


def compare(expect: Expect, door: Door, obs: Observed, goal_s: float = RESOLVE_GOAL_S) -> list[str]:
    """Every way ``obs`` differs from ``expect`` at ``door`` (empty: as expected); ``goal_s``: the
    time allowed to resolve (the first submission of a run also waits for the models to load)."""
    problems = []
    if obs.outcome != expect.outcome or (expect.outcome == "failed" and
                                          (obs.stage, obs.error_type) != (expect.stage, expect.error_type)):
        msg = f"expected {expect.describe(door)}, got {obs.describe()}"
        if obs.row and obs.row.get("error_message"):
            msg += f" ({obs.row['error_message'][:160]})"
        problems.append(msg)
    if door is Door.HTTP and obs.http_status != expect.http_status and obs.outcome != "error":
        problems.append(f"HTTP {obs.http_status}, expected {expect.http_status}")
    if door is Door.CLI and obs.outcome != "error":
        if expect.outcome == "done" and obs.exit_code != 0:
            problems.append(f"CLI exit {obs.exit_code} for a done document")
        if expect.outcome != "done" and obs.exit_code == 0:
            problems.append("CLI exit 0 for a document that is not done")
        if expect.outcome == "failed" and not (expect.error_type in obs.output and expect.stage in obs.output):
            problems.append("CLI output does not name the stage and error type")
    if obs.outcome == "done" and expect.outcome == "done" and expect.text:
        if lost := missing_lines(obs.row["text"], expect.text):
            problems.append(f"text {obs.row['text'][:80]!r} misses {lost}")
    if obs.row is not None and (why := unsafe_filename(obs.row.get("filename"))):
        problems.append(why)
    if obs.outcome in ("done", "failed", "refused") and obs.seconds > goal_s:
        problems.append(f"resolved in {obs.seconds:.0f} s > {goal_s:.0f} s")
    return problems


# --- stuck partitions --------------------------------------------------------------------------------



async def group_lag(settings: Settings) -> dict[str, int]:
    """Records not yet committed by each stage's consumer group: fetch high-water mark - committed
    offset, summed over its input partitions. tansu quirks: its end offsets are wrong after batched
    produce (so the high-water mark of a fetch is used) and AIOKafkaAdminClient's offset listing
    fails on it (so committed offsets come from a consumer carrying the group id that never
    subscribes, hence never joins the group). Issue 10's ocrstream/streaming/lag.py does the same for
    the exporter; this copy keeps the harness independent of it until both are merged.
    """
    from aiokafka import TopicPartition

    reader = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                              max_partition_fetch_bytes=settings.max_message_bytes)
    await reader.start()
    try:
        cluster = await reader._client.fetch_all_metadata()  # noqa: SLF001 - fresh partition counts
        lag = {}
        for stage, topics in STAGE_INPUTS.items():
            tps = [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
            group = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False,
                                     group_id=f"{settings.consumer_group_prefix}-{stage}")
            await group.start()
            try:
                committed = {tp: await group.committed(tp) or 0 for tp in tps}
            finally:
                await group.stop()
            reader.assign(tps)
            for tp in tps:  # one record before the committed offset: each fetch returns data
                reader.seek(tp, max(0, committed[tp] - 1))
            deadline = time.monotonic() + 5
            while any(reader.highwater(tp) is None for tp in tps) and time.monotonic() < deadline:
                await reader.getmany(*tps, timeout_ms=500, max_records=1)  # a fetch answer sets the high-water mark
            lag[stage] = sum(max(0, (reader.highwater(tp) or 0) - committed[tp]) for tp in tps)
        return lag
    finally:
        await reader.stop()


# --- the run -----------------------------------------------------------------------------------------


def multipart(field_name: str, filename: str, data: bytes, fields: dict[str, str]) -> tuple[bytes, str]:
    """A multipart/form-data body (RFC 7578) with the filename's UTF-8 bytes unescaped except ``"``."""
    boundary = f"hostile{uuid.uuid4().hex}"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    quoted = filename.replace('"', "%22").encode("utf-8", "surrogateescape")
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; filename="'.encode()
                 + quoted + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class HostileRun:
    """Submits cases one by one through their doors and resolves each (see module docstring)."""

    def __init__(self, settings: Settings, env: dict[str, str], pids: dict[str, int], api_key: str | None,
                 workdir: Path, log=print):
        self.settings, self.env, self.pids, self.api_key = settings, env, pids, api_key
        self.workdir, self.log = workdir, log
        self.budget = Budget.from_settings(settings)
        self.http_url = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
        self.run_tag = uuid.uuid4().hex[:6]
        self.dead_letters: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> document id
        self.first = True

    async def run(self, cases: list[Case] | None = None) -> Report:
        started = time.monotonic()
        cases = corpus() if cases is None else cases
        sampler = RssSampler(self.pids)
        sampler.start()
        self.db = await asyncpg.create_pool(self.settings.dsn, min_size=1, max_size=2)
        self.producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                         max_request_size=self.settings.max_message_bytes)
        await self.producer.start()
        stop = asyncio.Event()
        dlq_task = asyncio.create_task(self._follow_dlq(stop))
        self.http = httpx.AsyncClient(timeout=60)
        rows: list[Row] = []
        try:
            await self._wait_http()
            ids: dict[str, str] = {}  # case name -> document id at its first door (for victims)
            for case in cases:
                data = case.make(self.budget)
                for door, expect in case.expect.items():
                    sampler.window()
                    goal_s = WARMUP_S if self.first else RESOLVE_GOAL_S
                    obs, filename = await self._submit(case, door, data, ids)
                    row = Row(case, door, expect, obs, sampler.window_peaks(), filename,
                              hashlib.sha256(data).hexdigest(), len(data), compare(expect, door, obs, goal_s))
                    if case.victim:
                        row.problems += await self._victim_problems(case.victim, ids, rows)
                    rows.append(row)
                    ids.setdefault(case.name, obs.document_id)
                    self.log(f"{case.name:<26} {door.value:<4} {obs.describe():<44} {obs.seconds:5.1f} s  "
                             + ("ok" if row.ok else "MISMATCH: " + "; ".join(row.problems)))
            await asyncio.sleep(3)  # late dead letters of refused submissions would show now
            for row in rows:
                row.problems += await self._trace_problems(row)
            lag = await self._settled_lag()
        finally:
            stop.set()
            await dlq_task
            await self.http.aclose()
            await self.producer.stop()
            await self.db.close()
            sampler.stop()
        pids_after = {s: (pid if Path(f"/proc/{pid}").exists() and _status_kib(pid, "VmRSS") else None)
                      for s, pid in self.pids.items()}
        return Report(rows, dict(self.pids), pids_after, sampler.peaks, sampler.vmhwm_mib(),
                      "created" if self.api_key else "NONE (ocrstream apikey create failed): HTTP sent without a key",
                      time.monotonic() - started, lag)

    async def _settled_lag(self, timeout_s: float = RESOLVE_GOAL_S) -> dict[str, int]:
        """Each stage's uncommitted input records, once all are 0 or after ``timeout_s`` (stuck partitions)."""
        deadline = time.monotonic() + timeout_s
        while True:
            lag = await group_lag(self.settings)
            if not any(lag.values()) or time.monotonic() > deadline:
                return lag
            await asyncio.sleep(2)

    # -- doors --

    async def _submit(self, case: Case, door: Door, data: bytes, ids: dict) -> tuple[Observed, str | bytes]:
        limit = WARMUP_S if self.first else POLL_LIMIT_S
        self.first = False
        filename = case.filename if case.filename is not None else case.default_filename()
        since = datetime.now(timezone.utc)  # same clock as the stages and PostgreSQL (one machine)
        t0 = time.monotonic()
        try:
            if door is Door.CLI:
                obs = await self._cli(case, data, filename, limit, since, t0)
            elif door is Door.HTTP:
                obs = await self._http(case, data, filename, limit, since, t0)
            else:
                obs = await self._raw(case, data, filename, limit, since, t0, ids)
        except Exception as exc:  # noqa: BLE001 - a broken door is an observation, not a harness crash
            obs = Observed("error", output=f"{type(exc).__name__}: {exc}", seconds=time.monotonic() - t0)
        return obs, filename

    async def _cli(self, case, data, filename, limit, since, t0) -> Observed:
        folder = self.workdir / "cli" / f"{case.name}-{self.run_tag}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / filename
        path.write_bytes(data)
        # --via kafka: the CLI door itself (auto would take the HTTP door, which Door.HTTP covers)
        args = [sys.executable, "-m", "ocrstream.cli", "submit", "--wait", "--timeout", str(int(limit)), "--via", "kafka",
                str(path)]
        if case.template:
            args[4:4] = ["--template", str(case.template)]
        proc = await asyncio.create_subprocess_exec(*args, env=self.env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), limit + 30)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return Observed("error", output="CLI did not exit", seconds=time.monotonic() - t0)
        text = out.decode("utf-8", "replace")
        found = re.search(r"\b[0-9a-f]{32}\b", text)
        doc_id = found.group(0) if found else None
        if proc.returncode == 0:
            obs = await self._resolve([doc_id] if doc_id else [], None, None, since, t0, limit)
        else:  # refused or failed: a dead letter's row, if any, is there by now or soon
            obs = await self._resolve([doc_id] if doc_id else [], None, None, since, t0, 3.0, absent="refused")
        obs.exit_code, obs.output, obs.document_id = proc.returncode, text[-2000:], obs.document_id or doc_id
        return obs

    async def _http(self, case, data, filename, limit, since, t0) -> Observed:
        fields = {"template": case.template} if isinstance(case.template, str) else {}
        body, content_type = multipart(case.http_field, filename, data, fields)
        headers = {"Content-Type": content_type}
        if case.http_auth == "key" and self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        elif case.http_auth == "bad":
            headers["Authorization"] = "Bearer not-a-real-key-0123456789abcdef"
        try:
            resp = await self.http.post(self.http_url + "/v1/documents", content=body, headers=headers)
        except httpx.TransportError:
            # The door answered before reading the body (413 on Content-Length) and closed the
            # connection while the client was still sending: read that answer as a client would.
            status = await asyncio.to_thread(self._status_for_headers_only, headers, len(body))
            return Observed("refused", http_status=status, seconds=time.monotonic() - t0,
                            output="answered before the body was sent")
        try:
            payload = resp.json()
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        detail = payload.get("detail") if isinstance(payload.get("detail"), dict) else {}
        doc_id = payload.get("document_id") or detail.get("document_id")
        if resp.status_code == 202:
            obs = await self._resolve([doc_id] if doc_id else [], None, None, since, t0, limit)
        elif doc_id:  # rejected, but the door said it recorded the document (dead letter)
            obs = await self._resolve([doc_id], None, None, since, t0, limit, absent="refused")
        else:
            obs = Observed("refused", seconds=time.monotonic() - t0)
        obs.http_status, obs.output = resp.status_code, resp.text[:500]
        return obs

    def _status_for_headers_only(self, headers: dict[str, str], length: int) -> int:
        """The HTTP status the door answers to a POST's headers alone (``Content-Length: length``)."""
        import socket
        from urllib.parse import urlparse

        url = urlparse(self.http_url)
        lines = ["POST /v1/documents HTTP/1.1", f"Host: {url.hostname}", f"Content-Length: {length}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            return int(sock.recv(4096).split(b" ", 2)[1])

    async def _raw(self, case, data, filename, limit, since, t0, ids) -> Observed:
        if case.victim:
            key: bytes | None = ids[case.victim].encode()
        elif isinstance(case.key, bytes):
            key = case.key
        else:
            key = None if case.key is Key.NONE else f"hostile-{self.run_tag}-{case.name}".encode()
        headers = list(case.headers) if case.headers is not None else [
            ("filename", filename if isinstance(filename, bytes) else filename.encode("utf-8", "surrogateescape"))]
        if case.template is not None:
            headers.append(("template", case.template if isinstance(case.template, bytes) else case.template.encode()))
        meta = await self.producer.send_and_wait(events.RAW, data, key=key, headers=headers)
        try:
            key_ids = [key.decode("utf-8")] if key else []
        except UnicodeDecodeError:
            key_ids = []
        source = (events.RAW, meta.partition, meta.offset)
        return await self._resolve(key_ids, hashlib.sha256(data).hexdigest(), "kafka", since, t0, limit, raw=source)

    # -- resolution --

    async def _resolve(self, ids: list[str], sha: str | None, source: str | None, since: datetime, t0: float,
                       limit: float, *, raw: tuple | None = None, absent: str = "missing") -> Observed:
        """Poll PostgreSQL until a row for the submission appears (or ``limit`` s; then ``absent``)."""
        while True:
            wanted = ids + ([self.dead_letters[raw]] if raw in self.dead_letters else [])
            row = await self._find_row(wanted, sha, source, since)
            elapsed = time.monotonic() - t0
            if row is not None:
                kind = row["status"]
                return Observed(kind, row["error_stage"], row["error_type"], seconds=elapsed,
                                document_id=row["document_id"], row=row)
            if elapsed > limit:
                return Observed(absent, seconds=elapsed, document_id=ids[0] if ids else None)
            await asyncio.sleep(0.25)

    async def _find_row(self, ids: list[str], sha: str | None, source: str | None, since: datetime) -> dict | None:
        try:
            row = await self.db.fetchrow(
                "SELECT document_id, status, error_stage, error_type, error_message, filename, source,"
                " content_sha256, text, stored_at FROM documents WHERE stored_at >= $1 AND"
                " (document_id = ANY($2::text[]) OR ($3::text IS NOT NULL AND content_sha256 = $3 AND source = $4))"
                " ORDER BY stored_at DESC LIMIT 1", since, ids, sha, source)
        except asyncpg.UndefinedTableError:  # the store stage has not migrated yet
            return None
        return dict(row) if row else None

    async def _follow_dlq(self, stop: asyncio.Event) -> None:
        """Remember which document id each dead letter gave a raw-topic record (by its offset)."""
        consumer = AIOKafkaConsumer(events.DLQ, bootstrap_servers=self.settings.kafka_bootstrap,
                                    group_id=f"hostile-dlq-{uuid.uuid4().hex}", auto_offset_reset="earliest",
                                    enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=1000,
                                    max_partition_fetch_bytes=self.settings.max_message_bytes)
        await consumer.start()
        try:
            while not stop.is_set():
                for batch in (await consumer.getmany(timeout_ms=250)).values():
                    for record in batch:
                        try:
                            letter = events.decode(events.DLQ, record.value)
                        except InvalidEventError:
                            continue
                        src = letter.source
                        self.dead_letters[(src.topic, None if src.partition is UNSET else src.partition,
                                           None if src.offset is UNSET else src.offset)] = \
                            letter.document_id
        finally:
            await consumer.stop()

    async def _trace_problems(self, row: Row) -> list[str]:
        """A refused submission must leave no dead letter and no ``documents`` row."""
        if row.expect.outcome != "refused" or row.observed.outcome != "refused" or isinstance(row.filename, bytes):
            return []
        found = await self.db.fetch(
            "SELECT document_id, status, error_type FROM documents WHERE document_id = $1"
            " OR (filename = $2 AND source = $3)", row.observed.document_id or "", row.filename,
            DOOR_SOURCE[row.door])
        return [f"refused, but left a {r['status']} row {r['document_id']} ({r['error_type']})" for r in found]

    async def _victim_problems(self, victim: str, ids: dict, rows: list[Row]) -> list[str]:
        """The document whose id a raw producer used as its key must still hold its own bytes."""
        first = next(r for r in rows if r.case.name == victim)
        await asyncio.sleep(1)
        row = await self.db.fetchrow("SELECT status, content_sha256 FROM documents WHERE document_id = $1",
                                     ids[victim])
        if row is None or row["status"] != "done" or row["content_sha256"] != first.data_sha256:
            return [f"overwrote document {ids[victim]} of case {victim} (now {dict(row) if row else 'gone'})"]
        return []

    async def _wait_http(self) -> None:
        for _ in range(int(WARMUP_S * 4)):
            try:
                if (await self.http.get(self.http_url + "/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
        raise TimeoutError(f"ingest HTTP door {self.http_url} never answered /healthz")
