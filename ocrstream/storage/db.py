"""PostgreSQL connection pools as every ocrstream process makes them (timeouts included).

Two kinds: :func:`create_pool` (the store's user: the sink writes, migrations) and
:func:`create_read_pool` (the query API, ``ocrstream run api``: read-only).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ocrstream.settings import Settings

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger(__name__)

#: The read-only group role (NOLOGIN; SELECT on the store's tables) that the store's migration
#: ``0009_read_role`` creates and grants: ocrstream/storage/sql/0009_read_role.sql.
READ_ROLE = "ocrstream_read"


async def create_pool(settings: Settings, max_size: int = 4) -> asyncpg.Pool:
    """A pool on ``OCRSTREAM_POSTGRES_DSN`` whose connects and statements time out after
    ``postgres_timeout_s`` (a frozen database surfaces as a timeout, retried as transient).

    TLS: put ``sslmode=verify-full`` (and ``sslrootcert=...``) in the DSN. Raises asyncpg's
    connection errors (transient).
    """
    import asyncpg

    return await asyncpg.create_pool(settings.dsn, min_size=1, max_size=max_size,
                                     timeout=settings.postgres_timeout_s,
                                     command_timeout=settings.postgres_timeout_s)


async def create_read_pool(settings: Settings, max_size: int = 4) -> asyncpg.Pool:
    """A read-only pool for the query API: every transaction is read-only
    (``default_transaction_read_only``), and the connection has only the read role's rights.

    * ``OCRSTREAM_API_POSTGRES_DSN`` set (production): that DSN, a login role of its own that is
      a member of :data:`READ_ROLE` (``CREATE ROLE ocrstream_api LOGIN PASSWORD '...' IN ROLE
      ocrstream_read``), so the API cannot write whatever it sends.
    * unset (the embedded stack): the store's DSN, with the session's role set to
      :data:`READ_ROLE` at connect (a startup parameter, so the pool's ``RESET ALL`` keeps it).
      The store's user stays the session user and could ``SET ROLE`` back: a guard against
      mistakes, not against a compromised API process. When the role does not exist yet (the
      store has not migrated) or cannot be set (the store's user may not create roles), the
      connection falls back to read-only transactions under the store's user, with a warning;
      each new connection tries the role again.

    Raises asyncpg's connection errors (transient).
    """

    own = settings.api_postgres_dsn.get_secret_value() if settings.api_postgres_dsn else None
    return await _pool_as_role(settings, own, READ_ROLE, max_size, "OCRSTREAM_API_POSTGRES_DSN",
                               "read-only transactions", {"default_transaction_read_only": "on"})


async def _pool_as_role(settings: Settings, own_dsn: str | None, role: str, max_size: int, dsn_setting: str,
                        fallback: str, server_settings: dict[str, str] | None = None) -> asyncpg.Pool:
    """A pool on ``own_dsn`` (a login role in ``role``) or, without one, on the store's DSN with the
    session's role set to ``role`` at connect; when that role is not usable (it does not exist, or
    the store's user is not a member), the store's user itself with ``fallback``, logged once per
    connection. ``server_settings`` are added to every connection. Raises asyncpg's connection errors."""
    import asyncpg

    extra = server_settings or {}

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        kwargs["server_settings"] = {**(kwargs.get("server_settings") or {}), **extra}
        if own_dsn is not None:
            return await asyncpg.connect(*args, **kwargs)
        try:
            return await asyncpg.connect(*args, **{**kwargs, "server_settings": {
                **kwargs["server_settings"], "role": role}})
        except (asyncpg.InvalidParameterValueError, asyncpg.InsufficientPrivilegeError) as exc:
            log.warning("query API: role %s not usable (%s); %s as the store's user (set %s to a login role in %s)",
                        role, exc, fallback, dsn_setting, role)
            return await asyncpg.connect(*args, **kwargs)

    return await asyncpg.create_pool(own_dsn or settings.dsn, min_size=1, max_size=max_size, connect=connect,
                                     timeout=settings.postgres_timeout_s,
                                     command_timeout=settings.postgres_timeout_s)


#: The role the query API verifies regions as (migration ``0013_review``): SELECT on the tables,
#: UPDATE of the verified columns of ``regions`` and writing ``region_corrections``; nothing else.
REVIEW_ROLE = "ocrstream_review"


async def create_review_pool(settings: Settings, max_size: int = 2) -> asyncpg.Pool:
    """A small pool that may store corrections (the query API's verify route).

    * ``OCRSTREAM_REVIEW_POSTGRES_DSN`` set (production): that DSN, a login role in
      :data:`REVIEW_ROLE` (``CREATE ROLE ocrstream_reviewer LOGIN PASSWORD '...' IN ROLE ocrstream_review``).
    * unset (the embedded stack): the store's DSN with the session's role set to
      :data:`REVIEW_ROLE` at connect; when that role does not exist (the store's user may not
      create roles), the store's user itself, with a warning (as :func:`create_read_pool`).

    Raises asyncpg's connection errors (transient).
    """

    own = settings.review_postgres_dsn.get_secret_value() if settings.review_postgres_dsn else None
    return await _pool_as_role(settings, own, REVIEW_ROLE, max_size, "OCRSTREAM_REVIEW_POSTGRES_DSN",
                               "corrections are written")
