"""Audit of a run: the documents submitted vs the ``documents`` rows vs the results events.

Used by the fault suite (``tests/faults/``), the durability benchmark and anyone checking a
deployment after an incident::

    report = await audit(settings, expected)   # expected: {document_id: Expectation}
    print(report.summary())

What it reads, without joining any consumer group (so it never disturbs the stages):

* PostgreSQL ``documents``: one row per document id (status ``done``/``failed``, error type);
* every event of ``ocr.results.v1``, all partitions, read up to the fetch high-water mark
  (:func:`ocrstream.ops.dlq.read_partitions`; the embedded broker's end offsets are unreliable);
* each stage's committed offsets (OffsetFetch, no JoinGroup) against the fetch high-water
  mark of its input partitions: the lag.

A *document version* is the results event's ``timestamps.recognized`` (done) or
``timestamps.failed`` (failed): the store publishes one results event per version, and a
consumer of the results topic detects a re-publication by seeing a (document id, version) pair
twice. The audit counts exactly those pairs seen more than once (``duplicated``).

Per run it reports submitted, done, failed (and how many failed *as expected*, i.e. with the
expected error type), lost (no row or no results event), wrong (a final state other than the
expected one), duplicated results events, and the lag of every stage (stuck: lag > 0).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg

from ocrstream.contracts import events
from ocrstream.contracts.event_models import ResultsEvent
from ocrstream.contracts.stages import STAGE_INPUTS
from ocrstream.errors import InvalidEventError
from ocrstream.ops.dlq import read_partitions
from ocrstream.settings import Settings
from ocrstream.streaming.lag import LagReader


@dataclass(frozen=True)
class Expectation:
    """What a submitted document should end as: ``status`` ``done`` or ``failed`` (then
    ``error_type`` names the typed error, e.g. ``TruncatedImageError``)."""

    status: str = "done"
    error_type: str | None = None


DONE = Expectation()


@dataclass
class AuditReport:
    """Outcome of one run. Counts are numbers of documents except ``duplicated`` (extra results
    events: a (document, version) published n times adds n - 1) and ``lag`` (records per stage)."""

    submitted: int = 0
    done: int = 0
    failed: int = 0
    failed_as_expected: int = 0
    lost: list[str] = field(default_factory=list)  # no row, or no results event
    wrong: list[tuple[str, str, str]] = field(default_factory=list)  # (id, expected, got)
    duplicated: int = 0
    duplicated_documents: list[str] = field(default_factory=list)
    results_events: int = 0
    lag: dict[str, int] = field(default_factory=dict)  # stage -> records not yet committed

    @property
    def stuck(self) -> list[str]:
        """Stages whose lag is above 0."""
        return [s for s, n in self.lag.items() if n > 0]

    @property
    def complete(self) -> bool:
        """Every submission has its final row and results event, as expected, nothing stuck."""
        return not self.lost and not self.wrong and not self.stuck

    def summary(self) -> str:
        """One line for logs and test output."""
        return (f"submitted={self.submitted} done={self.done} failed={self.failed} "
                f"(as expected {self.failed_as_expected}) lost={len(self.lost)} wrong={len(self.wrong)} "
                f"duplicated={self.duplicated} (documents {len(self.duplicated_documents)}) "
                f"results_events={self.results_events} lag={self.lag}")


def result_version(event: ResultsEvent) -> str | None:
    """The version of a results event: ``timestamps.recognized`` (done) or ``timestamps.failed``."""
    ts = event.timestamps
    return (ts.failed if event.status == "failed" else ts.recognized) or None


async def results_by_document(settings: Settings, document_ids: Iterable[str] | None = None
                              ) -> dict[str, Counter]:
    """``{document_id: Counter({version: times published})}`` over every results event
    (restricted to ``document_ids`` when given; records that are not valid results events are
    skipped). Raises the client's connection errors."""
    wanted = set(document_ids) if document_ids is not None else None
    found: dict[str, Counter] = {}
    for record in await read_partitions(settings, events.RESULTS):
        try:
            event = events.decode(events.RESULTS, record.value)
        except InvalidEventError:
            continue
        if wanted is not None and event.document_id not in wanted:
            continue
        found.setdefault(event.document_id, Counter())[result_version(event)] += 1
    return found


