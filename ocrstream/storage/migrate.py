"""Versioned SQL migrations (``ocrstream/storage/sql/NNNN_name.sql``), applied at store start.

Each file runs once, in name order, inside a transaction, recorded in ``schema_migrations``.
A PostgreSQL advisory lock serialises concurrent store replicas starting together.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)
_LOCK_ID = 0x0C857EA4  # arbitrary constant: "ocrstream" migrations


def migration_files() -> list[tuple[str, str]]:
    """``(version, sql)`` of every migration, sorted by file name."""
    folder = resources.files("ocrstream.storage").joinpath("sql")
    files = sorted((f.name, f) for f in folder.iterdir() if f.name.endswith(".sql"))
    return [(name.removesuffix(".sql"), f.read_text("utf-8")) for name, f in files]


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations; returns the versions applied now (empty if up to date)."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                           " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            log.info("store: applied migration %s", version)
            applied_now.append(version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
    return applied_now
