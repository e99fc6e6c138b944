"""The demo: the whole pipeline on the embedded stack, end to end, in one command.

Starts the embedded Kafka API (tansu), S3 (SeaweedFS) and PostgreSQL, runs the four stages and
the query API as separate processes, submits every file of ``--input`` (default: ``samples/``), waits for each
document's ``ocr.results.v1`` event, prints its text and where it is stored, writes all results
to ``<state>/results.jsonl`` (``bench/bench_pipeline.py`` scores them) and stops everything.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import time
from pathlib import Path

import click

from ocrstream.client.client import Client
from ocrstream.contracts import events
from ocrstream.devstack import EmbeddedStack
from ocrstream.ocr.document import VISIBLE_PAGE_BREAK
from ocrstream.ops.launcher import StageProcesses, free_port
from ocrstream.settings import Settings
from ocrstream.streaming.auth import create_key
from ocrstream.streaming.paths import iter_paths
from ocrstream.streaming.results import fetch_documents

#: The checkout's sample documents (``samples/`` beside ``ocrstream/``); absent after ``pip install``,
#: where ``ocrstream demo --input DIR`` names the documents explicitly.
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def demo_env(stack_env: dict[str, str]) -> dict[str, str]:
    """Environment of the stage processes: the stack's endpoints plus demo-friendly ports."""
    env = {**os.environ, **stack_env}
    env.update({
        "OCRSTREAM_HTTP_PORT": str(free_port()),
        "OCRSTREAM_QUERY_PORT": str(free_port()),
        "OCRSTREAM_SESSION_TIMEOUT_MS": "6000",
        "OCRSTREAM_HEARTBEAT_INTERVAL_MS": "1000",
        "OCRSTREAM_METRICS_PORT": "0",
        "OMP_WAIT_POLICY": "PASSIVE",
    })
    return env


#: Sample files that are instances of a shipped fixed-layout template.
SAMPLE_TEMPLATES = {"lab-report.jpg": "lab-report"}


def run_demo(input_dir: Path, state_dir: Path, timeout_s: float) -> int:
    """Run the demo; returns the process exit code (0: every document has a result)."""
    paths = iter_paths([input_dir])
    if not paths:
        raise click.ClickException(f"no files under {input_dir}")
    shutil.rmtree(state_dir, ignore_errors=True)
    started = time.monotonic()
    with EmbeddedStack(state_dir / "stack", log=lambda m: click.echo(f"  {m}")) as stack:
        endpoints = stack.start()
        env = demo_env(endpoints.as_env())
        keys_file = state_dir / "api-keys.jsonl"  # the demo's own key for the HTTP doors
        api_key = create_key(keys_file, "demo")
        env["OCRSTREAM_API_KEYS_FILE"] = str(keys_file.resolve())
        settings = Settings.from_env(env)
        click.echo(f"stages: ingest, preprocess, recognize, store, and the query API (logs in {state_dir / 'logs'})")
        cpu_before = _children_cpu_s()
        with StageProcesses(env, state_dir / "logs") as stages:
            click.echo(f"submitting {len(paths)} document(s) from {input_dir}")
            templates = SAMPLE_TEMPLATES if input_dir.resolve() == SAMPLES.resolve() else {}
            click.echo(f"the HTTP door meanwhile: curl -H 'Authorization: Bearer {api_key}' "
                       f"-F file=@samples/receipt.png http://127.0.0.1:{env['OCRSTREAM_HTTP_PORT']}/v1/documents")
            receipts, results = asyncio.run(_submit_and_wait(settings, stages, paths, templates, timeout_s))
            rows = asyncio.run(fetch_documents(settings, [r.document_id for r in receipts]))
        stages_cpu_s = _children_cpu_s() - cpu_before  # the four stage processes, now reaped
        out = state_dir / "results.jsonl"
        with out.open("w") as f:
            for r in receipts:
                f.write(json.dumps({"filename": r.filename, **results[r.document_id]}) + "\n")
        print_report(receipts, results, rows, settings)
        done = sum(r["status"] == "done" for r in results.values())
        refused = sum(r.error is not None for r in receipts)
        click.echo(f"\n{done} done, {len(results) - done - refused} failed, {refused} refused at the door, "
                   f"{len(paths)} submitted, "
                   f"{time.monotonic() - started:.1f} s wall in all; results in {out}")
        click.echo(f"CPU of the four stage processes: {stages_cpu_s:.1f} s "
                   f"({stages_cpu_s / len(paths):.2f} s per document, model loading included)")
    return 0


async def _submit_and_wait(settings: Settings, stages: StageProcesses, paths: list[Path],
                           templates: dict[str, str], timeout_s: float) -> tuple[list, dict]:
    """Submit ``paths``, wait for every result (stopping early if a stage process dies);
    the receipts and ``{document_id: results event}``."""
    async with Client(settings) as client:
        receipts = await client.submit_paths(paths, templates=templates)
        with click.progressbar(length=len(receipts), label="processing") as bar:
            waiter = asyncio.create_task(client.wait(receipts, timeout_s=timeout_s,
                                                     on_result=lambda e: bar.update(1)))
            while not waiter.done():
                await asyncio.wait({waiter}, timeout=1)
                if dead := stages.dead():
                    waiter.cancel()
                    stage = next(iter(dead))
                    raise click.ClickException(f"stage {stage} exited ({dead[stage]}):\n"
                                               f"{stages.log_tail(stage)}")
            outcomes, missing = waiter.result()
    if missing:
        raise click.ClickException(f"{len(missing)} document(s) without a result after {timeout_s:.0f} s: "
                                   + ", ".join(r.filename or r.document_id for r in missing[:5]))
    return receipts, {o.receipt.document_id: events.to_json_object(o.result) for o in outcomes}


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_report(receipts: list, results: dict, rows: dict, settings: Settings) -> None:
    """Each document's status, text (or error) and where it is stored."""
    for r in receipts:
        if r.error is not None:
            click.secho(f"\n== {r.filename}  [refused]", bold=True)
            click.echo(f"refused at the door: {type(r.error).__name__}: {r.error}")
            continue
        event, row = results[r.document_id], rows.get(r.document_id, {})
        click.secho(f"\n== {r.filename}  [{event['status']}]  document {r.document_id}", bold=True)
        if event["status"] == "done" and any("field" in reg for reg in event.get("regions", [])):
            click.echo(f"template {event.get('document', {}).get('template')}:")
            for reg in event.get("regions", []):
                click.echo(f"  {reg['field']['name']:<14} {reg['text']!r}  (confidence {reg['confidence']:.2f})")
        elif event["status"] == "done":
            click.echo(event["text"].replace("\f", VISIBLE_PAGE_BREAK) or "(no text found)")
        else:
            e = event["error"]
            click.echo(f"error in {e['stage']}: {e['type']}: {e['message']}")
        click.echo(f"-> PostgreSQL documents/{r.document_id} (status {row.get('status')}, "
                   f"{row.get('regions', 0)} regions); original "
                   f"{'s3://' + settings.s3_bucket + '/' + r.object_key if r.object_key else '-'}; "
                   f"results event on ocr.results.v1")
