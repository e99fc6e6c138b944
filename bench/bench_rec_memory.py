"""The recogniser's memory over ever-new batch shapes, and its CPU per line, per session policy.

Issue 24's soak: recognize's PSS rose +27 % after the warm-up, in steps as larger recogniser
batches (8-page PDFs) first arrived, then flattened (ONNX Runtime's CPU arena keeps its
high-water mark). This bench replays a stage-like stream of recogniser calls in one process per
policy (a fresh process each, the same calls in the same order) and prints PSS/USS after the
warm-up and at the end, and CPU-ms per line over the measured calls.

The calls: real line crops (``../shared/data/sroie-dev/lines.jsonl``; the bench exits with a
message without them), drawn with a fixed seed. Most calls hold one receipt's lines (8-60
crops); one in ``--big-every`` holds an 8-page PDF's (200-320 crops, some of them two lines
joined end to end: up to 40+ heights wide, so also the long-line split). The first
``--warmup`` calls hold no big one: like the soak, the largest batches first come after it.

Policies (``--policies``, comma-separated; see ``POLICIES``):

* ``before``: the recogniser as it was (no bound on a call's columns, no warm-up at load, ONNX
  Runtime's memory patterns on);
* ``cap``: a call's crops x padded width bounded by ``max_batch_columns`` (4096), no warm-up;
* ``warm-pattern``: the bound and :meth:`PPOCRRecognizer.warm_up` after loading, memory patterns on;
  ``warm-8192``: the same with twice the columns;
* ``warm``: the bound, the warm-up and memory patterns off (``enable_mem_pattern``): the default now;
* ``noarena``: ONNX Runtime's CPU arena off (``enable_cpu_mem_arena``: glibc malloc per tensor);
* ``warm-same``: as ``warm-pattern``, the arena extended by what is asked (kSameAsRequested, a
  shared environment allocator), not to the next power of two;
* ``warm-arenas2``: as ``warm-pattern``, glibc's malloc arenas capped at 2 (``MALLOC_ARENA_MAX``);
* ``warm-mmap``: as ``warm``, glibc's mmap threshold fixed at 128 KiB (``MALLOC_MMAP_THRESHOLD_``: blocks
  that large always mapped and unmapped, never left in a thread's heap; its dynamic raise disabled);
* ``warm-mmap1m``, ``warm-mmap4m``: the same at 1 and 4 MiB (``OCRSTREAM_HEAP_MMAP_THRESHOLD_BYTES``);
  ``warm-mmap1m-top8m``: 1 MiB, and glibc's trim threshold at 8 MiB (a heap keeps that much free at its top);
* ``warm-trim``: as ``warm``, glibc's ``malloc_trim(0)`` after every call (the free pages inside every
  arena's heaps returned to the system).

    OMP_WAIT_POLICY=PASSIVE nice .venv/bin/python bench/bench_rec_memory.py [--calls 240] [--rounds 2]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "sroie-dev"
MIB = 2**20
UNCAPPED = {"max_batch_columns": 10**9}
PATTERN = {"enable_mem_pattern": True}  # ONNX Runtime's default, the recogniser's before issue 24
#: policy -> (warm-up at load, PPOCRRecognizer options, ONNX Runtime session overrides)
POLICIES: dict[str, tuple[bool, dict, dict]] = {
    "before": (False, UNCAPPED, PATTERN),
    "cap": (False, {}, PATTERN),
    "warm-pattern": (True, {}, PATTERN),
    "warm-8192": (True, {"max_batch_columns": 8192}, PATTERN),
    "warm": (True, {}, {}),
    "noarena": (False, UNCAPPED, {**PATTERN, "enable_cpu_mem_arena": False}),
    "warm-same": (True, {}, {**PATTERN, "arena_extend_strategy": "kSameAsRequested"}),
    "warm-arenas2": (True, {}, PATTERN),  # and MALLOC_ARENA_MAX=2 in the process's environment (ENV)
    "warm-mmap": (True, {}, {}),  # and glibc's mmap threshold fixed at 128 KiB (ENV)
    "warm-mmap1m": (True, {}, {}),  # and glibc's mmap threshold fixed at 1 MiB (ENV)
    "warm-mmap4m": (True, {}, {}),  # and glibc's mmap threshold fixed at 4 MiB (ENV)
    "warm-mmap1m-top8m": (True, {}, {}),  # 1 MiB, and up to 8 MiB kept free at a heap's top (ENV)
    "warm-trim": (True, {}, {}),  # and glibc's malloc_trim(0) after every call (TRIM)
}
#: policies that return the free pages of glibc's heaps after every recogniser call
TRIM = {"warm-trim"}
#: policy -> environment variables of its process
ENV = {"warm-arenas2": {"MALLOC_ARENA_MAX": "2"}, "warm-mmap": {"MALLOC_MMAP_THRESHOLD_": "131072"},
       "warm-mmap1m": {"MALLOC_MMAP_THRESHOLD_": "1048576"}, "warm-mmap4m": {"MALLOC_MMAP_THRESHOLD_": "4194304"},
       "warm-mmap1m-top8m": {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "8388608"}}


def _calls(n: int, warmup: int, big_every: int, seed: int) -> list[list[int]]:
    """``n`` calls as lists of line indices (negative = two lines joined: ``-(i * 10000 + j) - 1``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    records = [line for line in (DATA / "lines.jsonl").read_text().splitlines() if line.strip()]
    out = []
    for k in range(n):
        big = k >= warmup and (k - warmup) % big_every == big_every // 2
        size = int(rng.integers(200, 321)) if big else int(rng.integers(8, 61))
        idx = rng.integers(0, len(records), size)
        call = [int(i) for i in idx]
        if big:  # a tenth of a PDF's lines: two lines joined end to end (long table rows)
            for m in range(0, size, 10):
                call[m] = -(int(idx[m]) * 10000 + int(rng.integers(0, len(records)))) - 1
        out.append(call)
    return out


def _memory() -> tuple[float, float]:
    import psutil

    info = psutil.Process().memory_full_info()
    return info.pss / MIB, info.uss / MIB


def _override_sessions(onnx_session, overrides: dict) -> None:
    """Make every later ONNX Runtime session of this process with ``overrides`` (bench only)."""
    import onnxruntime as ort

    made = onnx_session._session_options
    overrides = dict(overrides)
    strategy = overrides.pop("arena_extend_strategy", None)
    if strategy is not None:  # a shared environment allocator is the only way to set it on the CPU
        ort.create_and_register_allocator(
            ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT),
            ort.OrtArenaCfg({"arena_extend_strategy": 1 if strategy == "kSameAsRequested" else 0}))

    def options(threads, mem_pattern=True):
        opts = made(threads, mem_pattern)
        for key, value in overrides.items():
            setattr(opts, key, value)
        if strategy is not None:
            opts.add_session_config_entry("session.use_env_allocators", "1")
        return opts

    onnx_session._session_options = options


