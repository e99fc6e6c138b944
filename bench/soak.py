"""Soak: N documents through the embedded stack at a steady rate; every process's memory (PSS) and
open file descriptors sampled; growth after the warm-up; 0 lost and 0 duplicated checked.

    nice -n 10 .venv/bin/python bench/soak.py                                 # 10,000 documents, 3/s (~1 h)
    .venv/bin/python bench/soak.py --docs 400 --rate 2 --warmup 100 --sample-s 5   # a short run

Starts its own embedded stack (tansu, SeaweedFS, PostgreSQL) and the pipeline's processes (the four
stages and the query API) and submits, through the CLI, HTTP and raw-topic doors at once
(:mod:`tools.loadgen`), a mix dealt in a fixed order:

* small rendered pages with distinct text (most documents; :func:`tools.loadgen.make_documents`,
  every 50th a truncated JPEG that must fail);
* every ``--receipt-every``-th a real receipt scan (``../shared/data/sroie-*/``, cycled; the
  repository's ``samples/`` when that folder is absent);
* every ``--pdf-every``-th a ``--pdf-pages``-page PDF of rendered pages;
* every ``--hostile-every``-th a case of the hostile corpus (:mod:`tools.hostile_corpus`) that is
  accepted at every door: odd but valid files that must be ``done``, bombs, truncated and
  corrupt files that must fail in preprocess with their typed error.

Every ``--sample-s`` seconds each process is sampled with psutil: PSS (``memory_full_info().pss``,
its shared pages divided among the processes sharing them) and open file descriptors, summed over
the process and its children (the decoder workers and their forkserver for preprocess). After the
last document is final the run is audited (:func:`ocrstream.ops.audit.audit`): every acknowledged
submission has its row and results event, as expected, none published twice.

Printed: the samples (CSV with ``--csv``), then per process the PSS and fds when the warm-up ended
(the first sample with ``--warmup`` documents final), at the end, their largest value after the
warm-up, growth in % (goal: <= 5 % per process after the first 1,000), and the least-squares
slope of PSS per 1,000 documents after the warm-up, the windowed growth (medians of the first and
last 10 % of the samples after the warm-up: a process whose memory swings with the pages in hand is
judged on its level), the trend growth (the least-squares line's rise from the warm-up to the end,
over its value at the warm-up: every sample counts) and the USS at both ends; then the audit. Exits 1 when a document was
lost, duplicated or ended otherwise than expected, or a process died.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ocrstream.devstack import EmbeddedStack  # noqa: E402
from ocrstream.ops.audit import DONE, Expectation, audit, final_count, wait_until_drained  # noqa: E402
from ocrstream.ops.launcher import PROCESSES, StageProcesses, free_port  # noqa: E402
from ocrstream.settings import Settings  # noqa: E402
from tools.hostile_corpus import Budget, Door, corpus, pdf_of, text_page  # noqa: E402
from tools.loadgen import Document, LoadGenerator, make_documents  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
GOAL_GROWTH_PCT = 5.0


@dataclass
class Sample:
    """One sampling round: seconds since the start, documents acknowledged and final, per process
    PSS (MiB) and open fds (``None``: the process is gone)."""

    t_s: float
    acked: int
    final: int
    pss_mib: dict[str, float | None] = field(default_factory=dict)
    fds: dict[str, int | None] = field(default_factory=dict)
    uss_mib: dict[str, float | None] = field(default_factory=dict)
    own_pss_mib: dict[str, float | None] = field(default_factory=dict)  # the process alone, children excluded


def tree_usage(pid: int) -> tuple[float, float, int, float] | None:
    """(PSS MiB, USS MiB, open fds) of process ``pid`` and all its descendants, and the PSS MiB of
    ``pid`` alone; None when it is gone. USS (pages only this process maps) is not moved by other processes mapping or
    unmapping the same libraries, which PSS is (a shared page's cost is split among them)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return None
    pss, uss, fds, own = 0, 0, 0, 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            pss, uss = pss + info.pss, uss + info.uss
            own = info.pss if proc is root else own
            fds += proc.num_fds()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # a worker recycled meanwhile
    return pss / 2**20, uss / 2**20, fds, own / 2**20


def receipts() -> list[tuple[str, bytes]]:
    """Real receipt scans (../shared, cycled), else the repository's sample pages."""
    paths = sorted(SHARED.glob("sroie-*/pages/img/*.jpg")) + sorted(SHARED.glob("sroie-kie/img/*.jpg"))
    if not paths:
        paths = [p for p in sorted((REPO / "samples").iterdir()) if p.name != "truncated.jpg"]
    return [(p.name, p.read_bytes()) for p in paths]


def hostile_documents(settings: Settings) -> list[Document]:
    """The hostile corpus's cases that every door accepts (bytes sized from ``settings``' budget),
    expected as at the HTTP door (past ingest the door makes no difference)."""
    budget = Budget.from_settings(settings)
    chosen = []
    for case in corpus():
        expect = case.expect.get(Door.HTTP)
        if (case.control or expect is None or any(e.outcome == "refused" for e in case.expect.values())
                or case.name.startswith(("raw-", "http-", "filename-", "at-limit"))):
            continue
        want = DONE if expect.outcome == "done" else Expectation("failed", expect.error_type)
        chosen.append(Document(case.default_filename(), case.make(budget), want))
    return chosen


def mix(args: argparse.Namespace, settings: Settings) -> list[Document]:
    """The run's documents in submission order (module doc); every name is unique (raw-door keys)."""
    small = iter(make_documents(args.docs, seed=args.seed))
    scans, hostile = receipts(), hostile_documents(settings)
    docs = []
    for i in range(args.docs):
        if args.pdf_every and i % args.pdf_every == args.pdf_every - 1:
            pages = [text_page(f"SOAK PDF {i} PAGE {p + 1}", f"TOTAL RM {i % 97}.{p:02d}") for p in range(args.pdf_pages)]
            docs.append(Document(f"soak{i:05d}.pdf", pdf_of(*pages)))
        elif args.hostile_every and i % args.hostile_every == args.hostile_every - 1:
            case = hostile[(i // args.hostile_every) % len(hostile)]
            docs.append(Document(f"soak{i:05d}-{case.name}", case.data, case.expected))
        elif args.receipt_every and i % args.receipt_every == args.receipt_every - 1:
            name, data = scans[(i // args.receipt_every) % len(scans)]
            docs.append(Document(f"soak{i:05d}-{name}", data))
        else:
            doc = next(small)
            docs.append(Document(f"soak{i:05d}-{doc.name}", doc.data, doc.expected))
    return docs


async def wait_for_door(url: str, log, timeout_s: float = 300) -> None:
    """Wait until the HTTP door answers (the stages are up), so door retries count faults only."""
    import httpx

    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    log(f"{url} did not answer within {timeout_s:g} s; submitting anyway (the doors retry)")


async def sample_until(stages: StageProcesses, gen: LoadGenerator, settings: Settings, samples: list[Sample],
                       every_s: float, stop: asyncio.Event, log) -> None:
    """Append a :class:`Sample` every ``every_s`` seconds until ``stop`` (and once more then)."""
    start = time.monotonic()
    while True:
        ids = [s.document_id for s in gen.submissions]
        try:
            final = await final_count(settings, ids) if ids else 0
        except Exception as exc:  # noqa: BLE001 - PostgreSQL busy: keep sampling memory
            log(f"final count unavailable: {exc}")
            final = samples[-1].final if samples else 0
        sample = Sample(round(time.monotonic() - start, 1), len(ids), final)
        for name, proc in stages.procs.items():
            usage = tree_usage(proc.pid)
            sample.pss_mib[name] = None if usage is None else round(usage[0], 1)
            sample.uss_mib[name] = None if usage is None else round(usage[1], 1)
            sample.fds[name] = None if usage is None else usage[2]
            sample.own_pss_mib[name] = None if usage is None else round(usage[3], 1)
        samples.append(sample)
        log(f"t={sample.t_s:.0f}s acked={sample.acked} final={sample.final} "
            + " ".join(f"{n}={sample.pss_mib[n]}MiB/{sample.fds[n]}fd" for n in stages.procs))
        if stop.is_set():
            return
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass


def _line(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """(slope, intercept) of the least-squares line through ``(final documents, value)``
    (:func:`statistics.linear_regression`); None when all points have the same documents."""
    if len({x for x, _ in points}) < 2:
        return None
    fit = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
    return fit.slope, fit.intercept


def slope_per_1000(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of value per 1,000 documents over ``(final documents, value)``."""
    line = _line(points)
    return None if line is None else 1000 * line[0]


def trend_growth(points: list[tuple[int, float]]) -> float | None:
    """Growth in % along the least-squares line of value over ``(final documents, value)``: its rise
    from the first point's documents to the last's, over its value at the first. Every sample
    counts, so where two single samples fell in a process's swing does not decide it."""
    line = _line(points)
    if line is None:
        return None
    slope, intercept = line
    first, last = points[0][0], points[-1][0]
    return 100 * slope * (last - first) / (intercept + slope * first)


def growth_table(samples: list[Sample], warmup: int, names: list[str]) -> tuple[str, dict[str, dict]]:
    """The growth table (markdown) and its rows: baseline = the first sample with ``warmup``
    documents final (the last sample if none reached it)."""
    base = next((s for s in samples if s.final >= warmup), samples[-1])
    after = [s for s in samples if s.t_s >= base.t_s]
    end = samples[-1]
    rows, lines = {}, [
        f"baseline: t={base.t_s:.0f} s, {base.final} documents final; end: t={end.t_s:.0f} s, {end.final} final",
        "| process | PSS after warm-up MiB | PSS end MiB | growth end % | max PSS after warm-up MiB | growth max % "
        "| slope MiB / 1,000 docs | windowed growth % | trend growth % | USS after warm-up -> end MiB | USS growth % "
        "| fds after warm-up | fds end | fds max |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        b, e = base.pss_mib.get(name), end.pss_mib.get(name)
        series = [s.pss_mib[name] for s in after if s.pss_mib.get(name) is not None]
        fds = [s.fds[name] for s in after if s.fds.get(name) is not None]
        if b is None or e is None or not series:
            lines.append(f"| {name} | gone | | | | | | | | | | | | |")
            rows[name] = {"gone": True}
            continue
        points = [(s.final, s.pss_mib[name]) for s in after if s.pss_mib.get(name) is not None]
        slope, trend = slope_per_1000(points), trend_growth(points)
        ub, ue = base.uss_mib.get(name), end.uss_mib.get(name)
        row = {"pss_base": b, "pss_end": e, "growth_end_pct": 100 * (e - b) / b, "pss_max": max(series),
               "growth_max_pct": 100 * (max(series) - b) / b, "slope_mib_per_1000": slope,
               "uss_base": ub, "uss_end": ue, "uss_growth_pct": 100 * (ue - ub) / ub if ub and ue else None,
               "windowed_growth_pct": windowed_growth(series), "trend_growth_pct": trend,
               "fds_base": base.fds[name], "fds_end": end.fds[name], "fds_max": max(fds)}
        rows[name] = row
        flag = " (over goal)" if row["growth_end_pct"] > GOAL_GROWTH_PCT else ""
        lines.append(f"| {name} | {b:.0f} | {e:.0f} | {row['growth_end_pct']:+.1f}{flag} | {row['pss_max']:.0f} | "
                     f"{row['growth_max_pct']:+.1f} | {'-' if slope is None else f'{slope:+.1f}'} | "
                     f"{row['windowed_growth_pct']:+.1f} | {'-' if trend is None else f'{trend:+.1f}'} | {_uss(row)} | "
                     f"{row['fds_base']} | {row['fds_end']} | {row['fds_max']} |")
    lines += own_rows(after, names)
    return "\n".join(lines), rows


def own_rows(after: list[Sample], names: list[str]) -> list[str]:
    """Lines for the processes with children (preprocess: its decoder worker, recycled every
    ``OCRSTREAM_DECODE_WORKER_MAX_TASKS`` pages): the stage process alone, children excluded."""
    lines = []
    for name in names:
        own = [s.own_pss_mib[name] for s in after if s.own_pss_mib.get(name) is not None]
        tree = [s.pss_mib[name] for s in after if s.pss_mib.get(name) is not None]
        if own and own != tree:
            lines.append(f"{name}, the stage process alone (children excluded): {own[0]:.0f} -> {own[-1]:.0f} MiB, "
                         f"max {max(own):.0f}, windowed growth {windowed_growth(own):+.1f} %")
    return lines


#: share of the samples after the warm-up whose median is compared, at each end (:func:`windowed_growth`).
WINDOW = 0.1


def windowed_growth(series: list[float], window: float = WINDOW) -> float:
    """Growth in % from the median of the first ``window`` share of ``series`` (at least one sample)
    to the median of its last: a process whose memory moves with the work in hand (preprocess's
    decoder workers: 171-824 MiB in one soak) is judged on its level, not on where two single
    samples fell."""
    k = max(1, round(len(series) * window))
    first, last = statistics.median(series[:k]), statistics.median(series[-k:])
    return 100 * (last - first) / first


def _uss(row: dict) -> str:
    """``base -> end | growth`` of a growth-table row's USS (blank where a sample lacks it)."""
    if row.get("uss_growth_pct") is None:
        return " | "
    return f"{row['uss_base']:.0f} -> {row['uss_end']:.0f} | {row['uss_growth_pct']:+.1f}"


def samples_csv(samples: list[Sample], names: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["t_s", "acked", "final", *(f"{n}_pss_mib" for n in names), *(f"{n}_uss_mib" for n in names),
                     *(f"{n}_fds" for n in names), *(f"{n}_own_pss_mib" for n in names)])
    for s in samples:
        writer.writerow([s.t_s, s.acked, s.final, *(s.pss_mib.get(n) for n in names), *(s.uss_mib.get(n) for n in names),
                         *(s.fds.get(n) for n in names), *(s.own_pss_mib.get(n) for n in names)])
    return out.getvalue()


def read_samples_csv(text: str) -> tuple[list[Sample], list[str]]:
    """(samples, process names) of a :func:`samples_csv` text (runs before the ``own`` columns too)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    names = [key[:-len("_pss_mib")] for key in (rows[0] if rows else {})
             if key.endswith("_pss_mib") and not key.endswith("_own_pss_mib")]

    def value(row: dict, key: str, kind=float):
        return kind(row[key]) if row.get(key) not in (None, "") else None

    samples = [Sample(float(row["t_s"]), int(row["acked"]), int(row["final"]),
                      {n: value(row, f"{n}_pss_mib") for n in names}, {n: value(row, f"{n}_fds", int) for n in names},
                      {n: value(row, f"{n}_uss_mib") for n in names}, {n: value(row, f"{n}_own_pss_mib") for n in names})
               for row in rows]
    return samples, names


async def soak(args: argparse.Namespace, env: dict[str, str], workdir: Path, log) -> dict:
    settings = Settings.from_env(env)
    documents = mix(args, settings)
    log(f"{len(documents)} documents ({sum(d.name.endswith('.pdf') for d in documents)} PDFs of {args.pdf_pages} "
        f"pages), {args.rate:g}/s through {', '.join(args.doors)}")
    samples: list[Sample] = []
    with StageProcesses(env, workdir / "logs") as stages:
        url = f"http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}"
        await wait_for_door(url + "/healthz", log)
        gen = LoadGenerator(settings, url, doors=tuple(args.doors), log=log)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_until(stages, gen, settings, samples, args.sample_s, stop, log))
        started = time.monotonic()
        try:
            submissions = await gen.run(documents, rate_per_s=args.rate)
            submitted_s = time.monotonic() - started
            drained_s = await wait_until_drained(settings, [s.document_id for s in submissions],
                                                 timeout_s=args.drain_timeout_s)
        finally:
            stop.set()
            await sampler
        dead = stages.dead()
        report = await audit(settings, {s.document_id: s.expected for s in submissions})
    names = list(stages.procs)
    table, rows = growth_table(samples, args.warmup, names)
    return {"table": table, "rows": rows, "samples": samples, "names": names, "audit": report, "dead": dead,
            "submitted_s": submitted_s, "drained_s": drained_s, "retries": gen.retries}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=10_000, help="documents to submit (default 10,000)")
    parser.add_argument("--rate", type=float, default=3.0, help="documents per second, all doors together")
    parser.add_argument("--warmup", type=int, default=None,
                        help="documents final before the baseline sample (default 1,000, or a quarter of --docs)")
    parser.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--receipt-every", type=int, default=10, help="every k-th document a receipt scan (0: none)")
    parser.add_argument("--pdf-every", type=int, default=100, help="every k-th document a multi-page PDF (0: none)")
    parser.add_argument("--pdf-pages", type=int, default=8, help="pages of each PDF")
    parser.add_argument("--hostile-every", type=int, default=40, help="every k-th a hostile-corpus case (0: none)")
    parser.add_argument("--doors", default="cli,http,raw", help="doors to submit through (comma list)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--drain-timeout-s", type=float, default=1800.0,
                        help="seconds to wait after the last submission for every document to be final")
    parser.add_argument("--csv", type=Path, help="write the samples as CSV here")
    parser.add_argument("--json", type=Path, help="write the table rows, audit and timings as JSON here")
    parser.add_argument("--keep", type=Path, help="work folder to keep (stack data, stage logs); default: a temp dir")
    parser.add_argument("--table-from", type=Path, metavar="CSV",
                        help="print the growth table of a run's --csv again (with --warmup) and exit; no stack")
    args = parser.parse_args()
    args.doors = args.doors.split(",")
    if args.warmup is None:
        args.warmup = min(1000, args.docs // 4)
    if args.table_from:
        samples, names = read_samples_csv(args.table_from.read_text())
        print(growth_table(samples, args.warmup, names)[0])
        return 0
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    def log(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="ocrs-soak-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with EmbeddedStack(workdir / "stack", log=log) as stack:
            env = {**os.environ, **stack.start().as_env(),
                   "OCRSTREAM_HTTP_PORT": str(free_port()), "OCRSTREAM_QUERY_PORT": str(free_port()),
                   "OCRSTREAM_METRICS_PORT": "0", "OCRSTREAM_ORT_THREADS": "1",
                   "OCRSTREAM_SESSION_TIMEOUT_MS": "6000", "OCRSTREAM_HEARTBEAT_INTERVAL_MS": "1000"}
            result = asyncio.run(soak(args, env, workdir, log))
    report = result["audit"]
    if args.csv:
        args.csv.write_text(samples_csv(result["samples"], result["names"]))
    print(f"soak: {args.docs} documents at {args.rate:g}/s; submitted in {result['submitted_s']:.0f} s, "
          f"drained {result['drained_s']:.0f} s later; door retries {result['retries']}; "
          f"processes {', '.join(PROCESSES)}")
    print(result["table"])
    print(f"audit: {report.summary()}")
    lost, duplicated = len(report.lost), report.duplicated
    print(f"lost {lost}, duplicated {duplicated}, wrong outcome {len(report.wrong)}, processes died: "
          f"{result['dead'] or 'none'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": result["rows"], "audit": asdict(report), "dead": result["dead"],
                                         "submitted_s": result["submitted_s"], "drained_s": result["drained_s"]},
                                        indent=1, default=str))
    return 1 if lost or duplicated or report.wrong or result["dead"] else 0


if __name__ == "__main__":
    sys.exit(main())
