"""``Idempotency-Key`` at the ingest HTTP door (IETF httpapi draft "The Idempotency-Key HTTP
Header Field"): a client that retries an upload whose answer it lost gets the same document and
the same answer instead of a second document.

* A key is scoped by the API key that sent it (two clients may pick the same key) and bound to a
  *fingerprint* of the request: the content's SHA-256 and the template.
* The document id of a keyed upload is derived from the scoped key and the fingerprint
  (:meth:`IdempotencyKeys.document_id`): even when the door dies after the broker acknowledged
  the event and before the answer was remembered, the retry produces the same document id (the
  stages and the store are idempotent per id), never a second document.
* The answer (202 body) is remembered in the object store under ``_runtime/idempotency/`` once
  the event is acknowledged, for ``OCRSTREAM_IDEMPOTENCY_TTL_S`` (default one day); a retry
  within that time gets it back as it was; the same key with another fingerprint is refused with
  422 :class:`~ocrstream.errors.IdempotencyKeyReusedError`. An expired record is forgotten
  (overwritten by the next upload with that key) and swept: the ingest process deletes the
  records last written more than the retention time ago every
  ``OCRSTREAM_IDEMPOTENCY_SWEEP_INTERVAL_S`` (:meth:`IdempotencyKeys.sweep`, by the object
  store's modification times, :data:`SWEEP_BATCH` keys per listing), so the prefix holds about
  one retention time's keys. Requests with the same key are handled one at a time in this process.
* Refusals (bad input, 503) are not remembered: nothing was accepted, a retry is a new attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ocrstream.errors import MissingObjectError

#: The request header (case-insensitive).
HEADER = "Idempotency-Key"
#: Longest key, characters (without the quotes of a structured-field string).
MAX_KEY_CHARS = 255
#: The key's form: visible ASCII and spaces (an sf-string, quoted or not).
KEY_PATTERN = r'^"?[\x21-\x7e][\x20-\x7e]{0,254}"?$'
PREFIX = "_runtime/idempotency/"
#: resolution of the object store's modification times (S3 ``LastModified``: whole seconds); a
#: record is swept only when older than the retention time plus this, so it is kept at least that long.
MODIFIED_RESOLUTION_S = 1.0
#: keys listed per sweep round (S3 lists 1,000 per page; rounds go on while a round deleted some).
SWEEP_BATCH = 10_000


class Store(Protocol):
    """What this module needs of :class:`~ocrstream.storage.objectstore.ObjectStore`."""

    async def get(self, key: str) -> bytes: ...

    async def put(self, key: str, data: bytes, content_type: str = ...) -> None: ...


class SweptStore(Store, Protocol):
    """A :class:`Store` that can also list with modification times and delete (the sweep)."""

    async def list_modified(self, prefix: str, limit: int = ...) -> list[tuple[str, float]]: ...

    async def delete(self, keys: list[str]) -> None: ...


@dataclass(frozen=True)
class Remembered:
    """A remembered answer: the request's fingerprint, the answer's body, when (epoch seconds)."""

    fingerprint: str
    answer: dict[str, Any]
    created: float


def fingerprint(sha256: str, template: str | None) -> str:
    """What must match for a retry to be the same request: the content hash and the template."""
    return hashlib.sha256(f"{sha256}|{template or ''}".encode()).hexdigest()


class IdempotencyKeys:
    """The remembered answers of one ingest door (module doc)."""

    def __init__(self, store: Store, ttl_s: float, clock: Callable[[], float] = time.time):
        self.store, self.ttl_s, self.clock = store, ttl_s, clock
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def scoped(api_key: str | None, key: str) -> str:
        """The record id of ``key`` sent with the API key named ``api_key`` (None: no keys)."""
        key = key[1:-1] if len(key) >= 2 and key[0] == key[-1] == '"' else key
        return hashlib.sha256(f"{api_key or ''}\0{key}".encode()).hexdigest()

    @staticmethod
    def document_id(scoped: str, fingerprint: str) -> str:
        """The document id of a keyed upload: the same for a retry, another for other bytes."""
        return "http-" + hashlib.sha256(f"{scoped}|{fingerprint}".encode()).hexdigest()[:32]

    @asynccontextmanager
    async def exclusive(self, scoped: str) -> AsyncIterator[None]:
        """Hold ``scoped`` while a request with it is handled (one at a time per key)."""
        lock = self._locks.setdefault(scoped, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and self._locks.get(scoped) is lock:
                del self._locks[scoped]  # bounded: only keys in use are held

    async def recall(self, scoped: str) -> Remembered | None:
        """The answer remembered for ``scoped`` within the retention time, or None."""
        try:
            raw = json.loads(await self.store.get(PREFIX + scoped))
            remembered = Remembered(str(raw["fingerprint"]), dict(raw["answer"]), float(raw["created"]))
        except MissingObjectError:
            return None
        except (ValueError, KeyError, TypeError):  # unreadable: as if never written
            return None
        if self.clock() - remembered.created > self.ttl_s:
            return None
        return remembered

    async def sweep(self, store: SweptStore) -> int:
        """Delete the records last written more than ``ttl_s`` (+ :data:`MODIFIED_RESOLUTION_S`)
        ago (by ``store``'s modification times against :attr:`clock`); returns how many. Bounded per round (:data:`SWEEP_BATCH`);
        a later round is needed only when a round was full and deleted nothing (not the case
        with hashed keys of mixed ages for long)."""
        deleted = 0
        while True:
            listed = await store.list_modified(PREFIX, SWEEP_BATCH)
            expired = [key for key, modified in listed
                       if self.clock() - modified > self.ttl_s + MODIFIED_RESOLUTION_S]
            if expired:
                await store.delete(expired)
                deleted += len(expired)
            if len(listed) < SWEEP_BATCH or not expired:
                return deleted

    async def remember(self, scoped: str, fingerprint: str, answer: dict[str, Any]) -> None:
        """Keep ``answer`` for ``scoped`` (overwrites an expired record)."""
        body = json.dumps({"fingerprint": fingerprint, "answer": answer, "created": self.clock()})
        await self.store.put(PREFIX + scoped, body.encode(), "application/json")
