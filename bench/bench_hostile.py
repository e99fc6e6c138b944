"""The hostile corpus of issue 8 on the embedded stack: one table, one line per (input, door).

    nice -n 10 .venv/bin/python bench/bench_hostile.py                 # every case
    nice -n 10 .venv/bin/python bench/bench_hostile.py --cases png-bomb,pdf-bomb,control-after
    .venv/bin/python bench/bench_hostile.py --json out.json             # the rows as JSON as well

Starts the embedded stack (tansu, SeaweedFS, PostgreSQL) and the four stage processes with the
test budgets (tools/hostile_harness.py ``TEST_LIMITS``: 8 MiB per document, 40 Mpx per page,
100 Mpx per document), creates an API key (``ocrstream apikey create``), submits every case of
tools/hostile_corpus.py through its doors one at a time and prints: input, door, expected and
observed outcome, error type, seconds to resolve, peak RSS (MiB) of each stage's process tree
while that input was handled; then each stage's PID before/after and peak memory, against the
issue's goals (0 crashes, preprocess <= 1.5 GiB, every bad document resolved within 30 s).
Exits 1 when any outcome differs from its expectation, a stage process died or a stage's consumer
group still has uncommitted input 30 s after the last case, else 0.
Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ocrstream.devstack import EmbeddedStack  # noqa: E402
from ocrstream.ops.launcher import StageProcesses  # noqa: E402
from ocrstream.settings import Settings  # noqa: E402
from tools.hostile_corpus import corpus  # noqa: E402
from tools.hostile_harness import HostileRun, create_api_key, hostile_env  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", help="comma-separated case names (default: all, in table order)")
    parser.add_argument("--json", type=Path, help="also write the rows and summary as JSON here")
    parser.add_argument("--keep", type=Path, help="work folder to keep (stage logs, CLI files); default: a temp dir")
    args = parser.parse_args()
    cases = corpus()
    if args.cases:
        wanted = args.cases.split(",")
        unknown = set(wanted) - {c.name for c in cases}
        if unknown:
            parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.name in wanted]
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    with tempfile.TemporaryDirectory(prefix="ocrs-hostile-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with EmbeddedStack(workdir / "stack", log=lambda m: print(f"  {m}", file=sys.stderr)) as stack:
            env = hostile_env({**os.environ, **stack.start().as_env()}, workdir)
            api_key, note = create_api_key(env)
            if api_key is None:
                print(f"no API key ({note.splitlines()[-1] if note else 'no output'}): HTTP without one",
                      file=sys.stderr)
            with StageProcesses(env, workdir / "logs") as stages:
                pids = {stage: proc.pid for stage, proc in stages.procs.items()}
                run = HostileRun(Settings.from_env(env), env, pids, api_key, workdir,
                                 log=lambda line: print(line, file=sys.stderr))
                report = asyncio.run(run.run(cases))
    print(report.table())
    print()
    print(report.summary())
    if args.json:
        args.json.write_text(json.dumps(report.as_json(), indent=1, default=str))
    return 1 if report.mismatches or report.crashed_stages or report.stuck_stages else 0


if __name__ == "__main__":
    sys.exit(main())
