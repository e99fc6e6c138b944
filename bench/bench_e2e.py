"""Issue 13: the pipeline against its own model work and the peers, same pages, one run.

    .venv/bin/python bench/bench_e2e.py [--input DIR] [--limit N] [--skip tesseract rapidocr pipeline ...]
                                        [--replicas N] [--broker-log s3 memory] [--levers-off]

Default input: the SROIE dev pages ``<repo>/../shared/data/sroie-dev/pages/img`` (or the folder
in ``$OCRSTREAM_BENCH_INPUT``), with ground truth from the ``pages.jsonl`` beside the folder
(``../shared/data/sroie-dev/README.md``); any folder of images works (``--input``; without a
``pages.jsonl`` CER/WER are left out). A missing input folder is reported and skipped (exit 0).

Rows, all on the same pages in this one process run (OMP_WAIT_POLICY=PASSIVE):

* ``in-process``: ocrstream's page path without Kafka/S3/PostgreSQL (:func:`inprocess_reader`:
  decode, clean-up, DBNet, crops, recogniser, post-processing, text), ``--threads`` ORT threads;
* ``in-process, issue-22 levers off`` (``--levers-off``): the same with fp32 ONNX Runtime, every page
  detected at ``detect_max_side`` and the recogniser's whole output layer (the before row);
* ``pipeline``: its own embedded stack (tansu, SeaweedFS, PostgreSQL) and the four stage processes
  with default settings; after a warm-up (two rendered receipts), (1) latency: the pages one at a
  time, submit -> results event (``--latency-n`` of them), then (2) steady state: all pages
  submitted at once (bytes made distinct by a JPEG comment / PNG text chunk, so ingest's dedup
  does not answer), CPU of every process group read from /proc before and after (all threads,
  children included), RSS per stage sampled every 0.5 s (max);
* ``pipeline, N replicas`` (``--replicas N``, N > 1): the same on a fresh stack with N processes
  each of preprocess and recognize in their consumer groups (dynamic members, every topic
  ``OCRSTREAM_TOPIC_PARTITIONS`` = 4 partitions, so a group of N <= 4 shares them by
  rebalancing), measured the same way but without the latency part; a replica's CPU is added
  to its stage's, its RSS is the largest replica's. A throughput table then puts the rows side
  by side: pages/s at saturation, busy cores (CPU-s of every pipeline process / wall s), CPU-s
  per page and pages/s per busy core (the issue's "no loss of throughput per core" compares
  this last one); measured 2026-11-23: README "Performance";
* ``pipeline, broker log in memory`` (``--broker-log s3 memory``): the one-replica pipeline
  again on a stack whose broker keeps its log in memory (``EmbeddedStack(kafka_storage=
  "memory")``, not durable) instead of on its own SeaweedFS (``kafka-s3``, the default);
* ``pipeline, tracing on`` (``--tracing``): the one-replica pipeline again with
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a local sink (:class:`OtlpSink`), then a table of the
  stages' CPU-s per page with tracing off and on (issue 25: on <= 3 % more);
* ``pipeline <DIR>`` (``--before DIR``): the pipeline from an older checkout, before this one; with
  ``--rounds N`` (N > 1) both pipelines run N times in ABBA order (before, this; this, before; ...),
  because the second pipeline of a run measured up to 20 % more CPU per page than the first, even in
  processes the change did not touch (three runs, 2026-12-06); a table then gives each round and the
  medians;
* ``rapidocr 3.10``: ``rapidocr.RapidOCR`` in-process (same PP-OCRv6 weights, no angle
  classifier), 1 thread;
* ``tesseract``: the ``tesseract`` CLI (``--psm 3``, ``OMP_THREAD_LIMIT=1``), skipped with a
  message where it is not installed (Debian ``tesseract-ocr``).

After the steady state, the CPU each stage charged to those documents (their results events'
``costs``, issue 25, read back from ``document_costs``) is printed against the process CPU measured
from /proc for preprocess, recognize and store (goal: within 10 %).

CPU-s per page are process CPU (``resource.getrusage`` of this process and its children, or
/proc for the pipeline's processes); the machine is shared, so compare rows of ONE run. The
``x Tesseract`` column divides by the Tesseract row's CPU (issue 22's goals: pipeline <= 1.0,
in-process <= 0.8). Texts
are scored case-insensitively (:mod:`ocrstream.ocr.evaluation`). Progress goes to stderr, the tables
to stdout. Goals (issue 13): pipeline <= 1.1 x in-process CPU, <= 0.6 CPU-s per SROIE page,
p50 <= 0.8 s, p95 <= 1.5 s, RSS <= 1 GiB per stage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.chdir(REPO)  # stage processes run `python -m ocrstream.cli` from the current directory

from ocrstream.ocr.evaluation import cer, wer  # noqa: E402
from tools.proc_groups import group_processes  # noqa: E402

#: ``<repo>/../shared`` (a worktree one level deeper: ``<repo>/../../shared``).
DATA = next((d / "shared" / "data" / "sroie-dev" for d in (REPO.parent, REPO.parent.parent)
             if (d / "shared" / "data" / "sroie-dev").is_dir()), REPO.parent / "shared" / "data" / "sroie-dev")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".pdf"}
IDLE_S = 20.0  # seconds the warm pipeline is left idle to measure its CPU without work


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------------------------
def load_pages(folder: Path, limit: int | None) -> tuple[list[Path], dict[str, str]]:
    """Image files of ``folder`` (sorted, first ``limit``) and ground truth by file name from a
    ``pages.jsonl`` in the folder or its parent (``{"image": ..., "text": ...}`` records)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    truth: dict[str, str] = {}
    for manifest in (folder / "pages.jsonl", folder.parent / "pages.jsonl", folder.parent.parent / "pages.jsonl"):
        if manifest.is_file():
            for line in manifest.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    truth[Path(record["image"]).name] = record["text"]
            break
    return paths, truth


