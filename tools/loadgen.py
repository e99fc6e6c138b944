"""Load generator: distinct rendered documents submitted through all three doors at once.

    gen = LoadGenerator(settings, http_url="http://127.0.0.1:8080")
    submissions = await gen.run(make_documents(200), rate_per_s=10)

Documents (:func:`make_documents`) are small rendered pages (two short lines, 18 px font, about
300 x 110 px) with distinct text, so every one has its own content hash; every
``bad_every``-th one is a truncated JPEG that passes the doors and must end ``failed`` with
``TruncatedImageError`` in preprocess. They are dealt round-robin to the doors, which submit
concurrently:

* ``cli``: the in-process :class:`ocrstream.streaming.ingestor.Submitter` (what ``ocrstream submit`` runs);
* ``http``: ``POST /v1/documents`` on the ingest stage (loopback, no API key needed);
* ``raw``: an aiokafka producer (``acks=all``) to ``ocr.raw.v1`` with a unique key; the
  document id is :func:`services.ingest.stage.raw_key_document_id` of that key and the bytes.

A submission counts once its door acknowledged it (receipt, HTTP 202, broker ack). A door that
fails transiently (broker, S3 down: an exception or a 5xx) is retried with exponential backoff
and jitter as a client would, up to ``give_up_s``; a CLI/HTTP retry gets a new document id (the
unacknowledged attempt may still surface as an extra document, which the audit ignores since it
audits acknowledged ids only), a raw retry keeps its id (same key, same bytes).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import uuid
from dataclasses import dataclass

import httpx

from ocrstream.contracts import events
from ocrstream.ops.audit import DONE, Expectation
from ocrstream.settings import Settings
from ocrstream.streaming.ingestor import Submitter
from ocrstream.streaming.kafka import make_producer
from services.ingest.stage import raw_key_document_id
from tools.render_samples import encode, render_page

DOORS = ("cli", "http", "raw")
WORDS = ("amber", "basil", "cedar", "delta", "ember", "fjord", "grove", "harbor", "iris", "juniper",
         "kelp", "lotus", "maple", "nectar", "olive", "pepper", "quartz", "raven", "sage", "tulip")
TRUNCATED = Expectation("failed", "TruncatedImageError")


@dataclass(frozen=True)
class Document:
    """One document to submit: file name, bytes and the outcome expected."""

    name: str
    data: bytes
    expected: Expectation = DONE


@dataclass(frozen=True)
class Submission:
    """An acknowledged submission: its document id, door, expected outcome and when (monotonic s)."""

    document_id: str
    door: str
    expected: Expectation
    acked_at: float
    attempts: int = 1


def make_documents(count: int, *, seed: int = 0, bad_every: int = 50) -> list[Document]:
    """``count`` distinct small pages (PNG, every third a JPEG); every ``bad_every``-th one
    (0: none) is a truncated JPEG expected to fail in preprocess."""
    rng = random.Random(seed)
    tag = uuid.UUID(int=rng.getrandbits(128)).hex[:6].upper()
    docs = []
    for i in range(count):
        lines = [f"DOC {tag} {i:04d}", " ".join(rng.sample(WORDS, 2)).upper() + f" {rng.randint(10, 99)}"]
        page = render_page(lines, size=18, margin=20)
        if bad_every and i % bad_every == bad_every - 1:
            jpeg = encode(page, "JPEG", quality=85)
            docs.append(Document(f"doc{i:04d}-truncated.jpg", jpeg[: len(jpeg) // 2], TRUNCATED))
        elif i % 3 == 2:
            docs.append(Document(f"doc{i:04d}.jpg", encode(page, "JPEG", quality=90)))
        else:
            docs.append(Document(f"doc{i:04d}.png", encode(page)))
    return docs


class LoadGenerator:
    """Submits documents through the CLI, HTTP and raw-topic doors concurrently (module doc)."""

    def __init__(self, settings: Settings, http_url: str, *, give_up_s: float = 300,
                 doors: tuple[str, ...] = DOORS, log=lambda line: None):
        self.settings, self.http_url, self.give_up_s, self.doors, self.log = (
            settings, http_url.rstrip("/"), give_up_s, doors, log)
        self.submissions: list[Submission] = []  # grows while run() goes on
        self.retries = 0

    async def run(self, documents: list[Document], *, rate_per_s: float | None = None) -> list[Submission]:
        """Submit every document (dealt round-robin to the doors), at most ``rate_per_s`` in
        total; the acknowledged submissions in order of acknowledgement. Raises RuntimeError
        when a door could not submit a document for ``give_up_s``."""
        per_door = {door: documents[i::len(self.doors)] for i, door in enumerate(self.doors)}
        interval = len(self.doors) / rate_per_s if rate_per_s else 0.0
        await asyncio.gather(*(self._door(door, docs, interval) for door, docs in per_door.items()))
        return self.submissions

    async def _door(self, door: str, docs: list[Document], interval: float) -> None:
        submit = {"cli": self._cli, "http": self._http, "raw": self._raw}[door]
        async with _DoorClient(door, self.settings) as client:
            for doc in docs:
                started = time.monotonic()
                attempts = await self._with_retries(door, lambda: submit(client, doc))
                self.submissions.append(Submission(attempts[0], door, doc.expected, time.monotonic(), attempts[1]))
                await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _with_retries(self, door: str, fn) -> tuple[str, int]:
        deadline, delay, attempt = time.monotonic() + self.give_up_s, 0.2, 0
        while True:
            attempt += 1
            try:
                return await fn(), attempt
            except Exception as exc:  # noqa: BLE001 - transient door failure: retry like a client
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{door} door failing for {self.give_up_s:g} s: {exc!r}") from exc
                self.retries += 1
                self.log(f"{door} door: {type(exc).__name__}: {exc}; retrying")
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(5.0, delay * 2)

    async def _cli(self, client: "_DoorClient", doc: Document) -> str:
        if client.submitter is None:  # (re)connect: a failed start leaves nothing half-open
            submitter = Submitter(self.settings)
            await asyncio.wait_for(submitter.__aenter__(), 60)
            client.submitter = submitter
        receipt = await asyncio.wait_for(client.submitter.submit(doc.data, doc.name, "cli"), 60)
        if receipt.error is not None:
            raise AssertionError(f"the CLI door refused {doc.name}: {receipt.error!r}")
        return receipt.document_id

    async def _http(self, client: "_DoorClient", doc: Document) -> str:
        resp = await client.http.post(self.http_url + "/v1/documents", files={"file": (doc.name, doc.data)})
        if resp.status_code != 202:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return resp.json()["document_id"]

    async def _raw(self, client: "_DoorClient", doc: Document) -> str:
        if client.producer is None:
            producer = make_producer(self.settings)
            try:
                await asyncio.wait_for(producer.start(), 60)
            except BaseException:
                await producer.stop()
                raise
            client.producer = producer
        key = f"loadgen-{client.key_prefix}-{doc.name}"
        await asyncio.wait_for(client.producer.send_and_wait(
            events.RAW, doc.data, key=key.encode(), headers=[("filename", doc.name.encode())]), 60)
        return raw_key_document_id(key, hashlib.sha256(doc.data).hexdigest())


class _DoorClient:
    """The per-door client (Submitter, httpx client or producer), closed at the end."""

    def __init__(self, door: str, settings: Settings):
        self.door, self.settings = door, settings
        self.submitter: Submitter | None = None
        self.producer = None
        self.http: httpx.AsyncClient | None = None
        self.key_prefix = uuid.uuid4().hex[:8]

    async def __aenter__(self) -> "_DoorClient":
        if self.door == "http":
            self.http = httpx.AsyncClient(timeout=httpx.Timeout(60.0))
        return self

    async def __aexit__(self, *exc_info) -> None:
        for close in (self.submitter and self.submitter.__aexit__(None, None, None),
                      self.producer and self.producer.stop(), self.http and self.http.aclose()):
            if close is not None:
                try:
                    await asyncio.wait_for(close, 30)
                except Exception:  # noqa: BLE001 - best effort at the end of a run
                    pass
