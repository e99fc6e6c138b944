"""ocrstream.ocr.runtime.heap: freed heap below a heap's top is given back only by trim().

Each case runs in a fresh interpreter so pytest's own heap does not blur the figures: a thread
allocates 64 MiB in 32 KiB blocks (below glibc's mmap threshold, so in its arena's heap), touches
them, frees all but the last (which pins the heap's top, as a live array does in a stage), then
the resident size is read before and after the optional trim.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent("""
    import ctypes, json, sys, threading
    import psutil
    from ocrstream.ocr.runtime import heap

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def fragment():
        blocks = [libc.malloc(32 * 1024) for _ in range(2048)]
        for b in blocks:
            ctypes.memset(b, 1, 32 * 1024)
        for b in blocks[:-1]:
            libc.free(b)

    worker = threading.Thread(target=fragment)
    worker.start()
    worker.join()
    before = psutil.Process().memory_info().rss
    released = heap.trim() if sys.argv[1] == "trim" else None
    after = psutil.Process().memory_info().rss
    print(json.dumps({"freed_mib": (before - after) / 2**20, "released": released}))
""")


def _freed_mib(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], check=True, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_trim_gives_back_what_a_thread_freed_below_its_heaps_top():
    kept = _freed_mib("none")
    trimmed = _freed_mib("trim")
    assert kept["freed_mib"] < 8, f"without trim glibc keeps the freed blocks resident: {kept}"
    assert trimmed["released"] is True
    assert trimmed["freed_mib"] > 48, f"trim must give back most of the 64 MiB freed: {trimmed}"



_THRESHOLD_SCRIPT = textwrap.dedent("""
    import ctypes, json, sys, threading
    import psutil
    from ocrstream.ocr.runtime import heap

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    fixed = heap.fix_mmap_threshold(1 << 20) if sys.argv[1] == "fixed" else None
    MIB = 1 << 20

    def work():
        big = libc.malloc(20 * MIB)  # mapped; freeing it raises glibc's dynamic threshold to 20 MiB
        ctypes.memset(big, 1, 20 * MIB)
        libc.free(big)
        blocks = [libc.malloc(2 * MIB) for _ in range(8)]  # then from the thread's heap, unless fixed
        for b in blocks:
            ctypes.memset(b, 1, 2 * MIB)
        for b in blocks:
            libc.free(b)

    before = psutil.Process().memory_info().rss
    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    heap.trim()  # does not trim the top of a thread's heap, where the freed blocks are
    print(json.dumps({"kept_mib": (psutil.Process().memory_info().rss - before) / MIB, "fixed": fixed}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_fixed_mmap_threshold_returns_a_threads_large_buffers():
    dynamic = json.loads(subprocess.run([sys.executable, "-c", _THRESHOLD_SCRIPT, "dynamic"], check=True,
                                        capture_output=True, text=True, timeout=60).stdout)
    fixed = json.loads(subprocess.run([sys.executable, "-c", _THRESHOLD_SCRIPT, "fixed"], check=True,
                                      capture_output=True, text=True, timeout=60).stdout)
    assert dynamic["kept_mib"] > 12, f"glibc's raised threshold keeps 16 MiB freed at a thread heap's top: {dynamic}"
    assert fixed["fixed"] is True and fixed["kept_mib"] < 4, f"mapped, so returned when freed: {fixed}"


class _Failing:
    def recognize(self, crops):
        raise RuntimeError("model failed")


class _Echo:
    def recognize(self, crops):
        return [len(crops)]


@pytest.mark.parametrize("enabled", [True, False])
def test_recognize_trims_after_every_batch_even_a_failed_one(enabled, monkeypatch):
    from ocrstream.settings import Settings
    from services.recognize import stage as recognize

    calls: list[int] = []
    monkeypatch.setattr(recognize.heap, "trim", lambda: calls.append(1) or True)
    stage = recognize.RecognizeStage(Settings(heap_trim=enabled))
    assert stage._recognize(_Echo(), [object(), object()]) == [2]
    with pytest.raises(RuntimeError):
        stage._recognize(_Failing(), [object()])
    assert len(calls) == (2 if enabled else 0)


@pytest.mark.parametrize("threshold", [1 << 20, 0])
def test_every_stage_process_fixes_the_mmap_threshold_before_it_runs(threshold, monkeypatch):
    """``run_stage`` fixes glibc's mmap threshold (``OCRSTREAM_HEAP_MMAP_THRESHOLD_BYTES``) before
    the stage's threads start, in every stage; 0 leaves glibc's dynamic default alone."""
    from ocrstream.settings import Settings
    from ocrstream.streaming import stage as runtime

    order: list[str] = []

    class _Runner:
        def __init__(self, stage, settings):
            pass

        async def run(self, stop):
            order.append("run")

    class _Stage(runtime.Stage):
        name = "ingest"
        input_topics = ("t",)

        async def handle(self, record):
            return []

    monkeypatch.setattr(runtime, "StageRunner", _Runner)
    monkeypatch.setattr(runtime.health, "serve", lambda *args: order.append("serve"))
    monkeypatch.setattr(runtime, "stop_on_signals", lambda *args: None)  # keep pytest's own handlers
    monkeypatch.setattr(runtime.heap, "fix_mmap_threshold", lambda size: order.append(f"mmap {size}") or True)
    runtime.run_stage(_Stage(Settings(heap_mmap_threshold_bytes=threshold, metrics_port=0)))
    assert order == ([f"mmap {threshold}"] if threshold else []) + ["serve", "run"]
