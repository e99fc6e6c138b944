"""A person's first minute: wall seconds per receipt for ``ocrstream submit --wait`` and HTTP.

    .venv/bin/python bench/bench_first_minute.py                       # 20 rendered receipts
    .venv/bin/python bench/bench_first_minute.py --input ../shared/data/sroie-dev/pages/img
    git archive COMMIT | tar -x -C /tmp/before                       # A/B against an older CLI
    .venv/bin/python bench/bench_first_minute.py --doors cli cli-before http http-poll --before /tmp/before

Starts its own embedded stack (tansu, SeaweedFS, PostgreSQL) and the four stage processes,
warms them up (models loaded, consumer groups joined) and then, on the idle pipeline, submits
``--n`` receipts one after another, each waited for before the next:

* ``cli``: ``python -m ocrstream.cli submit --wait FILE`` as a new process per receipt (process
  start, imports, connections and the wait included: what a user at a shell sees); with the
  stages up it goes through the ingest stage's HTTP door (``--via auto``);
* ``cli-kafka``: the same with ``--via kafka``: the CLI door (S3 and the broker from the process);
* ``cli-before``: the same with the CLI of another checkout (``--before DIR``, e.g. the commit
  before issue 15 unpacked with ``git archive``), against the same stages;
* ``http``: one ``POST /v1/documents?wait=30`` per receipt from a fresh HTTP connection (a
  server without ``?wait=`` answers 202 at once: the bench then falls back to polling);
* ``http-poll``: ``POST /v1/documents`` then ``GET /v1/documents/{id}`` on the query API every
  50 ms until stored: the best an HTTP client could do before issue 15.

The doors take turns receipt by receipt, so a machine whose load changes (2 cores shared with
other work) slows them alike and the comparison stays fair.

Prints p50/p95/min/max wall seconds per receipt and where the time went (medians): from the
start of the submission to ``submitted_at`` (process start, imports, connections), the
pipeline's own time (``submitted_at`` to ``stored_at``, and each stage's share, PostgreSQL) and
from ``stored_at`` to the answer (what waiting costs: the part issue 15 removes). Goal of issue 15:
p50 <= 1.0 s and p95 <= 1.5 s for both. ``--input`` defaults to receipts rendered by
``tools/render_samples.py`` (the kind of ``samples/receipt.png``); real SROIE pages are used only
when given (they cost ~1.3 CPU-s each in the stages, see ../shared/README.md); a missing
``--input`` folder is reported and skipped (exit 0).

The stages run with default settings (as after ``ocrstream dev up``); the machine's load average
is printed with the table, since other work on the same cores slows every stage.

``--trace`` also shows where a receipt's time goes inside the pipeline, finer than the stages'
timestamps: the stage processes export their OpenTelemetry spans (README "Tracing") to an OTLP
receiver in this process (:class:`tools.otlp_receiver.OtlpReceiver`; the ``cli`` door's own process
does not export, so its walls are as without), and a second table gives, per door, the median
milliseconds of each step of a document's trace (:func:`trace_steps`): the door, each hop between
stages, each stage's model phases (decode, clean-up, detection, crop; recognition) and the rest of each
stage's span (downloads, uploads, produce and offset commit). A hop is measured from the end of the
previous stage's span, which closes after its offset commit, to the start of the next one's, so it is
the commit's time plus the broker's delivery. Exporting spans costs the stages a little CPU: compare
walls without ``--trace``.

``--levers-off`` adds issue 22's before rows in the same run: the stages are started again with
fp32 ONNX Runtime (``OCRSTREAM_INFERENCE=onnxruntime``) and every page detected at
``detect_max_side`` (``OCRSTREAM_DETECT_GLYPH_PX=0``); the recogniser's output layer stays cut
(no setting turns it off; ``bench_backends.py`` measures it). The two variants take turns in
``--rounds`` blocks (stages restarted between blocks) so that load drift slows them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.chdir(REPO)  # stage and CLI processes run `python -m ocrstream.cli` from this checkout

import asyncpg  # noqa: E402
import httpx  # noqa: E402

from ocrstream.devstack import EmbeddedStack  # noqa: E402
from ocrstream.ops.launcher import StageProcesses, free_port  # noqa: E402
from ocrstream.settings import Settings  # noqa: E402
from tools.otlp_receiver import OtlpReceiver  # noqa: E402
from tools.render_samples import RECEIPT, encode, render_page  # noqa: E402

GOAL_P50_S, GOAL_P95_S = 0.8, 1.2  # issue 22 (issue 15's were 1.0 and 1.5)

#: the stage settings of each variant: issue 22's levers on (the defaults) and off (the before row).
VARIANTS: dict[str, dict[str, str]] = {
    "": {},
    "levers off": {"OCRSTREAM_INFERENCE": "onnxruntime", "OCRSTREAM_DETECT_GLYPH_PX": "0"},
}
POLL_S = 0.05


def rendered_receipts(folder: Path, n: int) -> list[Path]:
    """``n`` receipts like samples/receipt.png, each with its own invoice number and total."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        lines = [line.replace("104522", f"{104600 + i}").replace("25.50", f"{25 + i}.{i % 10}0")
                 for line in RECEIPT]
        path = folder / f"receipt-{i:02d}.png"
        path.write_bytes(encode(render_page(lines, size=24)))
        paths.append(path)
    return paths


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) by linear interpolation (numpy's default method)."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def submit_cli(env: dict[str, str], path: Path, checkout: Path = REPO, options: tuple[str, ...] = ()
               ) -> tuple[float, str]:
    """Wall seconds of one ``submit --wait`` process (the CLI of ``checkout``, with ``options``)
    and the document id it printed."""
    started, epoch = time.perf_counter(), time.time()
    out = subprocess.run([sys.executable, "-m", "ocrstream.cli", "submit", "--wait", "--timeout", "120", *options,
                          str(path)], env=env, capture_output=True, text=True, timeout=180, cwd=checkout)
    wall = time.perf_counter() - started
    if out.returncode != 0 or "[done]" not in out.stdout:
        raise RuntimeError(f"submit {path.name} failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-2000:]}")
    SPANS[out.stdout.split()[0]] = (epoch, epoch + wall)
    return wall, out.stdout.split()[0]