async def rows_by_document(settings: Settings, document_ids: Iterable[str]) -> dict[str, asyncpg.Record]:
    """``{document_id: row}`` (status, error_type, version) of the ``documents`` table."""
    conn = await asyncpg.connect(settings.dsn, timeout=settings.postgres_timeout_s)
    try:
        rows = await conn.fetch("SELECT document_id, status, error_type, version FROM documents"
                                " WHERE document_id = ANY($1::text[])", list(document_ids))
    finally:
        await conn.close()
    return {r["document_id"]: r for r in rows}


async def final_count(settings: Settings, document_ids: Iterable[str]) -> int:
    """How many of ``document_ids`` have a row (done or failed) whose results event was acked."""
    conn = await asyncpg.connect(settings.dsn, timeout=settings.postgres_timeout_s)
    try:
        return await conn.fetchval("SELECT count(*) FROM documents WHERE document_id = ANY($1::text[])"
                                   " AND published_at IS NOT NULL", list(document_ids))
    finally:
        await conn.close()


async def stage_lag(settings: Settings, stages: Iterable[str] = STAGE_INPUTS) -> dict[str, int]:
    """Records not yet committed per stage group: sum over its input partitions of the fetch
    high-water mark minus the committed offset (0 when nothing is committed and the partition
    is empty), read by :class:`ocrstream.streaming.lag.LagReader` (OffsetFetch, never joining the group)."""
    async with LagReader(settings, fetch_timeout_ms=10_000) as reader:
        return {stage: sum(row.lag for row in await reader.read(f"{settings.consumer_group_prefix}-{stage}",
                                                                 STAGE_INPUTS[stage]))
                for stage in stages}


async def audit(settings: Settings, expected: Mapping[str, Expectation]) -> AuditReport:
    """Audit the documents ``expected`` (id -> what it should end as); see the module doc."""
    rows = await rows_by_document(settings, expected)
    published = await results_by_document(settings, expected)
    report = AuditReport(submitted=len(expected), lag=await stage_lag(settings))
    for doc_id, want in expected.items():
        row, versions = rows.get(doc_id), published.get(doc_id, Counter())
        report.results_events += sum(versions.values())
        extra = sum(n - 1 for n in versions.values())
        if extra:
            report.duplicated += extra
            report.duplicated_documents.append(doc_id)
        if row is None or not versions:
            report.lost.append(doc_id)
            continue
        if row["status"] == "done":
            report.done += 1
        else:
            report.failed += 1
            if want.status == "failed" and (want.error_type in (None, row["error_type"])):
                report.failed_as_expected += 1
        if row["status"] != want.status or (want.status == "failed" and want.error_type
                                            not in (None, row["error_type"])):
            report.wrong.append((doc_id, f"{want.status}:{want.error_type or ''}",
                                 f"{row['status']}:{row['error_type'] or ''}"))
    return report


async def wait_until_drained(settings: Settings, document_ids: Iterable[str], *, timeout_s: float,
                             poll_s: float = 1.0) -> float:
    """Wait until every id has a published final row and no stage lags; seconds waited.

    Tolerates the dependencies being down meanwhile (connection errors are retried). Raises
    TimeoutError with the last counts when ``timeout_s`` passes.
    """
    ids = list(document_ids)
    started = time.monotonic()
    last: tuple[int, dict] | tuple[str] = ("nothing read yet",)
    while time.monotonic() - started < timeout_s:
        try:
            done = await asyncio.wait_for(final_count(settings, ids), 15)
            if done == len(ids):
                lag = await asyncio.wait_for(stage_lag(settings), 30)
                last = (done, lag)
                if not any(lag.values()):
                    return time.monotonic() - started
            else:
                last = (done, {})
        except Exception as exc:  # noqa: BLE001 - a dependency may be down: keep waiting
            last = (f"{type(exc).__name__}: {exc}",)
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"not drained after {timeout_s:g} s: {len(ids)} submitted, last seen {last}")