def distinct_bytes(data: bytes, tag: str) -> bytes:
    """The same image with other bytes (a JPEG COM segment / PNG tEXt chunk holding ``tag``),
    so ingest's content dedup treats a second submission as a new document."""
    payload = tag.encode()
    if data[:2] == b"\xff\xd8":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        body = b"tEXt" + b"bench\x00" + payload
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        return data[:33] + chunk + data[33:]  # after the 8-byte signature and the 25-byte IHDR chunk
    return data  # other formats: resubmission may be answered by dedup (reported as reused)


# ----------------------------------------------------------------------------------------------
# Measurement helpers
# ----------------------------------------------------------------------------------------------
def own_cpu() -> float:
    """CPU seconds of this process (all threads) and its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1), linear interpolation; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


class GroupMeter:
    """CPU seconds and RSS of named process groups (a stage process and its decoder workers; a
    stack service and its children), read from /proc; RSS maxima sampled every 0.5 s: of all the
    name's groups together, or of its largest one for the names in ``replicated`` (the RSS of
    one replica of a stage)."""

    def __init__(self, groups: dict[str, list[int]], replicated: frozenset[str] = frozenset()):
        self.groups = groups  # name -> process group ids
        self.replicated = replicated
        self.max_rss = dict.fromkeys(groups, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cpu(self) -> dict[str, float]:
        procs = group_processes()
        return {name: sum(c for g in ids for _, c, _ in procs.get(g, [])) for name, ids in self.groups.items()}

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            procs = group_processes()
            for name, ids in self.groups.items():
                rss = [sum(r for _, _, r in procs.get(g, [])) for g in ids]
                now = max(rss, default=0) if name in self.replicated else sum(rss)
                self.max_rss[name] = max(self.max_rss[name], now)

    def __enter__(self) -> "GroupMeter":
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Row:
    """One engine's results on the pages."""

    name: str
    texts: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    note: str = ""
    per_process: dict[str, float] = field(default_factory=dict)  # CPU-s per page
    replicas: int = 1  # processes each of preprocess and recognize (pipeline rows)
    rss: dict[str, int] = field(default_factory=dict)  # bytes
    idle: dict[str, float] = field(default_factory=dict)  # CPU-s per second with no work
    charged: dict[str, float] = field(default_factory=dict)  # CPU-s per page the documents' costs name, by stage