#: what each CLI door's process imports before it submits (``--via http``: no Kafka/S3 client).
SUBMIT_IMPORTS = {"cli": "import ocrstream.cli.main, ocrstream.cli.submit, ocrstream.client.http_submit",
                  "cli-kafka": "import ocrstream.cli.main, ocrstream.cli.submit, ocrstream.client.client"}


def import_seconds(door: str) -> float:
    """Wall seconds of a process that only starts Python and imports ``door``'s ``submit`` code path."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", SUBMIT_IMPORTS[door]], check=True, cwd=REPO)
    return time.perf_counter() - started


def submit_http(ingest: str, query: str, path: Path, wait: bool = True) -> tuple[float, str, str]:
    """Wall seconds of one HTTP submission until its result is known; document id; how it waited."""
    started, epoch = time.perf_counter(), time.time()
    with httpx.Client(timeout=60) as client:
        resp = client.post(f"{ingest}/v1/documents", params={"wait": 30} if wait else {},
                           files={"file": (path.name, path.read_bytes())})
        resp.raise_for_status()
        body = resp.json()
        doc_id, how = body["document_id"], "?wait="
        status = body.get("status")
        if status not in ("done", "failed"):  # a server without ?wait=: poll the query API
            how = "poll"
            while True:
                got = client.get(f"{query}/v1/documents/{doc_id}")
                if got.status_code == 200 and got.json()["status"] in ("done", "failed"):
                    status = got.json()["status"]
                    break
                time.sleep(POLL_S)
    wall = time.perf_counter() - started
    if status != "done":
        raise RuntimeError(f"{path.name}: {status}")
    SPANS[doc_id] = (epoch, epoch + wall)
    return wall, doc_id, how


#: When each submission started and ended (epoch seconds, this host's clock), by document id.
SPANS: dict[str, tuple[float, float]] = {}

STEPS = [("ingest", "submitted_at", "ingested_at"), ("preprocess", "ingested_at", "preprocessed_at"),
         ("recognize", "preprocessed_at", "recognized_at"), ("store", "recognized_at", "stored_at"),
         ("pipeline", "submitted_at", "stored_at")]


async def step_seconds(settings: Settings, ids: list[str]) -> dict[str, list[float]]:
    """Seconds each stage held each document, and ``pipeline`` = stored - submitted (PostgreSQL)."""
    conn = await asyncpg.connect(settings.dsn)
    try:
        rows = await conn.fetch("SELECT * FROM documents WHERE document_id = ANY($1::text[])", ids)
    finally:
        await conn.close()
    steps = {name: [(r[end] - r[start]).total_seconds() for r in rows] for name, start, end in STEPS}
    steps["before submit"] = [r["submitted_at"].timestamp() - SPANS[r["document_id"]][0] for r in rows]
    steps["after stored"] = [SPANS[r["document_id"]][1] - r["stored_at"].timestamp() for r in rows]
    return steps


def wait_http_up(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


HEADER = ("| door | n | wall p50 | wall p95 | min | max | waits by | goal met | start to submitted |"
          " pipeline (submitted to stored) | stored to answer | ingest | preprocess | recognize | store |")


def row(name: str, walls: list[float], steps: dict[str, list[float]], how: str) -> str:
    """One markdown table row: wall percentiles, then the median seconds per stage."""
    ok = percentile(walls, 0.5) <= GOAL_P50_S and percentile(walls, 0.95) <= GOAL_P95_S
    medians = " | ".join(f"{percentile(steps[s], 0.5):.2f}" for s in
                         ("before submit", "pipeline", "after stored", "ingest", "preprocess", "recognize", "store"))
    return (f"| {name} | {len(walls)} | {percentile(walls, 0.5):.2f} | {percentile(walls, 0.95):.2f} | "
            f"{min(walls):.2f} | {max(walls):.2f} | {how} | {'yes' if ok else 'no'} | {medians} |")


#: A document's trace as steps: (label, (span, "start" | "end"), (span, "start" | "end")), in the
#: order a receipt meets them; a child span's step is its duration (summed over pages).
TRACE_STEPS: list[tuple[str, tuple[str, str], tuple[str, str]]] = [
    ("door: upload, produce", ("ingest submit", "start"), ("ingest submit", "end")),
    ("hop to preprocess", ("ingest submit", "end"), ("preprocess", "start")),
    ("preprocess: download, hand-off", ("preprocess", "start"), ("decode", "start")),
    ("decode", ("decode", "duration"), ("decode", "duration")),
    ("clean-up", ("cleanup", "duration"), ("cleanup", "duration")),
    ("detection", ("detection", "duration"), ("detection", "duration")),
    ("crop", ("crop", "duration"), ("crop", "duration")),
    ("preprocess: pack, upload, produce, commit", ("crop", "end"), ("preprocess", "end")),
    ("hop to recognize", ("preprocess", "end"), ("recognize", "start")),
    ("recognize: download, unpack", ("recognize", "start"), ("recognition", "start")),
    ("recognition", ("recognition", "duration"), ("recognition", "duration")),
    ("recognize: produce, commit", ("recognition", "end"), ("recognize", "end")),
    ("hop to store", ("recognize", "end"), ("store", "start")),
    ("store: post-process, PostgreSQL, produce, commit", ("store", "start"), ("store", "end")),
]


def trace_steps(spans: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Milliseconds of each :data:`TRACE_STEPS` step per document, from the spans of any number of
    traces (:attr:`OtlpReceiver.spans` dicts: ``name``, ``trace_id``, ``start``/``end`` ns,
    ``attributes``). A trace is a document's when its ``preprocess`` span names it
    (``ocrstream.document_id``) and it has every span the steps name; other traces (warm-up, failed
    documents) are left out. A span that occurs once per page (decode .. crop) counts from its first
    start to its last end, and as the sum of its durations."""
    traces: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        traces.setdefault(span["trace_id"], []).append(span)
    needed = {name for _, (a, _x), (b, _y) in TRACE_STEPS for name in (a, b)}
    out: dict[str, dict[str, float]] = {}
    for trace in traces.values():
        by_name: dict[str, list[dict[str, Any]]] = {}
        for span in trace:
            by_name.setdefault(span["name"], []).append(span)
        if not needed <= by_name.keys() or len(by_name["preprocess"]) != 1:
            continue
        doc_id = by_name["preprocess"][0]["attributes"].get("ocrstream.document_id")
        if not isinstance(doc_id, str):
            continue

        def at(name: str, edge: str) -> float:
            group = by_name[name]
            if edge == "duration":
                return float(sum(s["end"] - s["start"] for s in group))
            return float(min(s["start"] for s in group) if edge == "start" else max(s["end"] for s in group))

        out[doc_id] = {label: (at(*a) if a[1] == "duration" else at(*b) - at(*a)) / 1e6
                       for label, a, b in TRACE_STEPS}
    return out


