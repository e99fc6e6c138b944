"""The cost of a durable broker: documents per second and CPU per page with the embedded broker's
log in memory vs on the embedded S3 (``EmbeddedStack(kafka_storage="memory"|"s3")``).

    .venv/bin/python bench/bench_durability.py [--documents 60] [--repeat 1]

For each storage: a fresh embedded stack and the four stage processes (one ONNX thread each, as
in the tests); one warm-up document through the pipeline (models loaded, topics created); then
the same ``--documents`` distinct rendered one-page documents (tools/loadgen.py) submitted
through the CLI, HTTP and raw-topic doors at once, and the time until every one has its
published row (ocrstream/ops/audit.py). CPU is read from /proc (user + system, children included)
for the stage processes and for the stack's processes (broker, S3, PostgreSQL) over that
window only. Prints a table. Needs no data beside the repo.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ocrstream.devstack import EmbeddedStack  # noqa: E402
from ocrstream.ops.audit import audit, wait_until_drained  # noqa: E402
from ocrstream.ops.launcher import StageProcesses, free_port  # noqa: E402
from ocrstream.settings import Settings  # noqa: E402
from tools.loadgen import LoadGenerator, make_documents  # noqa: E402
from tools.proc_groups import group_cpu_s  # noqa: E402

STAGE_ENV = {"OCRSTREAM_SESSION_TIMEOUT_MS": "6000", "OCRSTREAM_HEARTBEAT_INTERVAL_MS": "1000",
             "OCRSTREAM_METRICS_PORT": "0", "OCRSTREAM_QUERY_PORT": "0", "OMP_WAIT_POLICY": "PASSIVE",
             "OCRSTREAM_ORT_THREADS": "1"}


async def measure(settings: Settings, http_url: str, documents, stages: StageProcesses,
                  stack_pgids: list[int]) -> dict:
    gen = LoadGenerator(settings, http_url)
    warm = await gen.run(make_documents(1, seed=999, bad_every=0))
    await wait_until_drained(settings, [s.document_id for s in warm], timeout_s=600)
    stage_pgids = [p.pid for p in stages.procs.values()]
    cpu0 = group_cpu_s(stage_pgids), group_cpu_s(stack_pgids)
    t0 = time.monotonic()
    gen = LoadGenerator(settings, http_url)
    subs = await gen.run(documents)
    await wait_until_drained(settings, [s.document_id for s in subs], timeout_s=1800, poll_s=0.25)
    wall = time.monotonic() - t0
    cpu1 = group_cpu_s(stage_pgids), group_cpu_s(stack_pgids)
    report = await audit(settings, {s.document_id: s.expected for s in subs})
    assert report.complete and report.done == len(documents), report.summary()
    return {"wall_s": wall, "stages_cpu_s": cpu1[0] - cpu0[0], "stack_cpu_s": cpu1[1] - cpu0[1],
            "documents": len(documents), "duplicated": report.duplicated}


def run_one(storage: str, documents, tmp: Path) -> dict:
    state = tmp / storage
    with EmbeddedStack(state, kafka_storage=storage, log=lambda m: None) as stack:
        endpoints = stack.start()
        env = {**os.environ, **endpoints.as_env(), **STAGE_ENV, "OCRSTREAM_HTTP_PORT": str(free_port()),
               "OCRSTREAM_CONSUMER_GROUP_PREFIX": f"bench-{uuid.uuid4().hex[:6]}"}
        services = json.loads((state / "stack.json").read_text())["services"]
        with StageProcesses(env, state / "logs") as stages:
            return asyncio.run(measure(Settings.from_env(env), f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}",
                                       documents, stages, [s["pid"] for s in services]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--documents", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=1, help="runs per storage (alternating)")
    args = ap.parse_args()
    documents = make_documents(args.documents, seed=7, bad_every=0)
    rows: dict[str, list[dict]] = {"memory": [], "s3": []}
    with tempfile.TemporaryDirectory(prefix="bench-durability-") as tmp:
        for i in range(args.repeat):
            for storage in ("memory", "s3"):
                r = run_one(storage, documents, Path(tmp) / str(i))
                rows[storage].append(r)
                print(f"  {storage}: {r['documents']} documents in {r['wall_s']:.1f} s, stages "
                      f"{r['stages_cpu_s']:.1f} CPU-s, stack {r['stack_cpu_s']:.1f} CPU-s", flush=True)
    print(f"\n{args.documents} distinct one-page documents (CLI + HTTP + raw topic), the same for both, "
          f"{args.repeat} run(s) each, best run shown; CPU over the run window\n")
    print("| broker log | documents/s | stage CPU-ms per page | broker+S3+PostgreSQL CPU-ms per page "
          "| total CPU-ms per page | duplicated |")
    print("|---|---|---|---|---|---|")
    for storage, runs in rows.items():
        best = min(runs, key=lambda r: r["wall_s"])
        n = best["documents"]
        print(f"| {storage} | {n / best['wall_s']:.2f} | {1000 * best['stages_cpu_s'] / n:.0f} | "
              f"{1000 * best['stack_cpu_s'] / n:.0f} | "
              f"{1000 * (best['stages_cpu_s'] + best['stack_cpu_s']) / n:.0f} | {best['duplicated']} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
