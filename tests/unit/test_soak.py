"""bench/soak.py's parts without a stack (a run takes minutes: the issue-24 report has one): the
document mix, the per-process sampling of PSS and fds, and the growth table's arithmetic."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak  # noqa: E402

from ocrstream.settings import Settings  # noqa: E402


def test_the_mix_interleaves_pdfs_receipts_and_hostile_cases_with_unique_names():
    args = argparse.Namespace(docs=80, seed=1, pdf_every=20, pdf_pages=3, hostile_every=8, receipt_every=5)
    docs = soak.mix(args, Settings())
    names = [d.name for d in docs]
    assert len(docs) == 80 and len(set(names)) == 80
    assert [i for i, n in enumerate(names) if re.fullmatch(r"soak\d{5}\.pdf", n)] == [19, 39, 59, 79]
    hostile = [d for i, d in enumerate(docs) if i % 8 == 7 and i % 20 != 19]
    assert len(hostile) == 8 and any(d.expected.status == "failed" for d in hostile)
    assert all(d.data for d in docs)


def test_tree_usage_sums_a_process_and_its_children():
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pss, uss, fds, own = soak.tree_usage(os.getpid())
        assert pss > 10 and 0 < uss <= pss and fds >= 3
        assert 0 < own < pss  # the child's PSS is in the sum, not in the process's own
    finally:
        child.kill()
        child.wait()
    assert soak.tree_usage(2**22 + 12345) is None  # no such process


def test_growth_is_measured_from_the_first_sample_after_the_warm_up():
    samples = [soak.Sample(t, 0, final, {"a": pss}, {"a": 10}, {"a": pss - 20}) for t, final, pss in
               [(0, 0, 50.0), (10, 100, 100.0), (20, 200, 104.0), (30, 300, 110.0)]]
    table, rows = soak.growth_table(samples, warmup=100, names=["a"])
    assert rows["a"]["pss_base"] == 100.0 and round(rows["a"]["growth_end_pct"], 1) == 10.0
    assert round(rows["a"]["uss_growth_pct"], 1) == 12.5 and "80 -> 90 | +12.5" in table
    assert round(rows["a"]["slope_mib_per_1000"]) == 50 and "(over goal)" in table
    assert "the stage process alone" not in table  # own PSS unknown here: no line


def test_a_process_with_children_also_gets_a_line_for_itself_alone():
    samples = [soak.Sample(t, 0, final, {"p": pss}, {"p": 3}, {"p": pss}, {"p": own}) for t, final, pss, own in
               [(0, 100, 400.0, 100.0), (10, 200, 800.0, 101.0), (20, 300, 300.0, 102.0)]]
    lines = soak.own_rows(samples, ["p"])
    assert lines == ["p, the stage process alone (children excluded): 100 -> 102 MiB, max 102, "
                     "windowed growth +2.0 %"]


def test_windowed_growth_compares_the_medians_of_both_ends():
    swinging = [400.0, 170.0, 820.0, 410.0, 300.0, 390.0, 800.0, 180.0, 420.0, 405.0]  # a level, sampled badly
    assert soak.windowed_growth(swinging, window=0.3) == 100 * (405 - 400) / 400
    assert soak.windowed_growth([100.0, 100.0, 110.0, 120.0], window=0.25) == 20.0  # one sample each end


def test_trend_growth_reads_the_line_through_every_sample_not_two_of_them():
    level = [(1000 + 100 * i, 400.0 + (300.0 if i % 2 else -200.0)) for i in range(40)]  # a level, swinging
    assert abs(soak.trend_growth(level)) < 10  # single samples at its ends: 200 -> 700 MiB, +250 %
    rising = [(1000 + 100 * i, 100.0 + 0.5 * i) for i in range(21)]  # +10 MiB over 2,000 documents
    assert round(soak.trend_growth(rising), 6) == 10.0
    assert soak.trend_growth([(5, 1.0), (5, 2.0)]) is None


def test_a_runs_csv_reads_back_into_the_same_table():
    samples = [soak.Sample(t, 0, final, {"p": pss, "q": 50.0}, {"p": 3, "q": 4}, {"p": pss - 9, "q": 40.0},
                           {"p": own, "q": 50.0}) for t, final, pss, own in
               [(0.0, 100, 400.0, 100.0), (10.0, 200, 800.0, 101.0), (20.0, 300, 300.0, 102.0)]]
    again, names = soak.read_samples_csv(soak.samples_csv(samples, ["p", "q"]))
    assert names == ["p", "q"] and again == samples
    assert soak.growth_table(again, 100, names) == soak.growth_table(samples, 100, names)
