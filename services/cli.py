"""The ``ocrstream`` command line (click)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import click

from services.core.settings import DEV_ENV_FILE, get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]


def _stage(name: str):
    if name == "ingest":
        from services.ingest.stage import IngestStage as cls
    elif name == "preprocess":
        from services.preprocess.stage import PreprocessStage as cls
    elif name == "recognize":
        from services.recognize.stage import RecognizeStage as cls
    else:
        from services.store.stage import StoreStage as cls
    return cls(get_settings())


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def main(verbose: bool) -> None:
    """ocrstream: event-driven streaming OCR (Kafka stages, S3, ONNX Runtime, PostgreSQL)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


@main.command()
@click.argument("stage", type=click.Choice(["ingest", "preprocess", "recognize", "store"]))
def run(stage: str) -> None:
    """Run one pipeline STAGE until SIGTERM/SIGINT (configured by OCRSTREAM_* variables)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from services.core.stage import run_stage

    run_stage(_stage(stage))


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Wait for each document's result and print it.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--template", default=None, help="Fixed-layout template of these documents (e.g. lab-report).")
def submit(paths: tuple[Path, ...], wait: bool, timeout: float, template: str | None) -> None:
    """Submit files (or every file under folders) to the pipeline."""
    from services.demo import submit_all
    from services.ingest.stage import iter_paths
    from services.results import wait_for_results

    settings = get_settings()
    files = iter_paths(paths)
    receipts = asyncio.run(submit_all(settings, files, template))
    for r in receipts:
        state = (f"rejected: {type(r.error).__name__}: {r.error}" if r.error
                 else "reused: same bytes as this done document" if r.reused
                 else f"s3://{settings.s3_bucket}/{r.object_key}")
        click.echo(f"{r.document_id}  {r.filename}  {state}")
    if wait:
        with click.progressbar(length=len(receipts), label="processing", file=sys.stderr) as bar:
            results = asyncio.run(wait_for_results(settings, [r.document_id for r in receipts],
                                                   timeout_s=timeout, on_result=lambda e: bar.update(1)))
        for r in receipts:
            event = results[r.document_id]
            click.secho(f"\n== {r.filename} [{event['status']}] {r.document_id}", bold=True)
            click.echo(event["text"] if event["status"] == "done" else event["error"]["message"])


@main.command("tail-results")
@click.option("--group", default=None, help="Consumer group (default: a new one, from the beginning).")
@click.option("--idle-timeout", default=None, type=float, help="Exit after this many idle seconds.")
def tail_results(group: str | None, idle_timeout: float | None) -> None:
    """Print ocr.results.v1 events as JSON lines (an example downstream consumer)."""
    from services.results import format_result, iter_results

    async def tail() -> None:
        async for event in iter_results(get_settings(), group_id=group, timeout_s=idle_timeout):
            click.echo(format_result(event))

    asyncio.run(tail())


@main.command()
@click.argument("path", default="/readyz")
@click.option("--port", default=None, type=int, help="Port (default: OCRSTREAM_METRICS_PORT, else 9100).")
@click.option("--timeout", default=4.0, show_default=True, help="Seconds to wait for the answer.")
def probe(path: str, port: int | None, timeout: float) -> None:
    """Exit 0 if http://127.0.0.1:PORT/PATH answers 200, else 1 (container health checks)."""
    import urllib.error
    import urllib.request

    port = port or get_settings().metrics_port or 9100
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
            click.echo(resp.read(2000).decode("utf-8", "replace"))
    except (urllib.error.URLError, OSError) as exc:
        body = exc.read(2000).decode("utf-8", "replace") if isinstance(exc, urllib.error.HTTPError) else ""
        click.echo(f"{path} on :{port}: {exc} {body}", err=True)
        sys.exit(1)


