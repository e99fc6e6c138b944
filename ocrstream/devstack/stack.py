"""The embedded stack's facade: :class:`EmbeddedStack` starts, revives and stops its servers in order.

Start and :meth:`EmbeddedStack.revive` order: the broker's S3 (``kafka-s3``, with the default
``kafka_storage="s3"``), the broker, the users' S3, PostgreSQL. The filer's Kafka producer
(sarama) must reach the broker when it starts, so the broker starts before the users' S3. The
broker's log lives on a second, private weed (service ``kafka-s3``, data in
``state_dir/kafka-s3``): on the users' S3 every write of the broker would be notified to the
broker, which writes again (a feedback loop).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import asdict
from pathlib import Path

from ocrstream.devstack.kafka import BUCKET_NOTIFICATIONS_TOPIC, tansu_launch
from ocrstream.devstack.postgres import postgres_dsn, postgres_launch
from ocrstream.devstack.processes import (
    HOST,
    Launch,
    Log,
    Service,
    StackError,
    launch,
    remove_files,
    run_coroutine,
    stop_services,
    wait_ready,
    write_private_json,
)
from ocrstream.devstack.s3 import BROKER_S3, ensure_bucket, weed_launch
from ocrstream.devstack.state import (
    STATE_FILE,
    StackEndpoints,
    StateDir,
    load_credentials,
    load_ports,
    port_is_free,
    read_running,
    recorded_services,
    save_ports,
)
from ocrstream.settings import Settings
from ocrstream.streaming.kafka import create_topics

#: The bucket the pipeline's settings name by default (``OCRSTREAM_S3_BUCKET``), made at start.
PIPELINE_BUCKET: str = Settings.model_fields["s3_bucket"].default

__all__ = ["EmbeddedStack"]


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
        self._services: list[Service] = []
        self._dirs = StateDir(self.state_dir)

    # ---- paths
    @property
    def logs_dir(self) -> Path:
        """``state_dir/logs``: one log per server."""
        return self._dirs.logs

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
        data, recorded = recorded_services(self.state_dir)
        if data is not None and any(s.running() for s in recorded):
            return self.revive(timeout_s)
        deadline = time.monotonic() + timeout_s
        self._dirs.dir("logs", "weed")
        creds = load_credentials(self.state_dir)
        saved = load_ports(self.state_dir)
        try:
            topic = BUCKET_NOTIFICATIONS_TOPIC
            # The broker's log lives on its own S3 (never the users' one: the filer notifies the
            # broker of every write, and the broker's own writes would feed back into it).
            log_s3 = self._start_s3(creds, deadline, self._reuse(saved, BROKER_S3), name=BROKER_S3) \
                if self.kafka_storage == "s3" else None
            bootstrap = self._start_kafka(creds, log_s3, deadline, self._reuse(saved, "kafka"))
            self._create_topic(bootstrap, topic, deadline)
            s3_endpoint = self._start_s3(creds, deadline, self._reuse(saved, "s3"), notify=(bootstrap, topic))
            # The pipeline's bucket from the start: a stage's readiness probe looks for it (else it
            # is "stranded" until a stage first writes), and `dev up` users drop files into its inbox/.
            ensure_bucket(s3_endpoint, creds, PIPELINE_BUCKET)
            dsn = self._start_postgres(creds, deadline, self._reuse(saved, "postgres"))
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
        data, recorded = recorded_services(self.state_dir)
        if data is None:
            raise StackError(f"no stack recorded in {self.state_dir}")
        self.kafka_storage = data.get("kafka_storage", self.kafka_storage)
        endpoints = StackEndpoints(**data["endpoints"])
        creds = load_credentials(self.state_dir)
        deadline = time.monotonic() + timeout_s
        self._services = [s for s in recorded if s.running()]
        by_name = {s.name: s for s in recorded}
        notify = (endpoints.kafka_bootstrap, endpoints.bucket_notifications_topic)
        order = ((BROKER_S3,) if self.kafka_storage == "s3" else ()) + ("kafka", "s3", "postgres")
        dead = [n for n in order if by_name.get(n) is None or not by_name[n].running()]
        for name in dead:
            self.log(f"{name} is not running: starting it again on its recorded port and data")
            if name in by_name:
                remove_files(by_name[name].cleanup_files)
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
            stop_services(services, timeout_s)
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

    def _service(self, name: str) -> Service:
        for svc in self._services:
            if svc.name == name and svc.leader_alive():
                return svc
        raise StackError(f"no running service {name!r} in this stack "
                         f"(have: {', '.join(s.name for s in self._services)})")

    def __enter__(self) -> EmbeddedStack:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- services
    def _create_topic(self, bootstrap: str, topic: str, deadline: float) -> None:
        """Create ``topic`` (4 partitions), retrying transient errors until ``deadline``: a broker
        restarted on its recorded data may time out its first requests."""
        from ocrstream.streaming.retry import is_transient

        while True:
            try:
                run_coroutine(create_topics(bootstrap, [topic], partitions=4))
                return
            except Exception as exc:
                if not is_transient(exc) or time.monotonic() > deadline:
                    raise
                self.log(f"kafka: creating {topic}: {type(exc).__name__}; retrying")
                time.sleep(0.5)

    def _reuse(self, saved: dict[str, dict[str, int]], name: str) -> dict[str, int] | None:
        """The ports service ``name`` had when last started from this state dir, if all are still
        free (else None: fresh ports, and the log says that clients need the new endpoints)."""
        ports = saved.get(name)
        if not ports:
            return None
        taken = [p for p in ports.values() if not port_is_free(p)]
        if taken:
            self.log(f"{name}: its recorded port(s) {', '.join(map(str, taken))} are taken by another process: "
                     "new ports (restart the stages so that they read the new endpoints)")
            return None
        return ports

    def _bring_up(self, how: Launch, deadline: float) -> str:
        """Spawn a server and wait until it answers; its address."""
        t0 = time.monotonic()
        self._services.append(how.service)
        launch(how.service, cwd=how.cwd, env=how.env, run_as=how.run_as)
        wait_ready(how.service, how.probe, deadline)
        self.log(f"{how.label} up on {how.address} in {time.monotonic() - t0:.1f} s")
        return how.address

    def _start_s3(self, creds: dict[str, str], deadline: float, ports: dict[str, int] | None = None,
                  notify: tuple[str, str] | None = None, name: str = "s3") -> str:
        """Start weed mini as service ``name`` (:func:`.s3.weed_launch`); its S3 endpoint."""
        return self._bring_up(weed_launch(self._dirs, creds, ports, notify, name), deadline)

    def _start_kafka(self, creds: dict[str, str], s3_endpoint: str | None, deadline: float,
                     ports: dict[str, int] | None = None) -> str:
        """Start the tansu broker (:func:`.kafka.tansu_launch`); its bootstrap address."""
        return self._bring_up(tansu_launch(self._dirs, creds, self.kafka_storage, s3_endpoint, ports), deadline)

    def _start_postgres(self, creds: dict[str, str], deadline: float, ports: dict[str, int] | None = None) -> str:
        """Start PostgreSQL (:func:`.postgres.postgres_launch`); its DSN."""
        address = self._bring_up(postgres_launch(self._dirs, creds, self.log, ports), deadline)
        return postgres_dsn(creds["pg_password"], address)

    def _write_state(self) -> None:
        """Record the stack (endpoints, every service with PID and ports) in ``state_dir/stack.json``,
        and the ports in ``ports.json`` (kept by ``dev down``)."""
        assert self.endpoints is not None
        save_ports(self.state_dir, [s for s in self._services if s.ports])
        write_private_json(self.state_dir / STATE_FILE, {
            "state_dir": str(self.state_dir),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "kafka_storage": self.kafka_storage,
            "endpoints": asdict(self.endpoints),
            "services": [s.to_json() for s in self._services],
        })
