"""bench/bench_first_minute.py --trace: a document's spans become the steps of where its time went."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench"
MS = 1_000_000  # ns


@pytest.fixture(scope="module")
def bench() -> Any:
    cwd = os.getcwd()
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module("bench_first_minute")
    finally:
        os.chdir(cwd)  # the module moves to the repository for its stage processes


def span(trace: str, name: str, start_ms: float, end_ms: float, doc: str | None = None) -> dict[str, Any]:
    return {"trace_id": trace, "name": name, "start": int(start_ms * MS), "end": int(end_ms * MS),
            "attributes": {"ocrstream.document_id": doc} if doc else {}}


def document(trace: str, doc: str, pages: int = 1) -> list[dict[str, Any]]:
    """A receipt's spans (ms): the door 0-20, preprocess from 50 (its pages 165 ms each from 60, then 75 ms
    more), a 30 ms hop, recognize (its model call 5 ms in, 25 ms before its end), a 10 ms hop, store 40."""
    spans = [span(trace, "ingest submit", 0, 20)]
    t = 60.0
    for _ in range(pages):
        spans += [span(trace, "decode", t, t + 10), span(trace, "cleanup", t + 10, t + 60),
                  span(trace, "detection", t + 60, t + 160), span(trace, "crop", t + 160, t + 165)]
        t += 165
    pre_end = t + 75
    spans += [span(trace, "preprocess", 50, pre_end, doc), span(trace, "recognize", pre_end + 30, pre_end + 300),
              span(trace, "recognition", pre_end + 35, pre_end + 275), span(trace, "store", pre_end + 310, pre_end + 350)]
    return spans


def test_a_documents_spans_become_its_steps(bench):
    steps = bench.trace_steps(document("t1", "doc-1"))
    assert list(steps) == ["doc-1"]
    got = steps["doc-1"]
    assert got == pytest.approx({
        "door: upload, produce": 20, "hop to preprocess": 30, "preprocess: download, hand-off": 10,
        "decode": 10, "clean-up": 50, "detection": 100, "crop": 5,
        "preprocess: pack, upload, produce, commit": 75, "hop to recognize": 30,
        "recognize: download, unpack": 5, "recognition": 240, "recognize: produce, commit": 25,
        "hop to store": 10, "store: post-process, PostgreSQL, produce, commit": 40})
    assert sum(got.values()) == pytest.approx(650)  # the steps tile the trace from the door to the store


def test_per_page_spans_add_up_and_incomplete_traces_are_left_out(bench):
    spans = document("t2", "doc-2", pages=2) + [s for s in document("t3", "warm-up") if s["name"] != "store"]
    steps = bench.trace_steps(spans)
    assert list(steps) == ["doc-2"]  # the trace without a store span is not a finished document
    assert steps["doc-2"]["detection"] == pytest.approx(200)
    assert steps["doc-2"]["preprocess: download, hand-off"] == pytest.approx(10)  # to the first page's decode
    assert steps["doc-2"]["preprocess: pack, upload, produce, commit"] == pytest.approx(75)  # from the last crop


def test_the_table_has_a_column_per_door_with_its_medians(bench):
    spans = document("a", "d1") + document("b", "d2") + document("c", "d3")
    next(s for s in spans if s["name"] == "preprocess")["end"] += 100 * MS  # d1's preprocess ends later: the medians stay
    lines = bench.trace_table(bench.trace_steps(spans), {"http": ["d1", "d2", "d3"], "cli": ["missing"]})
    assert lines[0] == "| step (median ms) | http |"
    assert "| detection | 100 |" in lines
    assert lines[-1] == "| **sum of the steps** | **650** |"