def child(policy: str, calls: int, warmup: int, big_every: int, seed: int) -> dict:
    """Run one policy in this process; the figures as a dict."""
    import cv2
    import numpy as np

    from ocrstream.ocr.recognition.ppocr import PPOCRRecognizer
    from ocrstream.ocr.runtime import onnx_session

    warm, options, session = POLICIES[policy]
    if session:
        _override_sessions(onnx_session, session)
    records = [json.loads(line) for line in (DATA / "lines.jsonl").read_text().splitlines() if line.strip()]
    images = [cv2.imread(str(DATA / r["image"]), cv2.IMREAD_COLOR) for r in records]

    def crop(i: int) -> np.ndarray:
        if i >= 0:
            return images[i]
        a, b = divmod(-i - 1, 10000)
        h = images[a].shape[0]
        other = cv2.resize(images[b], (max(1, round(images[b].shape[1] * h / images[b].shape[0])), h))
        return np.hstack([images[a], other])

    plan = _calls(calls, warmup, big_every, seed)
    rec = PPOCRRecognizer(device="cpu", threads=1, **options)
    loaded = _memory()
    t0 = time.process_time()
    if warm:
        rec.warm_up()
    warm_cpu = time.process_time() - t0
    for call in plan[:warmup]:
        rec.recognize([crop(i) for i in call])
        if policy in TRIM:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
    after_warmup = _memory()
    lines, cpu, peak = 0, 0.0, after_warmup
    texts = []
    for call in plan[warmup:]:
        crops = [crop(i) for i in call]
        t = time.process_time()
        readings = rec.recognize(crops)
        if policy in TRIM:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        cpu += time.process_time() - t
        lines += len(crops)
        texts.extend(r.text for r in readings)
        now = _memory()
        peak = (max(peak[0], now[0]), max(peak[1], now[1]))
    end = _memory()
    return {"policy": policy, "loaded": loaded, "warm": after_warmup, "end": end, "peak": peak,
            "cpu_ms_per_line": 1000 * cpu / max(lines, 1), "warm_up_cpu_s": warm_cpu, "lines": lines,
            "texts_hash": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument("--calls", type=int, default=240, help="recogniser calls per policy")
    parser.add_argument("--warmup", type=int, default=40, help="calls before the first memory reading")
    parser.add_argument("--big-every", type=int, default=12, help="one PDF-sized call in this many after warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="each policy this many times, interleaved")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not (DATA / "lines.jsonl").is_file():
        print(f"skipped: {DATA} is absent (see ../shared/README.md)")
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.calls, args.warmup, args.big_every, args.seed)))
        return 0
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OCRSTREAM_INFERENCE": "auto"}
    rows: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for policy in args.policies.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", policy, "--calls", str(args.calls),
                                  "--warmup", str(args.warmup), "--big-every", str(args.big_every),
                                  "--seed", str(args.seed)], env={**env, **ENV.get(policy, {})},
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.setdefault(policy, []).append(row)
            print(f"round {r + 1} {policy}: PSS warm {row['warm'][0]:.0f} end {row['end'][0]:.0f} "
                  f"({100 * (row['end'][0] / row['warm'][0] - 1):+.1f} %), "
                  f"{row['cpu_ms_per_line']:.2f} CPU-ms/line", flush=True)
    print(f"\n{args.calls} calls ({args.warmup} warm-up, then one PDF-sized call in {args.big_every}), "
          f"{args.rounds} round(s) interleaved; medians of PSS/USS in MiB")
    print("| policy | PSS loaded | PSS after warm-up | PSS end | PSS growth | USS growth | PSS peak "
          "| CPU-ms/line | warm-up CPU-s | readings as the first |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    import statistics as st

    base = next(iter(rows.values()))[0]["texts_hash"]  # readings compared with the first policy's
    for policy, runs in rows.items():
        def med(key: str, i: int) -> float:
            return st.median(run[key][i] for run in runs)
        growth = st.median(100 * (run["end"][0] / run["warm"][0] - 1) for run in runs)
        uss = st.median(100 * (run["end"][1] / run["warm"][1] - 1) for run in runs)
        same = "same" if all(run["texts_hash"] == base for run in runs) else "DIFFER"
        print(f"| {policy} | {med('loaded', 0):.0f} | {med('warm', 0):.0f} | {med('end', 0):.0f} | {growth:+.1f} % "
              f"| {uss:+.1f} % | {med('peak', 0):.0f} | {st.median(r['cpu_ms_per_line'] for r in runs):.2f} "
              f"| {st.median(r['warm_up_cpu_s'] for r in runs):.1f} | {same} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