def run_serially(name: str, read: Callable[[bytes], str], paths: list[Path], note: str = "") -> Row:
    """``read`` every page one after another: texts, CPU (this process + children), wall, latency."""
    row = Row(name, note=note)
    cpu0, wall0 = own_cpu(), time.perf_counter()
    for i, path in enumerate(paths):
        data = path.read_bytes()
        t0 = time.perf_counter()
        row.texts.append(read(data))
        row.latencies.append(time.perf_counter() - t0)
        progress(f"  {name}: {i + 1}/{len(paths)} {path.name} {row.latencies[-1]:.2f} s")
    row.cpu_s, row.wall_s = own_cpu() - cpu0, time.perf_counter() - wall0
    return row


# ----------------------------------------------------------------------------------------------
# The engines
# ----------------------------------------------------------------------------------------------
def inprocess_reader(threads: int, levers: bool = True) -> Callable[[bytes], str]:
    """ocrstream's page path in this process: bytes of a one-page image -> page text.

    :class:`ocrstream.ocr.OCRPipeline` whole (decode, clean-up, DBNet, crops, recogniser,
    word boxes, blocks, the store's post-processing, text rendering): the same step functions the
    stages run, without Kafka, S3 and PostgreSQL; ``threads`` ONNX Runtime threads per model and
    as many recogniser calls at once (1: the whole path on one core, as the row says).
    ``levers=False`` turns issue 22's levers off, for a before row in the same run: fp32 ONNX
    Runtime (not the ``OCRSTREAM_INFERENCE`` default), every page detected at ``detect_max_side``
    (no glyph-height sizing), the recogniser's whole output layer (no charset cut).
    """
    from ocrstream.ocr import OCRPipeline
    from ocrstream.ocr.detection import LineDetector
    from ocrstream.ocr.recognition.registry import load_recognizer
    from ocrstream.settings import Settings

    settings = Settings(_env_file=None)
    off: dict[str, Any] = {} if levers else {"backend": "onnxruntime"}
    pipeline = OCRPipeline.from_settings(
        settings,
        detector=LineDetector(max_side=settings.detect_max_side, min_side=settings.detect_min_side,
                              glyph_px=settings.detect_glyph_px if levers else 0, device="cpu", threads=threads,
                              **off),
        recognizer=load_recognizer("ppocr", device="cpu", threads=threads, concurrent_calls=threads,
                                   max_batch_size=settings.batch_max_size,
                                   max_chars=settings.max_region_chars, cut_head=levers, **off))
    pipeline.postprocessor.preload()

    def read(data: bytes) -> str:
        return pipeline(data).render_text()

    return read