def trace_table(steps: dict[str, dict[str, float]], ids: dict[str, list[str]]) -> list[str]:
    """Markdown lines: one row per step, one column per door (its documents' median ms)."""
    doors = [d for d in ids if any(i in steps for i in ids[d])]
    lines = ["| step (median ms) | " + " | ".join(doors) + " |", "|---|" + "---|" * len(doors)]
    for label, _, _ in TRACE_STEPS:
        cells = [percentile([steps[i][label] for i in ids[d] if i in steps], 0.5) for d in doors]
        lines.append(f"| {label} | " + " | ".join(f"{c:.0f}" for c in cells) + " |")
    totals = [percentile([sum(steps[i].values()) for i in ids[d] if i in steps], 0.5) for d in doors]
    lines.append("| **sum of the steps** | " + " | ".join(f"**{t:.0f}**" for t in totals) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20, help="receipts per door")
    parser.add_argument("--input", type=Path, default=None,
                        help="folder of receipts (default: rendered like samples/receipt.png)")
    parser.add_argument("--doors", nargs="+", default=["cli", "http"],
                        choices=["cli", "cli-kafka", "cli-before", "http", "http-poll"])
    parser.add_argument("--before", type=Path, default=None,
                        help="checkout whose CLI the door cli-before runs (e.g. git archive of the commit before)")
    parser.add_argument("--levers-off", action="store_true",
                        help="also the stages with issue 22's levers off (fp32 ONNX Runtime, fixed detection size)")
    parser.add_argument("--trace", action="store_true",
                        help="also where a receipt's time goes: the stages' spans, median ms per step")
    parser.add_argument("--rounds", type=int, default=2,
                        help="blocks per variant with --levers-off, taking turns (stages restarted between)")
    args = parser.parse_args(argv)
    if args.input is not None:  # absolute: the cli-before door runs from the other checkout
        args.input = args.input.resolve()
    if args.input is not None and not args.input.is_dir():
        print(f"{args.input} not found: skipped")
        return 0
    if "cli-before" in args.doors and args.before is None:
        parser.error("--doors cli-before needs --before DIR")

    with tempfile.TemporaryDirectory(prefix="ocrs-bench-") as tmp:
        tmp = Path(tmp)
        if args.input is None:
            blocks = 2 * max(1, args.rounds) if args.levers_off else 1  # each with its own warm-up receipts
            paths = rendered_receipts(tmp / "receipts", (args.n * (2 if args.levers_off else 1) + blocks)
                                      * len(args.doors))
            label = "rendered receipts (tools/render_samples.py RECEIPT, 589x540 px)"
        else:
            paths = sorted(p for p in args.input.iterdir() if p.is_file())[: args.n] * len(args.doors)
            label = f"{args.n} files of {args.input}"
        with EmbeddedStack(tmp / "stack", log=lambda m: None) as stack, \
                (OtlpReceiver() if args.trace else contextlib.nullcontext()) as receiver:
            env = {**os.environ, **stack.start().as_env(), "OMP_WAIT_POLICY": "PASSIVE",
                   "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
                   "OCRSTREAM_METRICS_PORT": "0", "OCRSTREAM_ENV_FILE": str(tmp / "none.env")}
            settings = Settings.from_env(env)
            # the stage processes only: the cli door's own process exports nothing, its walls stay as without
            traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"} \
                if receiver is not None else {}
            ingest = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
            query = f"http://127.0.0.1:{env['OCRSTREAM_QUERY_PORT']}"
            submit = {
                "cli": lambda path: (*submit_cli(env, path), "--wait (HTTP door)"),
                "cli-kafka": lambda path: (*submit_cli(env, path, options=("--via", "kafka")), "--wait --via kafka"),
                "cli-before": lambda path: (*submit_cli(env, path, args.before), "--wait"),
                "http": lambda path: submit_http(ingest, query, path),
                "http-poll": lambda path: submit_http(ingest, query, path, wait=False),
            }
            fresh = iter(paths)  # rendered receipts: each submitted once (ingest answers a known one at once)
            variants = list(VARIANTS) if args.levers_off else [""]
            rounds = max(1, args.rounds) if args.levers_off else 1
            walls: dict[tuple[str, str], list[float]] = {(d, v): [] for d in args.doors for v in variants}
            ids: dict[tuple[str, str], list[str]] = {(d, v): [] for d in args.doors for v in variants}
            how: dict[str, str] = {}
            imports: dict[str, list[float]] = {d: [] for d in SUBMIT_IMPORTS if d in args.doors}
            loads = []
            for block in range(rounds * len(variants)):
                variant = variants[block % len(variants)]
                share = [len(range(r, args.n, rounds)) for r in range(rounds)][block // len(variants)]
                with StageProcesses({**env, **VARIANTS[variant], **traced}, tmp / "logs" / f"block{block}"):
                    print(f"warming up the stages{' (' + variant + ')' if variant else ''} "
                          "(models, consumer groups) ...", file=sys.stderr)
                    wait_http_up(ingest + "/healthz")
                    wait_http_up(query + "/docs")
                    for door in args.doors:
                        submit[door](next(fresh) if args.input is None else paths[0])
                    time.sleep(2)
                    loads.append(os.getloadavg()[0])
                    for _ in range(share):  # the doors take turns
                        for door, seconds in imports.items():
                            seconds.append(import_seconds(door))
                        for door in args.doors:
                            k = len(walls[(door, variant)])
                            path = next(fresh) if args.input is None else paths[k]
                            wall, doc_id, how[door] = submit[door](path)
                            walls[(door, variant)].append(wall)
                            ids[(door, variant)].append(doc_id)
                            print(f"  {k + 1:>2}/{args.n} {door:<10} {variant:<10} {path.name}: {wall:.2f} s",
                                  file=sys.stderr)
            table = [row(f"{door} ({variant})" if variant else door, walls[(door, variant)],
                         asyncio.run(step_seconds(settings, ids[(door, variant)])), how[door])
                     for variant in variants for door in args.doors]
            load_before = min(loads)
            if receiver is not None:  # the stages flushed their last spans as they stopped
                steps = trace_steps(receiver.all_spans())
                traced_ids = {f"{door} ({variant})" if variant else door: ids[(door, variant)]
                              for variant in variants for door in args.doors}
    print(f"\n{label}, one after another, each waited for; idle pipeline; wall seconds per receipt")
    print(f"goal: p50 <= {GOAL_P50_S} s, p95 <= {GOAL_P95_S} s; load average before/after: "
          f"{load_before:.1f}/{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for line in table:
        print(line)
    for door, seconds in imports.items():
        print(f"\n{door}: python start + imports of its submit path alone (no work), p50: "
              f"{percentile(seconds, 0.5):.2f} s")
    if args.trace:
        print("\nwhere a receipt's time goes in the pipeline (the stages' spans; a hop includes the previous "
              "stage's offset commit)\n")
        print("\n".join(trace_table(steps, traced_ids)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
