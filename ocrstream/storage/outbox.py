"""The webhook outbox (table ``webhook_outbox``, migration 0011): rows the store writes in the
transaction of a document's result, claimed and marked by the sender (ocrstream/streaming/webhooks.py);
and the webhooks per API key (table ``key_webhooks``, migration 0017: ``ocrstream webhook add KEY URL``),
used for a document whose submission named no callback URL.

One row per document version: :func:`webhook_id` is derived from ``(document_id, version)``, so a
redelivered event of a stored version adds nothing (``ON CONFLICT DO NOTHING``) and a receiver can
de-duplicate on the ``webhook-id`` header.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

ENQUEUE = """
INSERT INTO webhook_outbox (webhook_id, document_id, version, url, payload) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (webhook_id) DO NOTHING
"""

#: Due pending rows, each leased for ``$2`` seconds (another sender skips them meanwhile; a sender
#: that dies holding one gives it back when the lease ends).
CLAIM = """
UPDATE webhook_outbox SET next_attempt_at = now() + make_interval(secs => $2)
WHERE webhook_id IN (SELECT webhook_id FROM webhook_outbox WHERE status = 'pending' AND next_attempt_at <= now()
                     ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
RETURNING webhook_id, document_id, url, payload, attempts, created_at
"""

DELIVERED = """
UPDATE webhook_outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = now(), last_status = $2,
    last_error = NULL WHERE webhook_id = $1
"""

RETRY = """
UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => $2),
    last_status = $3, last_error = $4 WHERE webhook_id = $1
"""

FAILED = """
UPDATE webhook_outbox SET status = 'failed', attempts = attempts + 1, last_status = $2, last_error = $3
WHERE webhook_id = $1
"""

#: ``ocrstream webhook replay``: failed rows back to pending, due now, attempts reset.
REPLAY = """
UPDATE webhook_outbox SET status = 'pending', attempts = 0, next_attempt_at = now(), created_at = now()
WHERE status = 'failed' AND ($1::text IS NULL OR document_id = $1)
"""


def webhook_id(document_id: str, version: str) -> str:
    """The delivery's id (``webhook-id`` header): ``msg_`` + 32 hex of SHA-256 over id and version."""
    return "msg_" + hashlib.sha256(f"{document_id}|{version}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Delivery:
    """A claimed outbox row: what to send, where, and how often it was tried before."""

    webhook_id: str
    document_id: str
    url: str
    payload: str
    attempts: int
    created_at: datetime


async def enqueue(conn: Any, document_id: str, version: str, url: str, payload: str) -> None:
    """Write the delivery of ``document_id``'s ``version`` (in the caller's transaction)."""
    await conn.execute(ENQUEUE, webhook_id(document_id, version), document_id, version, url, payload)


async def claim(pool: Any, limit: int, lease_s: float) -> list[Delivery]:
    """Up to ``limit`` due deliveries, leased for ``lease_s`` seconds."""
    rows = await pool.fetch(CLAIM, limit, lease_s)
    return [Delivery(**dict(r)) for r in rows]


async def delivered(pool: Any, wid: str, status: int) -> None:
    await pool.execute(DELIVERED, wid, status)


async def retry(pool: Any, wid: str, delay_s: float, status: int | None, error: str) -> None:
    await pool.execute(RETRY, wid, delay_s, status, error[:1000])


async def failed(pool: Any, wid: str, status: int | None, error: str) -> None:
    await pool.execute(FAILED, wid, status, error[:1000])


async def replay(pool: Any, document_id: str | None = None) -> int:
    """Failed deliveries (of one document, or all) pending again; how many."""
    result: str = await pool.execute(REPLAY, document_id)
    return int(result.split()[-1])


async def counts(pool: Any) -> dict[str, int]:
    """Deliveries by status (``pending``, ``delivered``, ``failed``)."""
    rows = await pool.fetch("SELECT status, count(*) AS n FROM webhook_outbox GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def open_counts(db: Any) -> dict[str, int]:
    """Deliveries ``pending`` and ``failed`` (delivered rows, the bulk, are not counted)."""
    rows = await db.fetch("SELECT status, count(*) AS n FROM webhook_outbox WHERE status <> 'delivered'"
                          " GROUP BY status")
    return {r["status"]: r["n"] for r in rows}


async def list_deliveries(pool: Any, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Newest deliveries first (of one status, or all): id, document, url, status, attempts, last error."""
    rows = await pool.fetch(
        "SELECT webhook_id, document_id, url, status, attempts, last_status, last_error, created_at, delivered_at"
        " FROM webhook_outbox WHERE $1::text IS NULL OR status = $1 ORDER BY created_at DESC LIMIT $2",
        status, limit)
    return [dict(r) for r in rows]


# ----------------------------------------------------------------------------- webhooks per API key

async def set_key_webhook(pool: Any, api_key: str, url: str) -> None:
    """Send the webhooks of documents submitted with the key named ``api_key`` (and no callback
    URL of their own) to ``url`` (replaces an earlier one; the caller checked ``url``)."""
    await pool.execute("INSERT INTO key_webhooks (api_key, url) VALUES ($1, $2) ON CONFLICT (api_key)"
                       " DO UPDATE SET url = EXCLUDED.url, created_at = now()", api_key, url)


async def remove_key_webhook(pool: Any, api_key: str) -> bool:
    """Forget the webhook of the key named ``api_key``; whether there was one."""
    result: str = await pool.execute("DELETE FROM key_webhooks WHERE api_key = $1", api_key)
    return result.split()[-1] != "0"


async def key_webhooks(pool: Any) -> list[dict[str, Any]]:
    """Every key's webhook: ``{api_key, url, created_at}``, by key name."""
    return [dict(r) for r in await pool.fetch("SELECT api_key, url, created_at FROM key_webhooks ORDER BY api_key")]


async def key_webhook(conn: Any, api_key: str | None) -> str | None:
    """The webhook URL of the key named ``api_key``, if it has one (None for no key)."""
    if not api_key:
        return None
    url: str | None = await conn.fetchval("SELECT url FROM key_webhooks WHERE api_key = $1", api_key)
    return url
