"""The client side of the pipeline: submit documents and wait for their results.

Used by ``ocrstream submit`` and the demo (and so by everyone who tries ocrstream first)::

    async with Client(settings) as client:            # wait=True: results reader started here
        receipts = await client.submit_paths(paths)    # originals to S3, ocr.ingested.v1 out
        outcomes, missing = await client.wait(receipts, timeout_s=60)  # Outcome: receipt + result

Submitting goes through the ingest stage's CLI door (:class:`services.ingest.stage.Submitter`,
in this process). Waiting reads ``ocr.results.v1`` with a :class:`ocrstream.streaming.results.ResultsReader`
started *before* the first submission at the fetch high-water mark: no consumer-group join, so
the answer comes ~10 ms after the store produced it. A document counts as finished when the
store has recorded its outcome (``done`` or ``failed``); one refused at the door (empty, too
large, unsupported type) is finished at once, from its receipt, as ``failed`` in ``ingest``; a
re-submission answered with an earlier ``done``
document (``OCRSTREAM_DUPLICATES=reuse``) is read from PostgreSQL.

:class:`StackUnreachableError` says that the broker, S3 or PostgreSQL does not answer, i.e. that
no stack runs at the configured addresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError

from ocrstream.contracts import events
from ocrstream.contracts.event_models import UNSET, ErrorInfo, ResultsEvent, Timestamps, UnsetType
from ocrstream.settings import Settings
from ocrstream.streaming.ingestor import Receipt, Submitter
from ocrstream.streaming.results import ResultsReader, fetch_documents


class StackUnreachableError(ConnectionError):
    """The Kafka API (or S3, or PostgreSQL) does not answer at the configured address."""

    def __init__(self, component: str, address: str, cause: BaseException):
        self.component, self.address = component, address
        super().__init__(f"no {component} answering at {address} ({type(cause).__name__}: {cause})")

    @property
    def hint(self) -> str:
        """One line for the user: what is missing and the command that starts it."""
        return (f"no ocrstream stack reachable ({self.component} at {self.address} does not answer): "
                "start one with `ocrstream dev up` (or set OCRSTREAM_* to your stack)")


def unreachable(settings: Settings, exc: BaseException) -> StackUnreachableError | None:
    """The StackUnreachableError that ``exc`` amounts to (a connection to the broker, S3 or
    PostgreSQL failed), or None when ``exc`` is something else."""
    import urllib3

    if isinstance(exc, (KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError)):
        return StackUnreachableError("Kafka API", settings.kafka_bootstrap, exc)
    if isinstance(exc, urllib3.exceptions.HTTPError):  # minio wraps refused/timed-out connections
        return StackUnreachableError("S3", settings.s3_endpoint, exc)
    if isinstance(exc, OSError):  # asyncpg: refused connection (ConnectionRefusedError, socket.gaierror)
        return StackUnreachableError("PostgreSQL", settings.dsn.rsplit("@", 1)[-1], exc)
    return None


def _raise_unreachable(settings: Settings, exc: BaseException) -> NoReturn:
    if (error := unreachable(settings, exc)) is not None:
        raise error from exc
    raise exc


@dataclass(frozen=True)
class Outcome:
    """A finished document: its receipt and its result (the ``ocr.results.v1`` event; built from
    the ``documents`` row, without pages and regions, when it was read from PostgreSQL)."""

    receipt: Receipt
    result: ResultsEvent

    @property
    def ok(self) -> bool:
        return self.result.status == "done"

    @property
    def error_line(self) -> str:
        """``failed in STAGE: ErrorType: message`` (empty when done)."""
        e = self.result.error
        return "" if self.ok or e is None else f"failed in {e.stage}: {e.type}: {e.message}"


#: Seconds the results reader gets to deliver results PostgreSQL already shows as published.
STORE_FALLBACK_GRACE_S = 3.0
STORE_POLL_S = 1.0


class Client:
    """Submits documents and reads their results; an async context manager.

    ``wait=False`` skips the results reader (submit and return). Raises
    :class:`StackUnreachableError` from ``__aenter__``/``submit_*`` when the stack does not answer.
    """

    def __init__(self, settings: Settings, *, wait: bool = True):
        self.settings = settings
        self.submitter = Submitter(settings)
        self.reader = ResultsReader(settings) if wait else None
        self.callback_url: str | None = None  # completion webhook of every submission (README "Webhooks")

    async def __aenter__(self) -> "Client":
        """Start the submitter and the results reader (concurrently)."""
        starts = [self.submitter.__aenter__()] + ([self.reader.start()] if self.reader else [])
        started = await asyncio.gather(*starts, return_exceptions=True)
        if errors := [e for e in started if isinstance(e, BaseException)]:
            # the submitter's producer exists even if it never started: close it either way
            await self._close(True, len(started) > 1 and not isinstance(started[1], BaseException))
            _raise_unreachable(self.settings, errors[0])
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._close(True, self.reader is not None)

    async def _close(self, submitter: bool, reader: bool) -> None:
        if submitter:
            await self.submitter.__aexit__(None, None, None)
        if reader:
            assert self.reader is not None  # reader=True only when the client has one
            await self.reader.stop()

    async def _published_in_store(self, document_ids: list[str], timeout_s: float) -> None:
        try:
            await _poll_published(self.settings, document_ids, timeout_s)
        except (OSError, asyncio.TimeoutError):  # no database reachable: the reader alone decides
            await asyncio.sleep(timeout_s)

    async def submit(self, data: bytes, filename: str | None, template: str | None = None) -> Receipt:
        """Submit one document's bytes (door ``cli``); its :class:`Receipt`."""
        try:
            return await self.submitter.submit(data, filename, "cli", template, callback_url=self.callback_url)
        except Exception as exc:  # noqa: BLE001 - re-raised, as StackUnreachableError if it is one
            _raise_unreachable(self.settings, exc)

    async def submit_paths(self, paths: Sequence[Path], template: str | None = None,
                           templates: dict[str, str] | None = None) -> list[Receipt]:
        """Submit files in order (``template`` for all, or per file name from ``templates``). At most
        ``max_document_bytes + 1`` bytes of a file are read: a larger one is refused as too large."""
        limit = self.settings.max_document_bytes + 1
        receipts = []
        for path in paths:
            with path.open("rb") as f:
                data = f.read(limit)
            receipts.append(await self.submit(data, path.name, template or (templates or {}).get(path.name)))
        return receipts

    async def wait(self, receipts: Sequence[Receipt], *, timeout_s: float,
                   on_result: Callable[[ResultsEvent], None] = lambda e: None,
                   ) -> tuple[list[Outcome], list[Receipt]]:
        """Wait until the store has recorded every receipt's outcome, at most ``timeout_s`` seconds.

        Returns the finished :class:`Outcome` s in receipt order, and the receipts still without
        a result when the time ran out (empty when all finished).
        """
        if self.reader is None:
            raise RuntimeError("Client(wait=False) cannot wait")
        reused = [r.document_id for r in receipts if r.reused]
        refused = {r.document_id: refused_result(r) for r in receipts if r.error is not None}
        for result in refused.values():
            on_result(result)
        awaited = [r.document_id for r in receipts if not r.reused and r.document_id not in refused]
        seen: dict[str, ResultsEvent] = {}

        def first_seen(event: ResultsEvent) -> None:
            if event.document_id not in seen:
                seen[event.document_id] = event
                on_result(event)

        reader = asyncio.create_task(self.reader.wait_for(awaited, timeout_s=timeout_s, on_result=first_seen))
        stored = asyncio.create_task(self._published_in_store(awaited, timeout_s))
        try:
            await asyncio.wait({reader, stored}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():  # every result is stored and published: the reader gets a grace
                await asyncio.wait({reader}, timeout=STORE_FALLBACK_GRACE_S)
        finally:
            for task in (reader, stored):
                task.cancel()
            await asyncio.gather(reader, stored, return_exceptions=True)
        results = dict(seen)
        all_stored = stored.done() and not stored.cancelled() and stored.exception() is None
        if all_stored and (missing := [d for d in awaited if d not in results]):
            # Results the reader did not see although the store published them (the embedded
            # broker's positions are not always right): read from PostgreSQL, the system of record.
            rows = await fetch_documents(self.settings, missing)
            for doc_id in missing:
                if doc_id in rows and rows[doc_id].get("published_at") is not None:
                    results[doc_id] = result_from_row(rows[doc_id])
                    first_seen(results[doc_id])
        results.update(refused)
        if reused:
            rows = await fetch_documents(self.settings, reused)
            for doc_id in reused:
                results[doc_id] = result_from_row(rows[doc_id])
                on_result(results[doc_id])
        return ([Outcome(r, results[r.document_id]) for r in receipts if r.document_id in results],
                [r for r in receipts if r.document_id not in results])


async def submit_all(settings: Settings, paths: Sequence[Path], template: str | None = None,
                     templates: dict[str, str] | None = None) -> list[Receipt]:
    """Submit files without waiting (see :meth:`Client.submit_paths`); their receipts, in order."""
    async with Client(settings, wait=False) as client:
        return await client.submit_paths(paths, template, templates)


async def _poll_published(settings: Settings, document_ids: list[str], timeout_s: float) -> None:
    """Return once every document has a published row in PostgreSQL (at most ``timeout_s`` s)."""
    import asyncpg

    from ocrstream.storage.documents import count_published

    if not document_ids:
        return
    deadline = asyncio.get_running_loop().time() + timeout_s
    conn = await asyncpg.connect(settings.dsn, timeout=settings.postgres_timeout_s)
    try:
        while asyncio.get_running_loop().time() < deadline:
            try:
                n = await count_published(conn, document_ids)
            except asyncpg.PostgresError:  # e.g. the store has not created its tables yet
                n = 0
            if n >= len(document_ids):
                return
            await asyncio.sleep(STORE_POLL_S)
        await asyncio.sleep(3600)  # timed out: let the reader's own timeout decide
    finally:
        await conn.close()


def refused_result(receipt: Receipt) -> ResultsEvent:
    """A ``failed`` result for a submission refused at the door (no document made; like a
    dead letter's result, ``ingested`` and ``failed`` are the time of refusal)."""
    now = events.now_iso()
    return ResultsEvent(version=1, document_id=receipt.document_id, status="failed",
                        timestamps=Timestamps(ingested=now, failed=now), text="", pages=[], regions=[],
                        error=ErrorInfo(stage="ingest", type=type(receipt.error).__name__, message=str(receipt.error)))


def result_from_row(row: dict) -> ResultsEvent:
    """A result from a ``documents`` row (status, text, error, times; no pages or regions)."""
    def iso(name: str) -> str | UnsetType:
        return row[name].isoformat() if row.get(name) is not None else UNSET

    failed = row["status"] == "failed"
    return ResultsEvent(
        version=1, document_id=row["document_id"], status=row["status"],
        timestamps=Timestamps(submitted=iso("submitted_at"), ingested=row["ingested_at"].isoformat()
                              if row.get("ingested_at") else row["stored_at"].isoformat(),
                              stored=iso("stored_at")),
        text=row.get("text") or "", pages=[], regions=[],
        error=ErrorInfo(stage=row["error_stage"], type=row["error_type"], message=row["error_message"])
        if failed else None)
