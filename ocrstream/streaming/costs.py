"""What each document cost (issue 25): CPU seconds, wall seconds and bytes per stage.

Every stage adds one :class:`~ocrstream.contracts.event_models.StageCost` to the event it produces
(``costs``, in stage order); the store keeps their sum and breakdown (``document_costs``,
ocrstream/storage/usage.py), the results event carries them, the query API shows them, and the
store counts pages and CPU seconds per API key (tenant) and door in Prometheus.

How a stage measures (:func:`metering`, a :class:`Meter` current in the handling context):

* **CPU**: ``time.process_time()`` of the stage process across the document's handling - every
  thread of the process (the handler loop, its worker threads, ONNX Runtime's threads, and the
  Kafka loop meanwhile), plus what other processes report for it: the decoder worker measures its
  own process CPU per page and the preprocess stage adds it (:meth:`Meter.add_cpu`). A stage
  handles one document at a time (the runtime's default), so the process delta is that
  document's; a batch read jointly (recognize) is split among its documents by
  :func:`split`. The ingest path of the CLI and HTTP doors runs in their process; concurrent
  submissions of one HTTP door overlap, so each is charged the process CPU of its window.
* **wall**: ``time.perf_counter()`` across the same span.
* **bytes**: ``bytes_in`` the input record's value plus the objects read (original, crop packs);
  ``bytes_out`` the objects written (original, crop packs).

What is not charged to any document: a process's CPU between documents (idle polling,
heartbeats, metrics scrapes). ``bench/bench_e2e.py`` prints both against each other.

Prometheus (the store's ``/metrics``): ``ocrstream_tenant_pages_total`` and
``ocrstream_tenant_cpu_seconds_total`` by ``api_key`` and ``door``. Cardinality is bounded: the
first ``OCRSTREAM_COST_MAX_KEY_LABELS`` key names a process sees get their own label, later ones
count as ``other``; no key is ``none``; door is one of the four :data:`SourceKind` values.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, get_args

import msgspec
from prometheus_client import Counter

from ocrstream.contracts.event_models import UNSET, SourceKind, StageCost

TENANT_PAGES = Counter("ocrstream_tenant_pages_total", "Pages of stored documents by API key (tenant) and door",
                       ["api_key", "door"])
TENANT_CPU = Counter("ocrstream_tenant_cpu_seconds_total",
                     "CPU seconds every stage spent on stored documents, by API key (tenant) and door",
                     ["api_key", "door"])
#: Label of documents submitted without an API key, and of keys beyond the label bound.
NO_KEY: Final = "none"
OTHER: Final = "other"
DOORS: Final = frozenset(get_args(SourceKind))

E = TypeVar("E")


@dataclass
class Meter:
    """A stage's running measurement of one document (or one batch): started at construction.

    ``extra_cpu_s``: CPU seconds of other processes done for it (decoder workers);
    ``bytes_in``/``bytes_out``: bytes read/written so far.
    """

    stage: str
    bytes_in: int = 0
    bytes_out: int = 0
    extra_cpu_s: float = 0.0
    cpu0: float = field(default_factory=time.process_time)
    wall0: float = field(default_factory=time.perf_counter)

    def add_cpu(self, seconds: float) -> None:
        """Charge ``seconds`` of another process's CPU (>= 0) to this measurement."""
        self.extra_cpu_s += max(0.0, float(seconds))

    def read(self) -> StageCost:
        """The cost so far (CPU and wall since construction; s rounded to 0.1 ms)."""
        return StageCost(stage=self.stage, cpu_s=round(time.process_time() - self.cpu0 + self.extra_cpu_s, 4),
                         wall_s=round(time.perf_counter() - self.wall0, 4),
                         bytes_in=self.bytes_in, bytes_out=self.bytes_out)


_CURRENT: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("ocrstream_cost_meter", default=None)


@contextmanager
def metering(stage: str, bytes_in: int = 0) -> Iterator[Meter]:
    """A :class:`Meter` current for the block (``asyncio.to_thread`` carries it into threads)."""
    meter = Meter(stage, bytes_in=bytes_in)
    token = _CURRENT.set(meter)
    try:
        yield meter
    finally:
        _CURRENT.reset(token)


