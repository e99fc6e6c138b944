"""The state dir of the embedded stack: its layout, generated credentials, and ``stack.json``
(the running processes with their PIDs, ports and endpoints), plus the CLI's ``dev down`` /
``--purge`` helpers that work from ``stack.json`` alone.

Generated secrets persist in ``state_dir/credentials.json`` (mode 0600) so a reused state dir
keeps its database password, and every service's ports in ``state_dir/ports.json`` so that
``dev down`` then ``dev up`` on the same state dir brings the stack back on the same endpoints
(stages still running keep working; a port taken meanwhile by another process gets a fresh one,
said in the log). Logs: ``state_dir/logs/*.log``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ocrstream.devstack.processes import Service, StackError, read_json, stop_services, write_private_json

__all__ = ["CREDENTIALS_FILE", "PORTS_FILE", "STATE_FILE", "StackEndpoints", "StateDir", "load_credentials",
           "load_ports", "port_is_free", "purge", "read_running", "recorded_services", "save_ports", "stop_running"]

STATE_FILE = "stack.json"
CREDENTIALS_FILE = "credentials.json"
PORTS_FILE = "ports.json"
UNIX_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


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


@dataclass(frozen=True)
class StateDir:
    """Paths under the stack's state dir ``root`` (absolute)."""

    root: Path

    @property
    def logs(self) -> Path:
        """``root/logs``: one log per server."""
        return self.root / "logs"

    def dir(self, *parts: str) -> Path:
        """``root/<parts>``, created if missing."""
        path = self.root.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def socket_path(self, *parts: str) -> str:
        """``root/<parts>`` for a unix socket.

        Raises:
            StackError: the path is too long for a unix socket.
        """
        path = str(self.root.joinpath(*parts))
        if len(path) > UNIX_PATH_MAX - 12:  # leave room for ".s.PGSQL.NNNNN"
            raise StackError(f"state dir {self.root} is too long for unix socket paths "
                             f"({path!r}); use a shorter state dir")
        return path


def load_credentials(state_dir: Path) -> dict[str, str]:
    """Generated once per state dir and reused (the database keeps its password)."""
    path = state_dir / CREDENTIALS_FILE
    creds = read_json(path)
    if creds is None:
        creds = {
            "s3_access_key": "OCRS" + secrets.token_hex(8).upper(),
            "s3_secret_key": secrets.token_urlsafe(30),
            "pg_password": secrets.token_urlsafe(24),
        }
        write_private_json(path, creds)
    return creds


def load_ports(state_dir: Path) -> dict[str, dict[str, int]]:
    """``{service name: {port name: port}}`` of the stack last started from ``state_dir`` ({} if none)."""
    data = read_json(Path(state_dir) / PORTS_FILE) or {}
    return {name: {k: int(v) for k, v in ports.items()} for name, ports in data.items() if isinstance(ports, dict)}


def save_ports(state_dir: Path, services: list[Service]) -> None:
    """Record every service's ports (kept across ``dev down``: :func:`load_ports`)."""
    write_private_json(Path(state_dir) / PORTS_FILE, {s.name: dict(s.ports) for s in services})


def port_is_free(port: int) -> bool:
    """True when nothing listens on TCP ``port`` on 127.0.0.1 (a bind with SO_REUSEADDR, as the
    servers do, succeeds: connections of the stopped server still in TIME_WAIT do not count)."""
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def recorded_services(state_dir: Path) -> tuple[dict[str, Any] | None, list[Service]]:
    """``(stack.json contents, its services)``, or ``(None, [])`` when nothing is recorded."""
    data = read_json(state_dir / STATE_FILE)
    if data is None:
        return None, []
    return data, [Service.from_json(s) for s in data.get("services", [])]


def read_running(state_dir: Path) -> StackEndpoints | None:
    """Endpoints from ``state_dir/stack.json`` if every recorded process is still alive."""
    data, services = recorded_services(Path(state_dir))
    if data is None or not services or not all(s.leader_alive() for s in services):
        return None
    return StackEndpoints(**data["endpoints"])


def purge(state_dir: Path) -> bool:
    """``ocrstream dev down --purge``: remove the state dir's data (after a stop). True if
    there was any. Raises StackError while its stack still runs."""
    state_dir = Path(state_dir)
    _, services = recorded_services(state_dir)
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
    _, services = recorded_services(state_dir)
    stopped = stop_services(services, timeout_s)
    (state_dir / STATE_FILE).unlink(missing_ok=True)
    return stopped

