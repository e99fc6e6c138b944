"""PostgreSQL connection pools as every ocrstream process makes them (timeouts included)."""

from __future__ import annotations

import asyncpg

from .settings import Settings


async def create_pool(settings: Settings, max_size: int = 4) -> asyncpg.Pool:
    """A pool on ``OCRSTREAM_POSTGRES_DSN`` whose connects and statements time out after
    ``postgres_timeout_s`` (a frozen database surfaces as a timeout, retried as transient).

    TLS: put ``sslmode=verify-full`` (and ``sslrootcert=...``) in the DSN. Raises asyncpg's
    connection errors (transient).
    """
    return await asyncpg.create_pool(settings.dsn, min_size=1, max_size=max_size,
                                     timeout=settings.postgres_timeout_s,
                                     command_timeout=settings.postgres_timeout_s)