def current() -> Meter | None:
    """The meter of the document being handled, if any."""
    return _CURRENT.get()


def add_bytes(read: int = 0, written: int = 0) -> None:
    """Count bytes read/written for the current document (nothing without a meter)."""
    meter = _CURRENT.get()
    if meter is not None:
        meter.bytes_in += read
        meter.bytes_out += written


def add_cpu(seconds: float) -> None:
    """:meth:`Meter.add_cpu` on the current meter (nothing without one)."""
    meter = _CURRENT.get()
    if meter is not None:
        meter.add_cpu(seconds)


def with_cost(event: E, cost: StageCost) -> E:
    """``event`` with ``cost`` appended to its ``costs`` (unchanged when the event has no
    ``costs`` field, e.g. a dead letter, or already holds a cost of ``cost.stage``)."""
    if not hasattr(event, "costs"):
        return event
    before = list(event.costs or [])
    if any(c.stage == cost.stage for c in before):
        return event
    return msgspec.structs.replace(event, costs=[*before, cost])  # type: ignore[type-var]


def stamp(outputs: Sequence[Any], cost: StageCost) -> list[Any]:
    """Outputs (:class:`~ocrstream.streaming.stage.Output`) with ``cost`` added to each event
    (:func:`with_cost`)."""
    return [o if (event := with_cost(o.event, cost)) is o.event else dataclasses.replace(o, event=event)
            for o in outputs]


def split(cost: StageCost, weights: Sequence[float], bytes_in: Sequence[int]) -> list[StageCost]:
    """A batch's ``cost`` shared by its documents: CPU and wall seconds in proportion to
    ``weights`` (equal shares when they sum to 0), each document's own ``bytes_in``; ``bytes_out``
    in proportion too. Raises ValueError when the lengths differ."""
    if len(weights) != len(bytes_in):
        raise ValueError(f"{len(weights)} weights for {len(bytes_in)} documents")
    total = float(sum(weights))
    shares = [w / total for w in weights] if total > 0 else [1 / max(len(weights), 1)] * len(weights)
    return [StageCost(stage=cost.stage, cpu_s=round(cost.cpu_s * s, 4), wall_s=round(cost.wall_s * s, 4),
                      bytes_in=b, bytes_out=round(cost.bytes_out * s)) for s, b in zip(shares, bytes_in)]


def totals(costs: Any) -> dict[str, float]:
    """Sums of a ``costs`` list (models or JSON objects): ``cpu_s``, ``wall_s``, ``bytes_in``, ``bytes_out``."""
    out = {"cpu_s": 0.0, "wall_s": 0.0, "bytes_in": 0, "bytes_out": 0}
    for c in [] if costs is UNSET or costs is None else costs:
        for k in out:
            out[k] += (c.get(k) if isinstance(c, dict) else getattr(c, k, 0)) or 0
    out["cpu_s"], out["wall_s"] = round(out["cpu_s"], 4), round(out["wall_s"], 4)
    return out


class TenantLabels:
    """Bounded ``api_key`` label values: the first ``limit`` names seen keep theirs, later ones are ``other``."""

    def __init__(self, limit: int):
        self.limit, self.seen = limit, set[str]()

    def __call__(self, name: str | None) -> str:
        if not name:
            return NO_KEY
        if name in self.seen:
            return name
        if len(self.seen) < self.limit:
            self.seen.add(name)
            return name
        return OTHER


def count_tenant(labels: TenantLabels, api_key: str | None, door: str | None, pages: int, cpu_s: float) -> None:
    """Count a stored document's ``pages`` and ``cpu_s`` under its (bounded) key and door labels."""
    door_label = door if door in DOORS else "unknown"
    key = labels(api_key)
    TENANT_PAGES.labels(key, door_label).inc(max(0, pages))
    TENANT_CPU.labels(key, door_label).inc(max(0.0, cpu_s))


__all__ = ["NO_KEY", "OTHER", "TENANT_CPU", "TENANT_PAGES", "Meter", "TenantLabels", "add_bytes", "add_cpu",
           "count_tenant", "current", "metering", "split", "stamp", "totals", "with_cost"]
