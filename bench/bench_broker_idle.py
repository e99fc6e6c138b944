"""Issue 13: what the embedded stack burns with no work, broker log on S3 vs in memory.

    .venv/bin/python bench/bench_broker_idle.py [--idle-s 20] [--storage s3 memory] [--fetch-wait-ms 100 500]

For each ``--storage`` (``EmbeddedStack(kafka_storage=...)``; ``s3``, the default of the stack,
keeps tansu's log in its own SeaweedFS process ``kafka-s3``; ``memory`` keeps it in the broker's
memory, lost when it stops): a fresh embedded stack, then

1. ``stack only``: ``--idle-s`` seconds with nothing connected;
2. ``stages attached``: the four stage processes started with their defaults (consumer groups
   joined), one rendered receipt through them (models loaded, topics created, groups settled),
   a 5 s pause, then ``--idle-s`` seconds with no work; once per ``--fetch-wait-ms`` value
   (``OCRSTREAM_KAFKA_FETCH_MAX_WAIT_MS`` of the stages, restarted for each; default: the
   setting's default only).

Prints CPU-s per second (user + system of the process and its descendants, ``psutil``) of the
broker (tansu), the broker's log S3 (``kafka-s3``, s3 storage only), the users' S3, PostgreSQL
and the four stages together. Needs no data beside the repo. The stack is always stopped.

Measured 2026-11-23, shared 2-core host, ``--idle-s 20`` (README "Performance"): see there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.chdir(REPO)  # stage processes run `python -m ocrstream.cli` from the current directory

from ocrstream.client.client import Client  # noqa: E402
from ocrstream.devstack import EmbeddedStack  # noqa: E402
from ocrstream.ops.launcher import STAGES, StageProcesses, free_port  # noqa: E402
from ocrstream.settings import Settings  # noqa: E402
from tools.render_samples import RECEIPT, encode, render_page  # noqa: E402

COLUMNS = ("kafka", "kafka-s3", "s3", "postgres", "stages")


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (reaped children included);
    0 for a process that is gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def idle_rates(pids: dict[str, list[int]], seconds: float) -> dict[str, float]:
    """CPU-s per second of each named set of process trees over ``seconds`` of wall time."""
    before, t0 = {k: sum(map(tree_cpu_s, v)) for k, v in pids.items()}, time.monotonic()
    time.sleep(seconds)
    after, span = {k: sum(map(tree_cpu_s, v)) for k, v in pids.items()}, time.monotonic() - t0
    return {k: (after[k] - before[k]) / span for k in pids}


async def one_receipt(settings: Settings, tag: str) -> None:
    """A rendered receipt (``tag`` printed on it: new bytes, not answered by ingest's dedup)
    through the stages, waited for (models loaded, groups settled)."""
    async with Client(settings) as client:
        receipt = await client.submit(encode(render_page([*RECEIPT, f"REF {tag}"], size=24)), "idle-warm.png")
        _, missing = await client.wait([receipt], timeout_s=600)
        if missing:
            raise RuntimeError("the warm-up receipt did not come through the stages")


def measure(storage: str, idle_s: float, tmp: Path, fetch_waits: list[int | None]) -> list[tuple[str, dict[str, float]]]:
    """The idle phases on a fresh stack with the broker's log in ``storage``: stack only, then
    the stages attached with each fetch wait (None: the setting's default)."""
    rows = []
    with EmbeddedStack(tmp / storage, kafka_storage=storage, log=lambda m: None) as stack:
        env = {**os.environ, **stack.start().as_env(), "OMP_WAIT_POLICY": "PASSIVE",
               "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": "0",
               "OCRSTREAM_METRICS_PORT": "0", "OCRSTREAM_ENV_FILE": str(tmp / "none.env")}
        pids: dict[str, list[int]] = {name: [] for name in COLUMNS}
        for service in stack._services:
            pids.setdefault(service.name, []).append(service.pid)
        print(f"{storage}: stack only, idle {idle_s:g} s ...", file=sys.stderr, flush=True)
        rows.append(("stack only", idle_rates(pids, idle_s)))
        for wait_ms in fetch_waits:
            stage_env = env if wait_ms is None else {**env, "OCRSTREAM_KAFKA_FETCH_MAX_WAIT_MS": str(wait_ms)}
            settings = Settings.from_env(stage_env)
            label = f"stages attached, fetch wait {settings.kafka_fetch_max_wait_ms} ms"
            with StageProcesses(stage_env, tmp / storage / "stage-logs", stages=STAGES) as stages:
                print(f"{storage}: stages started, one receipt through them ...", file=sys.stderr, flush=True)
                asyncio.run(one_receipt(settings, f"{storage}-{wait_ms}"))
                time.sleep(5)
                pids["stages"] = [p.pid for p in stages.procs.values()]
                print(f"{storage}: {label}, idle {idle_s:g} s ...", file=sys.stderr, flush=True)
                rows.append((label, idle_rates(pids, idle_s)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle-s", type=float, default=20.0, help="seconds of idle measured per phase")
    parser.add_argument("--storage", nargs="+", default=["s3", "memory"], choices=["s3", "memory"])
    parser.add_argument("--fetch-wait-ms", type=int, nargs="+", default=[None],
                        help="OCRSTREAM_KAFKA_FETCH_MAX_WAIT_MS values of the stages (default: the setting's)")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="ocrs-idle-") as tmp:
        for storage in args.storage:
            results += [(storage, phase, rates) for phase, rates in measure(storage, args.idle_s, Path(tmp), args.fetch_wait_ms)]
    load = os.getloadavg()
    print(f"\nidle CPU-s per second, {args.idle_s:g} s per phase; {os.cpu_count()} CPUs, load average {load[0]:.1f}")
    print("| broker log | phase | tansu | kafka-s3 (broker's log S3) | S3 | PostgreSQL | 4 stages | "
          "broker + its log S3 | total |")
    print("|---|---|---|---|---|---|---|---|---|")
    for storage, phase, r in results:
        print(f"| {storage} | {phase} | " + " | ".join(f"{r.get(k, 0.0):.3f}" for k in COLUMNS)
              + f" | {r.get('kafka', 0.0) + r.get('kafka-s3', 0.0):.3f} | {sum(r.values()):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
