"""Running and probing the pipeline's processes: ``run`` (``--shadow SHA``: a candidate model beside
recognize), ``probe``, ``lag-exporter``, ``settings``."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import click

from ocrstream.cli.app import get_settings, main
from ocrstream.contracts.stages import PROCESSES


def _stage(name: str):
    from ocrstream.streaming.stage import Stage

    cls: type[Stage]
    if name == "ingest":
        from services.ingest.stage import IngestStage as cls
    elif name == "preprocess":
        from services.preprocess.stage import PreprocessStage as cls
    elif name == "recognize":
        from services.recognize.stage import RecognizeStage as cls
    else:
        from services.store.stage import StoreStage as cls
    return cls(get_settings())


@main.command()
@click.argument("stage", type=click.Choice(list(PROCESSES)))
@click.option("--shadow", "shadow", default=None, metavar="SHA",
              help="With recognize: read live regions with registered model SHA in a consumer group of its own, "
                   "readings to PostgreSQL only (compare with `ocrstream model compare SHA`).")
def run(stage: str, shadow: str | None) -> None:
    """Run one pipeline STAGE, or the query API (``api``), until SIGTERM/SIGINT (configured by
    OCRSTREAM_* variables)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ocrstream.errors import ConfigurationError

    if shadow is not None and stage != "recognize":
        raise click.UsageError("--shadow goes with `run recognize`")
    try:
        if shadow is not None:
            instance = _shadow_stage(shadow)
        else:
            instance = get_settings() if stage == "api" else _stage(stage)
    except ConfigurationError as exc:
        click.echo(f"ocrstream run {stage}: {exc}", err=True)
        sys.exit(2)
    if stage == "api":
        from services.store.api import run_api

        run_api(instance)
        return
    from ocrstream.streaming.stage import run_stage

    run_stage(instance)


def _shadow_stage(sha: str):
    """The shadow stage of registered model ``sha`` (resolved to its full sha256 first, so the
    consumer group is named by it). Raises ConfigurationError for an unknown model."""
    import asyncio

    from ocrstream.errors import ConfigurationError
    from ocrstream.storage.models import UnknownModelError, resolve
    from services.recognize.shadow import ShadowStage

    settings = get_settings()
    try:
        found = asyncio.run(resolve(settings, sha))
    except UnknownModelError as exc:
        raise ConfigurationError(f"--shadow {sha}: {exc}") from None
    return ShadowStage(settings, found.sha256)


@main.command()
@click.argument("path", default="/readyz")
@click.option("--stage", type=click.Choice(list(PROCESSES)), default=None,
              help="Probe this process's port (ingest 9101 ... api 9105, or OCRSTREAM_METRICS_PORT).")
@click.option("--port", default=None, type=int, help="Port (default: the stage's, else OCRSTREAM_METRICS_PORT).")
@click.option("--timeout", default=4.0, show_default=True, help="Seconds to wait for the answer.")
def probe(path: str, stage: str | None, port: int | None, timeout: float) -> None:
    """Exit 0 if http://127.0.0.1:PORT/PATH answers 200, else 1 (container health checks)."""
    import urllib.error
    import urllib.request

    from ocrstream.contracts.stages import metrics_port

    configured = get_settings().metrics_port
    port = port or (metrics_port(stage, configured) if stage else configured)
    if not port:
        raise click.UsageError("which process? --stage ingest|preprocess|recognize|store|api (ports 9101-9105), "
                               "--port N, or OCRSTREAM_METRICS_PORT")
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

    from ocrstream.streaming.lag import LagExporter, LagReader

    settings = get_settings()
    exporter = LagExporter(settings)

    async def print_once() -> None:
        async with LagReader(settings) as reader:
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


@main.command("settings")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per setting.")
@click.option("--get", "name", default=None, metavar="NAME",
              help="Print one setting's value alone (kafka_bootstrap or OCRSTREAM_KAFKA_BOOTSTRAP), for scripts.")
def settings_cmd(as_json: bool, name: str | None) -> None:
    """Every OCRSTREAM_* setting by group: its value in this environment and what it does (secrets masked)."""
    from ocrstream.settings import describe

    rows = describe(get_settings())
    if name is not None:
        row = next((r for r in rows if name in (r["name"], r["env"])), None)
        if row is None:
            raise click.BadParameter(f"no setting {name!r} (`ocrstream settings` lists them)", param_hint="--get")
        click.echo("" if row["value"] is None else row["value"])
        return
    group = None
    for row in rows:
        if as_json:
            click.echo(json.dumps(row, default=str))
            continue
        if row["group"] != group:
            group = row["group"]
            click.echo(f"\n{group}")
        click.echo(f"  {row['env']}={row['value'] if row['value'] is not None else ''}")
        click.echo(f"      {row['description']}")
