"""API keys and rate limits of the HTTP doors (ingest ``POST /v1/documents``, the query API).

Keys are random bearer tokens (``ocs_`` + 43 URL-safe characters, 256 bits from ``secrets``),
shown once when created (``ocrstream apikey create NAME --scopes ingest,query``) and stored only
as their SHA-256 in the keys file (``OCRSTREAM_API_KEYS_FILE``, mode 0600), one JSON object per
line: ``{"name", "scopes", "sha256", "created"}``. A fast hash suffices for tokens of this
entropy (no dictionary to attack; the practice of e.g. GitHub's token storage), and lookup by
hash is constant-time in the token.

Clients send ``Authorization: Bearer <key>`` (or ``X-API-Key: <key>``). No or unknown key: 401;
a key without the door's scope: 403; over ``OCRSTREAM_RATE_LIMIT_PER_MINUTE`` requests in a
moving one-minute window: 429 with ``Retry-After`` (the ``limits`` library, in memory per
process). Keys are required when a keys file is configured, when ``OCRSTREAM_REQUIRE_API_KEY``
is true, and always when a door binds beyond loopback (start-up fails without keys then).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from fastapi import HTTPException, Request
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from ocrstream.errors import ConfigurationError
from ocrstream.settings import Settings

#: Scopes a key may hold: ``ingest`` (the ingest door), ``query`` (the query API's reads), ``review``
#: (the review queue, verifying regions, the ``/review`` page). New keys get :data:`DEFAULT_SCOPES`.
SCOPES = ("ingest", "query", "review")
DEFAULT_SCOPES = ("ingest", "query")
TOKEN_PREFIX = "ocs_"


@dataclass(frozen=True)
class ApiKey:
    """A stored key: its name, scopes and the SHA-256 (hex) of the token."""

    name: str
    scopes: tuple[str, ...]
    sha256: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_key(path: Path, name: str, scopes: tuple[str, ...] = DEFAULT_SCOPES) -> str:
    """Append a new key named ``name`` to the keys file at ``path``; returns the token (shown once).

    Raises ValueError for an unknown scope or an empty name.
    """
    if not name or any(s not in SCOPES for s in scopes):
        raise ValueError(f"a key needs a name and scopes from {SCOPES}, got {name!r} {scopes}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(json.dumps({"name": name, "scopes": list(scopes), "sha256": _digest(token),
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}) + "\n")
    os.chmod(path, 0o600)
    return token


def load_keys(path: Path) -> dict[str, ApiKey]:
    """Keys of the file at ``path`` by hash; raises ConfigurationError if it is unreadable."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigurationError(f"OCRSTREAM_API_KEYS_FILE={path}: {exc}") from None
    keys = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            key = ApiKey(raw["name"], tuple(raw["scopes"]), raw["sha256"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"{path}:{n}: not a key record ({exc})") from None
        keys[key.sha256] = key
    return keys


def key_records(path: Path) -> list[dict[str, object]]:
    """The key records of the file at ``path`` without their hashes: ``{"name", "scopes", "created"}``
    in file order; raises ConfigurationError if the file is unreadable or holds a bad line."""
    load_keys(path)  # the same checks as the doors
    return [{k: v for k, v in json.loads(line).items() if k != "sha256"}
            for line in path.read_text().splitlines() if line.strip()]


def revoke_key(path: Path, name: str) -> int:
    """Remove every key called ``name`` from the file at ``path`` (rewritten atomically, mode 0600);
    returns how many were removed. Raises ConfigurationError if the file is unreadable."""
    load_keys(path)
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("name") != name]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return len(lines) - len(kept)


def _stamp(path: Path | None) -> tuple[int, int] | None:
    """(mtime in ns, size) of the keys file, None when there is none."""
    try:
        st = path.stat() if path else None
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size) if st else None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    """The FastAPI dependency of one door: ``Depends(auth.require("ingest"))``.

    Raises ConfigurationError at construction when keys are required but none are configured.
    """

    def __init__(self, settings: Settings, host: str):
        path = Path(settings.api_keys_file) if settings.api_keys_file else None
        self.path = path
        self.keys = load_keys(path) if path else {}
        self._stamp = _stamp(path)
        self.required = bool(path) or settings.require_api_key or not is_loopback(host)
        if self.required and not self.keys:
            raise ConfigurationError(
                f"the HTTP doors bind {host} (beyond loopback) or require API keys, but "
                "OCRSTREAM_API_KEYS_FILE names no keys: create one with "
                "`ocrstream apikey create NAME` and set OCRSTREAM_API_KEYS_FILE")
        self.limit = RateLimitItemPerMinute(settings.rate_limit_per_minute) if settings.rate_limit_per_minute else None
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def _reload_if_changed(self) -> None:
        """Re-read the keys file when it changed (``ocrstream apikey create|revoke`` take effect on
        the next request); one ``stat`` per request. An unreadable file keeps the keys in hand."""
        stamp = _stamp(self.path)
        if self.path is not None and stamp != self._stamp:
            try:
                self.keys = load_keys(self.path)
            except ConfigurationError:
                return
            self._stamp = stamp

    def key_for(self, token: str) -> ApiKey | None:
        """The stored key whose token is ``token``, or None (constant-time in the token: by hash;
        the keys file re-read first when it changed)."""
        self._reload_if_changed()
        return self.keys.get(_digest(token)) if token else None

    def check_rate(self, name: str) -> None:
        """Count one request of key ``name``; raises HTTPException 429 (with ``Retry-After``) over the limit."""
        if self.limit and not self.limiter.hit(self.limit, name):
            reset = self.limiter.get_window_stats(self.limit, name).reset_time
            raise HTTPException(429, f"rate limit of {self.limit.amount} requests per minute reached",
                                headers={"Retry-After": str(max(1, int(reset - datetime.now().timestamp())))})

    def require(self, scope: str) -> Callable[[Request], Awaitable[str | None]]:
        """A dependency that admits a request holding a key with ``scope``; returns the key name."""

        async def check(request: Request) -> str | None:
            if not self.required:
                return None
            self._reload_if_changed()
            token = request.headers.get("x-api-key") or ""
            auth = request.headers.get("authorization", "")
            if auth[:7].lower() == "bearer ":
                token = auth[7:].strip()
            key = self.key_for(token)
            if key is None:
                raise HTTPException(401, "missing or unknown API key (Authorization: Bearer <key>)",
                                    headers={"WWW-Authenticate": "Bearer"})
            if scope not in key.scopes:
                raise HTTPException(403, f"API key {key.name!r} lacks the {scope!r} scope")
            self.check_rate(key.name)
            return key.name

        return check
