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
    import asyncpg

    own = settings.api_postgres_dsn.get_secret_value() if settings.api_postgres_dsn else None
    read_only = {"default_transaction_read_only": "on"}

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        kwargs["server_settings"] = {**(kwargs.get("server_settings") or {}), **read_only}
        if own is not None:
            return await asyncpg.connect(*args, **kwargs)
        try:
            return await asyncpg.connect(*args, **{**kwargs, "server_settings": {
                **kwargs["server_settings"], "role": READ_ROLE}})
        except (asyncpg.InvalidParameterValueError, asyncpg.InsufficientPrivilegeError) as exc:
            log.warning("query API: role %s not usable (%s); read-only transactions as the store's user "
                        "(set OCRSTREAM_API_POSTGRES_DSN to a login role in %s)", READ_ROLE, exc, READ_ROLE)
            return await asyncpg.connect(*args, **kwargs)

    return await asyncpg.create_pool(own or settings.dsn, min_size=1, max_size=max_size, connect=connect,
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
    import asyncpg

    own = settings.review_postgres_dsn.get_secret_value() if settings.review_postgres_dsn else None

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        if own is not None:
            return await asyncpg.connect(*args, **kwargs)
        try:
            return await asyncpg.connect(*args, **{**kwargs, "server_settings": {
                **(kwargs.get("server_settings") or {}), "role": REVIEW_ROLE}})
        except (asyncpg.InvalidParameterValueError, asyncpg.InsufficientPrivilegeError) as exc:
            log.warning("query API: role %s not usable (%s); corrections are written as the store's user "
                        "(set OCRSTREAM_REVIEW_POSTGRES_DSN to a login role in %s)", REVIEW_ROLE, exc, REVIEW_ROLE)
            return await asyncpg.connect(*args, **kwargs)

    return await asyncpg.create_pool(own or settings.dsn, min_size=1, max_size=max_size, connect=connect,
                                     timeout=settings.postgres_timeout_s,
                                     command_timeout=settings.postgres_timeout_s)
