"""bench/bench_e2e.py stops what it started when it is terminated: SIGTERM becomes SystemExit, so its
``finally`` blocks (stage processes, embedded stack) run, as they do on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench"

CHILD = """
import signal, sys
sys.path.insert(0, sys.argv[1])
import bench_e2e
if sys.argv[2] == "on":
    bench_e2e.stop_cleanly_on_sigterm()
print("ready", flush=True)
try:
    signal.pause()
finally:
    print("cleaned up", flush=True)
"""


@pytest.mark.parametrize("handler", ["on", "off"])
def test_sigterm_runs_the_finally_blocks_only_with_the_handler(handler):
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(BENCH), handler], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()
    if handler == "on":
        assert child.returncode == 128 + signal.SIGTERM and "cleaned up" in out
    else:  # Python's default: killed by the signal, no clean-up (what left stage processes behind)
        assert child.returncode == -signal.SIGTERM and "cleaned up" not in out