def rapidocr_reader() -> Callable[[bytes], str]:
    """RapidOCR 3.10 in-process (PP-OCRv6 small det + rec, no angle classifier, 1 ORT thread):
    its boxes' texts joined into visual lines like ocrstream's."""
    import cv2
    import numpy as np
    from rapidocr import RapidOCR

    from ocrstream.ocr.detection import visual_lines

    engine = RapidOCR(params={"Global.use_cls": False, "Global.log_level": "error",
                              "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                              "EngineConfig.onnxruntime.inter_op_num_threads": 1})

    def read(data: bytes) -> str:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        out = engine(image)
        if out.boxes is None or out.txts is None:
            return ""
        quads = [np.asarray(b, dtype=float) for b in out.boxes]
        rows = (" ".join(out.txts[i] for i in line if out.txts[i].strip()) for line in visual_lines(quads))
        return "\n".join(r for r in rows if r)

    return read


def tesseract_reader(binary: str) -> Callable[[bytes], str]:
    """The ``tesseract`` CLI on a page (``--psm 3``, English, 1 thread); its stdout text."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}

    def read(data: bytes) -> str:
        with tempfile.NamedTemporaryFile(suffix=".img") as f:
            f.write(data)
            f.flush()
            out = subprocess.run([binary, f.name, "stdout", "--psm", "3", "-l", "eng"], env=env,
                                 capture_output=True, timeout=300)
        return out.stdout.decode(errors="replace")

    return read


REPLICATED = ("preprocess", "recognize")  # the stages ``--replicas`` runs N processes of


def run_pipeline(paths: list[Path], latency_n: int, timeout_s: float, checkout: Path = REPO,
                 name: str = "pipeline", replicas: int = 1, kafka_storage: str = "s3",
                 extra_env: dict[str, str] | None = None) -> Row:
    """The four stage processes on their own embedded stack: warm-up, latency, steady state.

    ``checkout``: the source tree the stage processes run (``--before DIR``: an older commit
    unpacked with ``git archive``, measured in the same run as this one). ``replicas``:
    processes each of preprocess and recognize (``preprocess-2``, ... join the stage's consumer
    group; their CPU and RSS count under the stage's name). ``kafka_storage``: where the
    embedded broker keeps its log (``EmbeddedStack``). ``extra_env``: more variables of the stage
    processes (``--tracing``: the OTLP endpoint); without it tracing is off (``OTEL_*`` removed)."""
    from ocrstream.client.client import Client
    from ocrstream.devstack import EmbeddedStack
    from ocrstream.ops.launcher import StageProcesses, free_port
    from ocrstream.settings import Settings
    from tools.render_samples import RECEIPT, encode, render_page

    row = Row(name, replicas=replicas)
    with tempfile.TemporaryDirectory(prefix="ocrs-e2e-") as tmp:
        tmp = Path(tmp)
        with EmbeddedStack(tmp / "stack", kafka_storage=kafka_storage, log=lambda m: None) as stack:
            env = {**os.environ, **stack.start().as_env(), "OMP_WAIT_POLICY": "PASSIVE",
                   "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
                   "OCRSTREAM_METRICS_PORT": "0", "OCRSTREAM_ENV_FILE": str(tmp / "none.env")}
            env = {k: v for k, v in env.items() if not k.startswith("OTEL_")} | (extra_env or {})
            settings = Settings.from_env(env)
            services = {s.name: s.pid for s in stack._services}
            stages = StageProcesses(env, tmp / "logs")
            os.chdir(checkout)  # the stage processes import `services` from their working directory
            try:
                stages.start()
                for stage in REPLICATED:
                    for i in range(2, replicas + 1):
                        stages.start_one(stage, f"{stage}-{i}")
            finally:
                os.chdir(REPO)
            try:
                groups: dict[str, list[int]] = {}
                for proc_name, proc in stages.procs.items():  # "recognize-2" counts as "recognize"
                    stage = proc_name.rsplit("-", 1)[0] if proc_name.rsplit("-", 1)[-1].isdigit() else proc_name
                    groups.setdefault(stage, []).append(proc.pid)
                groups["broker"] = [pid for name, pid in services.items() if name.startswith("kafka")]
                groups["S3"] = [services["s3"]]
                groups["PostgreSQL"] = [services["postgres"]]
                meter = GroupMeter(groups, frozenset(REPLICATED))

                async def drive() -> None:
                    async with Client(settings) as client:
                        progress("pipeline: warming up (models, consumer groups) ...")
                        # two documents per replica at once (keys spread over the partitions, so
                        # every replica most likely gets work and warms its models)
                        warm = [encode(render_page([line.replace("25.50", f"{25 + i}.00") for line in RECEIPT], size=24))
                                for i in range(2 * replicas)]
                        receipts = [await client.submit(data, f"warm-{i}.png") for i, data in enumerate(warm)]
                        _, missing = await client.wait(receipts, timeout_s=300 * replicas)
                        if missing or stages.dead():
                            raise RuntimeError(f"warm-up documents not done (exited: {stages.dead()}); stage logs:\n"
                                               f"{stages.log_tail('recognize')}")
                        await asyncio.sleep(2)
                        for i, path in enumerate(paths[:latency_n]):  # low load: one at a time
                            t0 = time.perf_counter()
                            receipt = await client.submit(path.read_bytes(), path.name)
                            await client.wait([receipt], timeout_s=timeout_s)
                            row.latencies.append(time.perf_counter() - t0)
                            progress(f"  pipeline latency {i + 1}/{latency_n} {path.name}: {row.latencies[-1]:.2f} s")
                        await asyncio.sleep(2)
                        progress(f"pipeline: idle for {IDLE_S:g} s (what every process burns without work) ...")
                        idle0, t0 = meter.cpu(), time.perf_counter()
                        await asyncio.sleep(IDLE_S)
                        idle1, span = meter.cpu(), time.perf_counter() - t0
                        row.idle = {k: (idle1[k] - idle0[k]) / span for k in groups}
                        progress(f"pipeline: steady state, {len(paths)} pages submitted at once ...")
                        cpu0, wall0 = meter.cpu(), time.perf_counter()
                        with meter:
                            receipts = [await client.submit(distinct_bytes(p.read_bytes(), "e2e"), p.name) for p in paths]
                            done: list[str] = []
                            outcomes, missing = await client.wait(
                                receipts, timeout_s=timeout_s * len(paths),
                                on_result=lambda e: (done.append(e.document_id),
                                                     progress(f"  pipeline: {len(done)}/{len(paths)} results")))
                            row.wall_s = time.perf_counter() - wall0
                            cpu1 = meter.cpu()
                        if missing or any(r.reused for r in receipts):
                            row.note = f"{len(missing)} missing, {sum(r.reused for r in receipts)} answered by dedup"
                        by_id = {o.receipt.document_id: o.result for o in outcomes}
                        found = [by_id.get(r.document_id) for r in receipts]
                        row.texts = [e.text.replace("\f", "\n") if e is not None else "" for e in found]
                        failed = [e for e in found if e is None or e.status != "done"]
                        if failed:
                            why = sorted({f"{e.error.stage}: {e.error.type}" if e is not None and e.error else "?"
                                          for e in failed})
                            first = next((e.error.message for e in failed if e is not None and e.error), "")
                            row.note += f" {len(failed)} not done ({', '.join(why)}; first: {first[:160]})"
                        row.per_process = {k: (cpu1[k] - cpu0[k]) / len(paths) for k in groups}
                        row.charged = await charged_cpu(settings, [r.document_id for r in receipts], len(paths))
                        row.cpu_s = sum(cpu1[k] - cpu0[k] for k in groups)
                        row.rss = dict(meter.max_rss)

                asyncio.run(drive())
            finally:
                stages.stop()
    return row


async def charged_cpu(settings, document_ids: list[str], n: int) -> dict[str, float]:
    """CPU-s per page each stage charged to ``document_ids`` (their ``document_costs`` rows,
    ocrstream/storage/usage.py: the results events' ``costs``), by stage."""
    import asyncpg

    from ocrstream.storage.db import create_pool
    from ocrstream.storage.usage import costs_of

    pool = await create_pool(settings, max_size=1)
    try:
        found = await costs_of(pool, document_ids)
    except asyncpg.UndefinedTableError:  # --before: a checkout from before the costs (issue 25)
        return {}
    finally:
        await pool.close()
    by_stage: dict[str, float] = {}
    for cost in found.values():
        for stage in cost["stages"]:
            by_stage[stage["stage"]] = by_stage.get(stage["stage"], 0.0) + stage["cpu_s"] / n
    return by_stage


class OtlpSink:
    """A local OTLP/HTTP endpoint for ``--tracing``: answers every POST 200 after reading its body
    (a collector's cheapest behaviour; the stages' exporter cost is what is measured), counting
    requests and bytes. Runs in a thread of this process (its CPU is not the stages')."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.requests = self.bytes = 0

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                sink.requests, sink.bytes = sink.requests + 1, sink.bytes + len(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------
def print_tables(rows: list[Row], n: int, truth: list[str] | None, args: argparse.Namespace) -> None:
    base = next((r for r in rows if r.name == "in-process"), None)
    load = os.getloadavg()
    print(f"\n{n} pages of {args.input}; {os.cpu_count()} CPUs, load average {load[0]:.1f}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; in-process threads={args.threads}")
    tess = next((r for r in rows if r.name.startswith("tesseract") and r.cpu_s), None)
    print("| engine | CER ci | WER ci | CER ci no spaces | CPU-s per page | x in-process | x Tesseract | pages/s | "
          "latency p50 s | p95 s | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if truth and r.texts:
            score = (f"{100 * cer(r.texts, truth):.2f} %", f"{100 * wer(r.texts, truth):.2f} %",
                     f"{100 * cer(r.texts, truth, ignore_spaces=True):.2f} %")
        else:
            score = ("—",) * 3
        per_page = r.cpu_s / n
        ratio = f"{per_page / (base.cpu_s / n):.2f}" if base and base.cpu_s else "—"
        ratio += f" | {r.cpu_s / tess.cpu_s:.2f}" if tess else " | —"
        latency = (f"{percentile(r.latencies, 0.5):.2f} | {percentile(r.latencies, 0.95):.2f}" if r.latencies
                   else "— | —")
        print(f"| {r.name} | {' | '.join(score)} | {per_page:.3f} | {ratio} | {n / r.wall_s:.2f} | "
              f"{latency} | {r.note} |")
    for r in rows:
        if r.per_process:
            names = list(r.per_process)
            print(f"\n{r.name}, steady state: CPU-s per page and max RSS per process group")
            print("| | " + " | ".join(names) + " | total |")
            print("|---|" + "---|" * (len(names) + 1))
            print("| CPU-s per page | " + " | ".join(f"{r.per_process[k]:.3f}" for k in names)
                  + f" | {sum(r.per_process.values()):.3f} |")
            print("| RSS MiB (a replica: the largest) | " + " | ".join(f"{r.rss[k] / 2**20:.0f}" for k in names) + " | |")
            if r.idle:
                print("| idle CPU-s per second | " + " | ".join(f"{r.idle[k]:.3f}" for k in names)
                      + f" | {sum(r.idle.values()):.3f} |")
                busy = r.wall_s  # seconds of the steady-state run
                print("| CPU-s per page minus idle | " + " | ".join(
                    f"{r.per_process[k] - r.idle[k] * busy / n:.3f}" for k in names)
                      + f" | {sum(r.per_process.values()) - sum(r.idle.values()) * busy / n:.3f} |")
            if r.charged:
                print_charged(r, n)
            stage_total = sum(r.per_process[k] for k in ("ingest", "preprocess", "recognize", "store"))
            print(f"\nstages {stage_total:.3f} + broker/S3/PostgreSQL {sum(r.per_process.values()) - stage_total:.3f}"
                  f" CPU-s per page; goals: <= 1.1 x in-process, <= 0.6 CPU-s per page, p50 <= 0.8 s, "
                  f"p95 <= 1.5 s, RSS <= 1024 MiB per stage")
    print_throughput([r for r in rows if r.per_process], n)
    print_tracing([r for r in rows if r.per_process], n)


def run_rounds(paths: list[Path], latency_n: int, timeout_s: float, before: Path, rounds: int) -> list[tuple[Row, Row]]:
    """(before row, this row) per round, the two pipelines run in ABBA order (round 1: before
    first; round 2: this first; ...); latency is measured in the first round only."""
    out = []
    for k in range(rounds):
        def run(checkout: Path, name: str) -> Row:
            return run_pipeline(paths, latency_n if k == 0 else 0, timeout_s, checkout, f"{name}, round {k + 1}")

        if k % 2 == 0:
            old = run(before.resolve(), f"pipeline {before}")
            new = run(REPO, "pipeline")
        else:
            new = run(REPO, "pipeline")
            old = run(before.resolve(), f"pipeline {before}")
        out.append((old, new))
    return out


def print_rounds(rounds: list[tuple[Row, Row]], n: int) -> None:
    """Each round's CPU-s per page of both pipelines, which ran first, and the medians."""
    print("\npipelines in ABBA order: CPU-s per page (all processes), steady state")
    print("| round | first | before | this | this / before |")
    print("|---|---|---|---|---|")
    ratios = []
    for k, (old, new) in enumerate(rounds, 1):
        ratios.append(new.cpu_s / old.cpu_s)
        print(f"| {k} | {'before' if k % 2 else 'this'} | {old.cpu_s / n:.3f} | {new.cpu_s / n:.3f} | {ratios[-1]:.3f} |")
    print(f"| median | | {statistics.median(o.cpu_s for o, _ in rounds) / n:.3f} | "
          f"{statistics.median(t.cpu_s for _, t in rounds) / n:.3f} | {statistics.median(ratios):.3f} |")


def print_tracing(rows: list[Row], n: int) -> None:
    """``--tracing``: the stages' CPU-s per page with tracing off and on (issue 25's goal: on <= 3 %
    more), measured and measured minus idle, per stage and in total."""
    off = next((r for r in rows if r.name == "pipeline"), None)
    on = next((r for r in rows if r.name == "pipeline, tracing on"), None)
    if off is None or on is None:
        return
    stages = [k for k in ("ingest", "preprocess", "recognize", "store") if k in off.per_process]

    def unidle(r: Row) -> list[float]:
        return [r.per_process[k] - r.idle.get(k, 0.0) * r.wall_s / n for k in stages]

    print(f"\ntracing off vs on (OTLP/HTTP to a local sink), stages' CPU-s per page ({n} pages each)")
    print("| | " + " | ".join(stages) + " | total | on / off |")
    print("|---|" + "---|" * (len(stages) + 2))
    for label, a, b in (("measured", [off.per_process[k] for k in stages], [on.per_process[k] for k in stages]),
                        ("measured minus idle", unidle(off), unidle(on))):
        for which, values in (("off", a), ("on", b)):
            ratio = f"{sum(b) / sum(a):.3f}" if which == "on" and sum(a) else ""
            print(f"| {label}, tracing {which} | " + " | ".join(f"{v:.3f}" for v in values)
                  + f" | {sum(values):.3f} | {ratio} |")


def print_charged(r: Row, n: int) -> None:
    """The documents' own costs (issue 25: each stage's CPU in the results events) against the
    process CPU measured from /proc, per stage run as a process here (ingest of these documents
    runs in this benchmark's process: the CLI door); the goal is within 10 %."""
    stages = [k for k in ("preprocess", "recognize", "store") if k in r.per_process]
    busy = r.wall_s
    print(f"\n{r.name}: CPU-s per page the documents' costs name (results events' `costs`) vs measured process CPU")
    print("| | " + " | ".join(stages) + " | total |")
    print("|---|" + "---|" * (len(stages) + 1))
    charged = [r.charged.get(k, 0.0) for k in stages]
    measured = [r.per_process[k] for k in stages]
    unidle = [r.per_process[k] - r.idle.get(k, 0.0) * busy / n for k in stages]
    for label, values in (("charged to documents", charged), ("measured (/proc)", measured),
                          ("measured minus idle", unidle)):
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {sum(values):.3f} |")
    for label, base in (("charged / measured", measured), ("charged / measured minus idle", unidle)):
        total = f"{sum(charged) / sum(base):.2f}" if sum(base) else "—"
        print(f"| {label} | " + " | ".join(f"{c / m:.2f}" if m else "—" for c, m in zip(charged, base))
              + f" | {total} |")
    if "ingest" in r.charged:
        print(f"(ingest charged {r.charged['ingest']:.4f} CPU-s per page, spent in this process: the CLI door)")


def print_throughput(rows: list[Row], n: int) -> None:
    """Pipeline rows side by side at saturation: pages/s, busy cores, CPU-s per page, pages/s per
    busy core and its ratio to the one-replica row (the goal: no loss with more replicas)."""
    base = next((r for r in rows if r.replicas == 1 and r.name == "pipeline"), None)
    if base is None or not any(r.replicas > 1 for r in rows):
        return
    per_core = {r.name: (n / r.wall_s) / (r.cpu_s / r.wall_s) for r in rows}
    print(f"\nthroughput at saturation ({n} pages submitted at once; {os.cpu_count()} CPUs; "
          f"busy cores = CPU-s of every pipeline process / wall s)")
    print("| pipeline | preprocess + recognize processes | pages/s | busy cores | CPU-s per page | "
          "pages/s per busy core | x 1 replica |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.name} | {r.replicas} + {r.replicas} | {n / r.wall_s:.3f} | {r.cpu_s / r.wall_s:.2f} | "
              f"{r.cpu_s / n:.3f} | {per_core[r.name]:.3f} | {per_core[r.name] / per_core[base.name]:.2f} |")


def stop_cleanly_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit(143)`` in the main thread, as Ctrl-C raises KeyboardInterrupt.

    The stage processes run in their own sessions (the launcher's), so a signal to this process does
    not reach them: without this, ``kill <bench>`` left them running against a stack that was gone,
    retrying at ~1.5 % CPU each and skewing the next run's figures. With it, the ``finally`` blocks
    stop the stages and the embedded stack."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path,
                        default=Path(os.environ.get("OCRSTREAM_BENCH_INPUT", DATA / "pages" / "img")))
    parser.add_argument("--limit", type=int, default=None, help="first N pages only")
    parser.add_argument("--skip", nargs="*", default=[], choices=["inprocess", "pipeline", "rapidocr", "tesseract"])
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads of the in-process rows")
    parser.add_argument("--levers-off", action="store_true",
                        help="also an in-process row with issue 22's levers off (fp32 ONNX Runtime, fixed "
                             "detector size, whole output layer): the before row of the same run")
    parser.add_argument("--latency-n", type=int, default=10, help="pages submitted one at a time for latency")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per page before giving up")
    parser.add_argument("--replicas", type=int, default=1,
                        help="also run the pipeline with N processes each of preprocess and recognize (N <= 4 "
                             "partitions), after the one-replica row, in the same run")
    parser.add_argument("--broker-log", nargs="+", default=["s3"], choices=["s3", "memory"],
                        help="a one-replica pipeline row per storage of the embedded broker's log "
                             "(s3: durable, the default; memory: lost when the broker stops)")
    parser.add_argument("--tracing", action="store_true",
                        help="also run the pipeline with tracing on (OTLP/HTTP to a local sink), after the "
                             "tracing-off row, and print the stages' CPU per page side by side")
    parser.add_argument("--before", type=Path, default=None,
                        help="also run the pipeline from this checkout (e.g. `git archive main | tar -x -C DIR`), "
                             "before this one, in the same run")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --before: run both pipelines this many times in ABBA order and print the medians")
    args = parser.parse_args(argv)
    stop_cleanly_on_sigterm()
    if args.rounds < 1 or (args.rounds > 1 and args.before is None):
        parser.error("--rounds N needs N >= 1, and --before when N > 1")
    if not 1 <= args.replicas <= 4:
        parser.error("--replicas must be 1..4 (the topics' partitions, OCRSTREAM_TOPIC_PARTITIONS)")
    if not args.input.is_dir():
        print(f"skipped: {args.input} absent (pass --input DIR or set OCRSTREAM_BENCH_INPUT)")
        return 0
    paths, truth_by_name = load_pages(args.input, args.limit)
    if not paths:
        print(f"skipped: no images in {args.input}")
        return 0
    truth = [truth_by_name[p.name] for p in paths] if all(p.name in truth_by_name for p in paths) else None
    rows: list[Row] = []
    if "inprocess" not in args.skip:
        progress("in-process: loading models ...")
        rows.append(run_serially("in-process", inprocess_reader(args.threads), paths))
    if args.levers_off:
        progress("in-process, levers off: loading models ...")
        rows.append(run_serially("in-process, issue-22 levers off", inprocess_reader(args.threads, levers=False), paths,
                                 note="fp32 ONNX Runtime, detector at max_side, whole output layer"))
    if "pipeline" not in args.skip:
        latency_n = min(args.latency_n, len(paths))
        rounds: list[tuple[Row, Row]] = []
        if args.before is not None and args.rounds > 1:
            rounds = run_rounds(paths, latency_n, args.timeout, args.before, args.rounds)
            rows += [row for pair in rounds for row in pair]
        elif args.before is not None:
            rows.append(run_pipeline(paths, latency_n, args.timeout, args.before.resolve(), f"pipeline {args.before}"))
        for storage in args.broker_log if not rounds else []:
            rows.append(run_pipeline(paths, latency_n, args.timeout, kafka_storage=storage,
                                     name="pipeline" if storage == "s3" else f"pipeline, broker log in {storage}"))
        if args.tracing:
            sink = OtlpSink()
            try:
                rows.append(run_pipeline(paths, latency_n, args.timeout, name="pipeline, tracing on",
                                         extra_env={"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}))
            finally:
                sink.close()
            progress(f"tracing: the sink got {sink.requests} export requests, {sink.bytes / 1024:.0f} KiB")
        if args.replicas > 1:
            rows.append(run_pipeline(paths, 0, args.timeout, name=f"pipeline, {args.replicas} replicas",
                                     replicas=args.replicas))
    if "rapidocr" not in args.skip:
        progress("rapidocr: loading models ...")
        rows.append(run_serially("rapidocr 3.10 in-process", rapidocr_reader(), paths, "1 thread, no cls"))
    if "tesseract" not in args.skip:
        binary = shutil.which("tesseract")
        if binary is None:
            progress("tesseract: not installed (Debian package tesseract-ocr): skipped")
        else:
            version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
            rows.append(run_serially("tesseract CLI", tesseract_reader(binary), paths, f"{version}, psm 3, 1 thread"))
    print_tables(rows, len(paths), truth, args)
    if "pipeline" not in args.skip and rounds:
        print_rounds(rounds, len(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