@main.command("lag-exporter")
@click.option("--port", default=None, type=int, help="Port of /metrics (default OCRSTREAM_LAG_EXPORTER_PORT, 9108).")
@click.option("--once", is_flag=True, help="Print each group's lag once and exit (no server).")
def lag_exporter(port: int | None, once: bool) -> None:
    """Export every stage's consumer-group lag from outside the stages (committed offsets vs
    the fetch high-water mark), also while a stage is down: ocrstream_group_lag."""
    import signal

    from prometheus_client import start_http_server

    from services.core.lag import LagExporter, LagReader

    settings = get_settings()
    exporter = LagExporter(settings)

    async def print_once() -> None:
        async with LagReader(settings.kafka_bootstrap) as reader:
            for stage, topics in exporter.stages.items():
                rows = await reader.read(exporter.group(stage), topics)
                if not rows:
                    click.echo(f"{exporter.group(stage)}  {','.join(topics)}: no such topic yet")
                for row in rows:
                    click.echo(f"{exporter.group(stage)}  {row.topic}[{row.partition}]  committed={row.committed}"
                               f"  highwater={row.highwater}  lag={row.lag}")

    async def serve() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        await exporter.run(stop)

    if once:
        asyncio.run(print_once())
        return
    port = settings.lag_exporter_port if port is None else port
    start_http_server(port, addr="0.0.0.0")
    click.echo(f"lag exporter: http://0.0.0.0:{port}/metrics, every {settings.lag_exporter_interval_s:g} s",
               err=True)
    asyncio.run(serve())


@main.group()
def dev() -> None:
    """The embedded local stack (Kafka API, S3, PostgreSQL) from registry packages."""


@dev.command("up")
@click.option("--state-dir", default=".ocrstream/dev", type=click.Path(path_type=Path), show_default=True)
@click.option("--kafka-storage", type=click.Choice(["memory", "s3"]), default="memory", show_default=True,
              help="Where the broker keeps topics: memory, or the embedded S3 (survives restarts).")
def dev_up(state_dir: Path, kafka_storage: str) -> None:
    """Start the stack in the background and write its settings to STATE_DIR/stack.env."""
    from services.devstack import EmbeddedStack, read_running

    endpoints = read_running(state_dir)
    if endpoints is None:
        endpoints = EmbeddedStack(state_dir, kafka_storage=kafka_storage).start()
    env_file = state_dir / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in endpoints.as_env().items()))
    click.echo(f"stack up; settings in {env_file} (read automatically from {DEV_ENV_FILE})")
    for key, value in endpoints.as_env().items():
        click.echo(f"export {key}={value}")


@dev.command("down")
@click.option("--state-dir", default=".ocrstream/dev", type=click.Path(path_type=Path), show_default=True)
def dev_down(state_dir: Path) -> None:
    """Stop the stack started by ``dev up`` (by its recorded PIDs)."""
    from services.devstack import stop_running

    click.echo("stack stopped" if stop_running(state_dir) else "no stack running")


@main.group()
def model() -> None:
    """Model tools (TrOCR export)."""


@model.command("export-trocr")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path())
@click.option("--quantize", is_flag=True, help="Also write int8 dynamically quantised models (accuracy cost measured).")
@click.option("--opset", default=18, show_default=True)
@click.option("--keep-split", is_flag=True, help="Keep decoder + decoder-with-past beside the merged decoder.")
@click.option("--overwrite", is_flag=True)
def export_trocr_cmd(src: str, out: str, quantize: bool, opset: int, keep_split: bool, overwrite: bool) -> None:
    """Export a TrOCR checkpoint folder SRC to ONNX in OUT (needs `pip install 'ocrstream[export]'`)."""
    try:
        from services.recognize.trocr_export import export_trocr
    except ImportError as exc:
        raise click.ClickException(f"{exc}: install the exporter with pip install 'ocrstream[export]'") from None
    export_trocr(src, out, quantize=quantize, opset=opset, keep_split=keep_split, overwrite=overwrite)


@main.command()
@click.option("--input", "input_dir", default=REPO_ROOT / "samples", show_default=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of documents to process (e.g. ../shared/data/sroie-dev/pages/img).")
@click.option("--state-dir", default=".ocrstream/demo", type=click.Path(path_type=Path), show_default=True)
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds to wait for all results.")
def demo(input_dir: Path, state_dir: Path, timeout: float) -> None:
    """Run the whole pipeline on the embedded stack over INPUT, print every document's text."""
    from services.demo import run_demo

    sys.exit(run_demo(input_dir, state_dir, timeout))


if __name__ == "__main__":
    main()
