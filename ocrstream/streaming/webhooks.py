"""Completion webhooks: a callback URL per submission, a signed POST when the document is done or failed.

* **Submission.** The HTTP door's form field ``callback_url`` and ``ocrstream submit --callback-url``
  name it; :func:`check_callback_url` refuses (``InvalidSubmissionError``: 400 at the HTTP door)
  URLs that are not ``http(s)``, longer than :data:`MAX_URL_CHARS`, with credentials, and, unless
  the host or its address is in ``OCRSTREAM_WEBHOOK_ALLOW_HOSTS`` (hosts and CIDRs), targets that
  resolve to loopback, link-local, private, multicast, reserved or unspecified addresses, so the
  pipeline cannot be turned against its own network. Refused too while
  ``OCRSTREAM_WEBHOOK_SECRET`` is unset (nothing could sign). The URL travels in the events
  (``document.callback_url``).
* **Outbox.** The store stage writes the delivery (:mod:`ocrstream.storage.outbox`) in the same
  transaction as the document's ``done`` or ``failed`` row: a stored result always has its
  delivery, and a redelivered event adds none. The body is :func:`summary` of the results event
  (at most ``OCRSTREAM_WEBHOOK_MAX_PAYLOAD_BYTES``: the text is cut to fit, ``text_truncated``).
* **Sender** (:class:`WebhookSender`, a task of each store process, on its own loop). Claims due
  rows (leased, ``FOR UPDATE SKIP LOCKED``: several store replicas share the work), at most
  ``OCRSTREAM_WEBHOOK_CONCURRENCY`` at once, checks the target's addresses again (a name may
  resolve elsewhere now), and POSTs the body signed as the Standard Webhooks specification says
  (headers ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``: ``v1,`` + base64 of
  HMAC-SHA256 over ``id.timestamp.body``; the ``standardwebhooks`` package) with
  ``OCRSTREAM_WEBHOOK_TIMEOUT_S`` per request and no redirects followed. A 2xx answer delivers it;
  anything else (other status, timeout, connection error) is retried after an exponential backoff
  with full jitter (``OCRSTREAM_WEBHOOK_RETRY_INITIAL_S`` doubling up to ``_RETRY_MAX_S``) until
  ``OCRSTREAM_WEBHOOK_MAX_ATTEMPTS`` attempts or ``OCRSTREAM_WEBHOOK_MAX_AGE_S`` after the result,
  then the row is ``failed`` (``ocrstream webhook list --failed``, ``ocrstream webhook replay``).
  At least once: a receiver de-duplicates by ``webhook-id``. ``ocrstream_webhook_outbox{status}``
  counts the pending and failed rows (refreshed every :data:`OUTBOX_REFRESH_S`); ``ocrstream status``
  shows them.
* **Per API key.** ``ocrstream webhook add KEY URL`` (:mod:`ocrstream.storage.outbox`): the store
  sends a document's webhook there when its submission (through the HTTP door with that key) named
  no callback URL of its own.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import random
import socket
import time
from datetime import datetime, timezone
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import msgspec
from prometheus_client import Counter, Gauge

from ocrstream.contracts import events
from ocrstream.contracts.event_models import ResultsEvent
from ocrstream.errors import ConfigurationError, InvalidSubmissionError
from ocrstream.settings import Settings
from ocrstream.storage import outbox
from ocrstream.storage.db import create_pool

log = logging.getLogger(__name__)

#: Longest callback URL accepted, characters.
MAX_URL_CHARS: Final = 2048
#: The sender's answer to a receiver: read at most this many bytes of its response (kept in the row).
MAX_ERROR_CHARS: Final = 300

DELIVERIES = Counter("ocrstream_webhook_deliveries_total",
                     "webhook attempts by outcome (delivered, retry, failed, refused)", ["outcome"])
for _outcome in ("delivered", "retry", "failed", "refused"):
    DELIVERIES.labels(_outcome)
OUTBOX = Gauge("ocrstream_webhook_outbox", "webhook deliveries in the outbox by status (pending, failed), "
               "read every OUTBOX_REFRESH_S by each store's sender", ["status"])
#: How often the sender reads the outbox's pending and failed counts into :data:`OUTBOX`, seconds.
OUTBOX_REFRESH_S: Final = 15.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allow_list(value: str) -> tuple[set[str], list[Network]]:
    """``OCRSTREAM_WEBHOOK_ALLOW_HOSTS`` as (host names, networks); raises ConfigurationError."""
    hosts, networks = set(), []
    for item in (v.strip().lower() for v in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            if any(c in item for c in "/:@ ") or item.startswith("."):
                raise ConfigurationError(f"OCRSTREAM_WEBHOOK_ALLOW_HOSTS: {item!r} is neither a host name "
                                         "nor an address or CIDR") from None
            hosts.add(item)
    return hosts, networks


def _internal(address: Address) -> bool:
    """Loopback, link-local, private, multicast, reserved or unspecified (IPv4-mapped IPv6 as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (address.is_loopback or address.is_link_local or address.is_private or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


async def _resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (getaddrinfo in a thread); raises InvalidSubmissionError."""
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidSubmissionError(f"callback URL host {host!r} does not resolve ({exc})") from None
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def check_callback_url(url: str, settings: Settings, *, resolve: bool = True) -> str:
    """``url`` if a callback may go there (see the module doc), else InvalidSubmissionError.

    ``resolve``: also check the addresses a host name resolves to (the doors and the sender do;
    False checks only the URL's form and a literal address).
    """
    if settings.webhook_secret is None:
        raise InvalidSubmissionError("callback URLs are off here: OCRSTREAM_WEBHOOK_SECRET is not set")
    if len(url) > MAX_URL_CHARS:
        raise InvalidSubmissionError(f"callback URL of {len(url)} characters; at most {MAX_URL_CHARS}")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise InvalidSubmissionError(f"callback URL is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSubmissionError("callback URL must be http:// or https:// with a host")
    if parts.username or parts.password:
        raise InvalidSubmissionError("callback URL must not carry credentials")
    host = parts.hostname.lower().rstrip(".")
    hosts, networks = allow_list(settings.webhook_allow_hosts)
    if host in hosts:
        return url
    try:
        addresses: list[Address] = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return url
        addresses = await _resolve(host, port)
    for address in addresses:
        if _internal(address) and not any(address in n for n in networks if n.version == address.version):
            raise InvalidSubmissionError(
                f"callback URL host {host!r} is an internal address ({address}): refused unless allowed "
                "by OCRSTREAM_WEBHOOK_ALLOW_HOSTS")
    return url


def summary(event: ResultsEvent, max_bytes: int) -> str:
    """The webhook body of a results event (JSON text of at most ``max_bytes`` bytes): type,
    document id, status, timestamps, pages, regions, needs_review, fields, error, and the text,
    cut (``text_truncated``) when the whole would be larger. Raises ValueError when even the
    body without text is larger (fields of a pathological template)."""
    body: dict[str, Any] = {
        "type": f"document.{event.status}", "document_id": event.document_id, "status": event.status,
        "timestamps": events.to_json_object(event.timestamps), "pages": len(event.pages),
        "regions": len(event.regions), "needs_review": bool(event.needs_review),
        "fields": msgspec.to_builtins(event.fields) if event.fields else {},
        "error": events.to_json_object(event.error) if event.error else None,
        "text": event.text, "text_truncated": False}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) <= max_bytes:
        return text
    room = max_bytes - len(json.dumps({**body, "text": "", "text_truncated": True}, ensure_ascii=False,
                                      separators=(",", ":")).encode())
    if room < 0:
        raise ValueError(f"webhook body without its text is over {max_bytes} bytes")
    cut = event.text.encode()[:room].decode("utf-8", "ignore")
    while True:  # JSON escapes may make the cut text longer than its bytes: shorten until it fits
        text = json.dumps({**body, "text": cut, "text_truncated": True}, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode()) <= max_bytes:
            return text
        cut = cut[: max(0, len(cut) - (len(text.encode()) - max_bytes) - 1)]


def backoff_s(attempts: int, initial_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before the next try after ``attempts`` failed ones: full jitter over
    ``min(max_s, initial_s * 2**(attempts - 1))`` (AWS's "full jitter")."""
    ceiling = min(max_s, initial_s * 2 ** min(max(attempts - 1, 0), 60))
    return (rng or random).uniform(0, ceiling)


class WebhookSender:
    """Delivers the outbox's due rows until stopped (see the module doc). ``pool``: an asyncpg
    pool (None: its own, opened by :meth:`run`); ``client``: an httpx.AsyncClient (tests)."""

    def __init__(self, settings: Settings, pool: Any = None, client: httpx.AsyncClient | None = None):
        if settings.webhook_secret is None:
            raise ConfigurationError("the webhook sender needs OCRSTREAM_WEBHOOK_SECRET")
        from standardwebhooks.webhooks import Webhook

        self.settings, self.pool, self.client = settings, pool, client
        try:
            self.signer = Webhook(settings.webhook_secret.get_secret_value())
        except Exception as exc:  # noqa: BLE001 - the package raises plain errors for a bad secret
            raise ConfigurationError(f"OCRSTREAM_WEBHOOK_SECRET is not a whsec_<base64> secret: {exc}") from None
        allow_list(settings.webhook_allow_hosts)  # fail at start on a bad allow-list

    async def run(self, stop: asyncio.Event) -> None:
        """Poll and deliver until ``stop``; deliveries in flight finish (each bounded by the timeout)."""
        own_pool = self.pool is None
        if own_pool:
            self.pool = await create_pool(self.settings, max_size=2)
        client = self.client or httpx.AsyncClient(timeout=self.settings.webhook_timeout_s, follow_redirects=False)
        refreshed = float("-inf")
        try:
            while not stop.is_set():
                if time.monotonic() - refreshed >= OUTBOX_REFRESH_S:
                    refreshed = time.monotonic()
                    await self.refresh_gauge()
                try:
                    sent = await self.send_due(client)
                except Exception as exc:  # noqa: BLE001 - the database is down: try again later
                    log.warning("webhooks: cannot read the outbox (%s: %s); retrying", type(exc).__name__, exc)
                    sent = 0
                if not sent:
                    try:
                        await asyncio.wait_for(stop.wait(), self.settings.webhook_poll_s)
                    except asyncio.TimeoutError:
                        pass
        finally:
            if self.client is None:
                await client.aclose()
            if own_pool:
                await self.pool.close()

    async def refresh_gauge(self) -> None:
        """Set :data:`OUTBOX` from the outbox (pending and failed rows); a database error is logged."""
        try:
            counts = await outbox.open_counts(self.pool)
        except Exception as exc:  # noqa: BLE001 - the database is down: the loop below says so too
            log.debug("webhooks: outbox counts unread (%s)", exc)
            return
        for status in ("pending", "failed"):
            OUTBOX.labels(status).set(counts.get(status, 0))

    async def send_due(self, client: httpx.AsyncClient) -> int:
        """Claim and deliver one round of due rows (at most ``webhook_concurrency``); how many."""
        s = self.settings
        due = await outbox.claim(self.pool, s.webhook_concurrency, s.webhook_timeout_s * 3 + 10)
        await asyncio.gather(*(self.deliver(client, d) for d in due))
        return len(due)

    def headers(self, delivery: outbox.Delivery, now: datetime) -> dict[str, str]:
        """The Standard Webhooks headers of ``delivery`` signed at ``now``."""
        return {"content-type": "application/json", "user-agent": "ocrstream-webhooks/1",
                "webhook-id": delivery.webhook_id, "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": self.signer.sign(delivery.webhook_id, now, delivery.payload)}

    async def deliver(self, client: httpx.AsyncClient, delivery: outbox.Delivery) -> str:
        """One attempt; the outcome (``delivered``, ``retry``, ``failed``, ``refused``), recorded in the row."""
        s = self.settings
        attempt = delivery.attempts + 1
        status: int | None = None
        try:
            await check_callback_url(delivery.url, s)
        except InvalidSubmissionError as exc:
            await outbox.failed(self.pool, delivery.webhook_id, None, f"refused: {exc}")
            return self._outcome("refused", delivery, attempt, None, str(exc))
        try:
            now = datetime.now(timezone.utc)
            response = await client.post(delivery.url, content=delivery.payload.encode(),
                                         headers=self.headers(delivery, now), timeout=s.webhook_timeout_s)
            status = response.status_code
            if 200 <= status < 300:
                await outbox.delivered(self.pool, delivery.webhook_id, status)
                return self._outcome("delivered", delivery, attempt, status, "")
            error = f"HTTP {status}: {response.text[:MAX_ERROR_CHARS]}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        delay = backoff_s(attempt, s.webhook_retry_initial_s, s.webhook_retry_max_s)
        age = (datetime.now(timezone.utc) - delivery.created_at).total_seconds()
        if attempt >= s.webhook_max_attempts or age + delay > s.webhook_max_age_s:
            await outbox.failed(self.pool, delivery.webhook_id, status, error)
            return self._outcome("failed", delivery, attempt, status, error)
        await outbox.retry(self.pool, delivery.webhook_id, delay, status, error)
        return self._outcome("retry", delivery, attempt, status, f"{error}; next try in {delay:.1f} s")

    @staticmethod
    def _outcome(outcome: str, d: outbox.Delivery, attempt: int, status: int | None, detail: str) -> str:
        DELIVERIES.labels(outcome).inc()
        level = logging.WARNING if outcome in ("failed", "refused") else logging.INFO
        log.log(level, "webhook %s (document %s) attempt %d -> %s: %s %s", d.webhook_id, d.document_id, attempt,
                d.url, outcome if status is None else f"{outcome} (HTTP {status})", detail)
        return outcome


def callback_of(document: Any) -> str | None:
    """The callback URL an event's ``document`` (model or JSON object) names, if any."""
    url = document.get("callback_url") if isinstance(document, dict) else getattr(document, "callback_url", None)
    return url if isinstance(url, str) and url else None


__all__ = ["DELIVERIES", "OUTBOX", "WebhookSender", "allow_list", "backoff_s", "callback_of",
                          "check_callback_url", "summary"]
