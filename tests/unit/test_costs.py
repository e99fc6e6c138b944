"""Document costs without a stack: the meter, the batch split, the label bound, ``usage``'s parsing."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import click
import pytest

from ocrstream.cli.usage import parse_since, render_table
from ocrstream.contracts import events
from ocrstream.contracts.event_models import DocumentRef, IngestedEvent, StageCost, Timestamps
from ocrstream.streaming import costs
from ocrstream.streaming.stage import Output

pytestmark = pytest.mark.unit


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_meter_counts_cpu_of_worker_threads_and_other_processes():
    async def work() -> StageCost:
        with costs.metering("preprocess", bytes_in=10) as meter:
            await asyncio.to_thread(_spin, 0.05)  # a worker thread: process CPU
            await asyncio.to_thread(costs.add_bytes, 5, 7)  # the meter travels into threads
            costs.add_cpu(0.5)  # a decoder worker's reported seconds
            costs.add_cpu(-1)  # never negative
            return meter.read()

    cost = asyncio.run(work())
    assert 0.55 <= cost.cpu_s < 0.75 and cost.wall_s >= 0.04
    assert (cost.bytes_in, cost.bytes_out) == (15, 7)
    costs.add_bytes(1, 1)  # no meter: nothing happens
    assert costs.current() is None


def test_each_stage_adds_its_cost_once_and_events_without_costs_are_unchanged():
    event = IngestedEvent(document_id="d", document=DocumentRef(object_key="k", content_sha256="0" * 64,
                                                                size_bytes=1, source="cli"),
                          timestamps=Timestamps(ingested=events.now_iso()))
    ingest = StageCost(stage="ingest", cpu_s=0.01, wall_s=0.02, bytes_in=1, bytes_out=1)
    (out,) = costs.stamp([Output(events.INGESTED, "d", event)], ingest)
    assert out.event.costs == [ingest]
    again = costs.stamp([out], StageCost(stage="ingest", cpu_s=9, wall_s=9, bytes_in=0, bytes_out=0))
    assert again[0] is out  # already has the stage's cost: the handler's own (the store) wins
    assert costs.with_cost("not an event", ingest) == "not an event"
    assert b'"costs":[{"stage":"ingest","cpu_s":0.01' in out.payload  # valid against the contract


def test_a_batch_is_split_by_weight_and_keeps_each_documents_bytes():
    batch = StageCost(stage="recognize", cpu_s=1.0, wall_s=2.0, bytes_in=0, bytes_out=10)
    a, b = costs.split(batch, [3.0, 1.0], [100, 200])
    assert (a.cpu_s, b.cpu_s, a.wall_s, b.wall_s) == (0.75, 0.25, 1.5, 0.5)
    assert (a.bytes_in, b.bytes_in) == (100, 200)
    assert [c.cpu_s for c in costs.split(batch, [0, 0], [1, 1])] == [0.5, 0.5]
    with pytest.raises(ValueError):
        costs.split(batch, [1.0], [1, 2])
    assert costs.totals([a, {"cpu_s": 0.25, "wall_s": 0.5}])["cpu_s"] == 1.0  # models or JSON objects


def test_tenant_labels_are_bounded():
    labels = costs.TenantLabels(2)
    assert [labels(n) for n in ("a", "b", "c", "a", None, "")] == ["a", "b", costs.OTHER, "a", costs.NO_KEY,
                                                                  costs.NO_KEY]
    costs.count_tenant(labels, "zzz", "carrier-pigeon", 2, 0.5)  # an unknown door is one label, not many
    assert costs.TENANT_PAGES.labels(costs.OTHER, "unknown")._value.get() >= 2


def test_usage_since_and_table():
    now = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
    assert parse_since("90m", now) == now - timedelta(minutes=90)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("2026-12-01T00:00:00", now) == datetime(2026, 12, 1, tzinfo=timezone.utc)
    with pytest.raises(click.BadParameter):
        parse_since("yesterday", now)
    table = render_table([{"name": "tenant-a", "documents": 2, "pages": 4, "cpu_s": 2.0, "wall_s": 3.0,
                           "bytes_in": 2**20, "bytes_out": 0}], "key")
    assert "| tenant-a | 2 | 4 | 2.00 | 0.500 | 3.00 | 1.00 | 0.00 |" in table
    assert table.splitlines()[-1].startswith("| total | 2 | 4 |")
