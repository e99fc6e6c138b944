"""The ``ocrstream`` command line (click)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import click

from ocrstream.contracts.stages import PROCESSES


def get_settings():
    """The process's :class:`~ocrstream.settings.Settings` (pydantic is imported on first use,
    not at start-up: ``--help`` and usage errors answer without it, issue 15)."""
    from ocrstream.settings import get_settings as process_settings

    return process_settings()


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


#: Libraries whose INFO lines are noise to a user (fontTools: ~45 lines per searchable-PDF export);
#: shown with ``-v``.
CHATTY_LOGGERS = ("aiokafka", "httpx", "fontTools", "ocrmypdf", "pikepdf")


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.version_option(package_name="ocrstream", prog_name="ocrstream")
def main(verbose: bool) -> None:
    """ocrstream: event-driven streaming OCR (Kafka stages, S3, ONNX Runtime, PostgreSQL)."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


@main.command()
@click.argument("stage", type=click.Choice(list(PROCESSES)))
def run(stage: str) -> None:
    """Run one pipeline STAGE, or the query API (``api``), until SIGTERM/SIGINT (configured by
    OCRSTREAM_* variables)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ocrstream.errors import ConfigurationError

    try:
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


def _quiet_clients() -> None:
    """Client commands report connection failures themselves (one line): unless -v, the Kafka
    client's own connection errors are not logged."""
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


#: Exit codes of ``submit`` and ``status`` (click itself uses 2 for usage errors).
EXIT_FAILED, EXIT_NO_STACK, EXIT_TIMEOUT = 1, 3, 4


#: ``submit --via auto`` uses the HTTP door for at most this many files (more: Kafka/S3 directly,
#: all submitted before any is waited for).
HTTP_DOOR_MAX_FILES = 16


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--wait/--no-wait", default=False, help="Wait for each document's result and print it.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait with --wait.")
@click.option("--template", default=None, help="Fixed-layout template of these documents (e.g. lab-report).")
@click.option("--via", type=click.Choice(["auto", "http", "kafka"]), default="auto", show_default=True,
              help=f"http: the ingest stage's HTTP door (OCRSTREAM_INGEST_URL); kafka: S3 and the broker "
                   f"directly; auto: http when the door answers and at most {HTTP_DOOR_MAX_FILES} files are given.")
@click.option("--callback-url", default=None,
              help="Completion webhook: a signed POST of each document's result summary (README \"Webhooks\").")
def submit(paths: tuple[Path, ...], wait: bool, timeout: float, template: str | None, via: str,
           callback_url: str | None) -> None:
    """Submit files (or every file under folders) to the pipeline.

    Exit status: 0 when every document was accepted (with --wait: is done); 1 when any was
    rejected or failed (its stage and error type are printed); 3 when no stack answers;
    4 when --timeout passed before every result came.
    """
    from ocrstream.streaming.paths import iter_paths

    files = iter_paths(paths)
    if not files:
        raise click.ClickException(f"no files under {', '.join(map(str, paths))}")
    settings = get_settings()
    if via != "kafka":
        from ocrstream.client.http_submit import DoorRefusedError, DoorUnavailableError, HttpDoor

        door = HttpDoor(settings)
        door.callback_url = callback_url
        if takes_http_door(via, len(files), door):
            try:
                sys.exit(_submit_http(door, settings, files, wait, timeout, template))
            except DoorUnavailableError as exc:
                click.echo(f"ocrstream: {exc}", err=True)
                sys.exit(EXIT_NO_STACK)
            except DoorRefusedError as exc:
                if via == "http" or exc.status not in (401, 403):
                    click.echo(f"ocrstream: {exc}", err=True)
                    sys.exit(EXIT_FAILED)
                # auto, and the door wants a key this client lacks: the CLI door needs none
    _submit_kafka(settings, files, wait, timeout, template, callback_url)


def takes_http_door(via: str, n_files: int, door) -> bool:
    """Whether ``submit --via VIA`` of ``n_files`` files goes through ``door`` (an
    :class:`ocrstream.client.http_submit.HttpDoor`): ``http`` always, ``kafka`` never, ``auto`` when at
    most HTTP_DOOR_MAX_FILES files are given and the door answers."""
    if via in ("http", "kafka"):
        return via == "http"
    return n_files <= HTTP_DOOR_MAX_FILES and door.available()


def _submit_kafka(settings, files: list[Path], wait: bool, timeout: float, template: str | None,
                  callback_url: str | None = None) -> None:
    """``submit`` through the CLI door (S3 and the broker from this process); exits."""
    from ocrstream.client.client import StackUnreachableError
    from ocrstream.streaming import tracing

    _quiet_clients()
    tracing.configure("submit")  # each document's trace starts here when OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        sys.exit(asyncio.run(_submit(settings, files, wait, timeout, template, callback_url)))
    except StackUnreachableError as exc:
        click.echo(f"ocrstream: {exc.hint}", err=True)
        sys.exit(EXIT_NO_STACK)
    finally:
        tracing.shutdown()  # export the door spans before exiting


def _echo_receipt(settings, document_id: str, filename: str | None, error: tuple[str, str] | None,
                  reused: bool, object_key: str | None) -> None:
    """One line per submitted file: its id, name, and where its original is (or why it was refused)."""
    state = (f"rejected at ingest: {error[0]}: {error[1]}" if error
             else "reused: same bytes as this done document" if reused
             else f"s3://{settings.s3_bucket}/{object_key}")
    click.echo(f"{document_id}  {filename}  {state}")


class Finished(NamedTuple):
    """A document ``submit --wait`` has an answer for: status ``done`` or ``failed`` (then
    ``error`` = ``(stage, error type, message)``)."""

    filename: str
    document_id: str
    status: str
    text: str
    error: tuple[str, str, str] | None = None

    @classmethod
    def of_result(cls, filename: str, result: dict) -> "Finished":
        """From an ``ocr.results.v1`` event as a JSON object."""
        e = result.get("error") or {}
        error = (str(e.get("stage")), str(e.get("type")), str(e.get("message"))) if e else None
        return cls(filename, result["document_id"], result["status"], result.get("text") or "", error)


def _submit_http(door, settings, files: list[Path], wait: bool, timeout: float, template: str | None) -> int:
    """``submit`` through the ingest HTTP door (:mod:`ocrstream.client.http_submit`); the exit code.

    Documents still without a result when the door's longest wait ran out (60 s), and re-used
    ones, are waited for / read as the CLI door does (:meth:`ocrstream.client.client.Client.wait`)."""
    import time

    deadline = time.monotonic() + timeout
    with click.progressbar(length=len(files), label="processing", file=sys.stderr,
                           hidden=len(files) == 1 or not wait) as bar:
        answers = door.submit_all(files, template, wait_s=timeout if wait else 0.0,
                                  on_answer=lambda a: bar.update(1))
    for a in answers:
        _echo_receipt(settings, a.document_id or "-", a.filename, a.error, a.status == "reused", a.object_key)
    if not wait:
        return EXIT_FAILED if any(a.error for a in answers) else 0
    pending = [a for a in answers if a.result is None and not a.error]
    missing: list[tuple[str, str]] = []
    later: dict[str, Finished] = {}
    if pending:
        more, missing = asyncio.run(_wait_direct(settings, pending, max(deadline - time.monotonic(), 1.0)))
        later = {f.document_id: f for f in more}
    finished = [Finished.of_result(a.filename, a.result) if a.result is not None
                else Finished(a.filename, "-", "failed", "", ("ingest", *a.error)) if a.error
                else later.get(a.document_id or "") for a in answers]
    return _report([f for f in finished if f is not None], len(files), missing, timeout)


async def _wait_direct(settings, answers, timeout_s: float):
    """Results of documents the HTTP door accepted but did not answer for (re-used, or slower
    than its longest wait), read as the CLI door reads them; ``(finished, missing)``."""
    from ocrstream.client.client import Client
    from ocrstream.streaming.ingestor import Receipt

    receipts = [Receipt(a.document_id, a.filename, a.object_key, reused=a.status == "reused") for a in answers]
    async with Client(settings) as client:
        outcomes, missing = await client.wait(receipts, timeout_s=timeout_s)
    return [_finished(o) for o in outcomes], [(r.filename, r.document_id) for r in missing]


def _finished(outcome) -> Finished:
    """A :class:`Finished` of a :class:`ocrstream.client.client.Outcome`."""
    e = outcome.result.error
    return Finished(outcome.receipt.filename or "-", outcome.receipt.document_id, outcome.result.status,
                    outcome.result.text, (e.stage, e.type, e.message) if e is not None else None)


async def _submit(settings, files: list[Path], wait: bool, timeout: float, template: str | None,
                  callback_url: str | None = None) -> int:
    """Submit ``files`` through the CLI door (and wait for their results); the exit code."""
    from ocrstream.client.client import Client

    async with Client(settings, wait=wait) as client:
        client.callback_url = callback_url
        receipts = await client.submit_paths(files, template)
        for r in receipts:
            error = (type(r.error).__name__, str(r.error)) if r.error else None
            _echo_receipt(settings, r.document_id, r.filename, error, r.reused, r.object_key)
        if not wait:
            return EXIT_FAILED if any(r.error for r in receipts) else 0
        with click.progressbar(length=len(receipts), label="processing", file=sys.stderr,
                               hidden=len(receipts) == 1) as bar:
            outcomes, missing = await client.wait(receipts, timeout_s=timeout, on_result=lambda e: bar.update(1))
    return _report([_finished(o) for o in outcomes], len(receipts), [(r.filename, r.document_id) for r in missing], timeout)


def _report(finished: list[Finished], total: int, missing: Sequence[tuple[str | None, str]], timeout: float) -> int:
    """Print each finished document and what failed or is missing; the exit code of ``submit --wait``."""
    for f in finished:
        click.secho(f"\n== {f.filename} [{f.status}] {f.document_id}", bold=True)
        click.echo(f.text if f.status == "done" else "failed in {}: {}: {}".format(*(f.error or ("?", "?", ""))))
    failed = [f for f in finished if f.status != "done"]
    if failed:
        click.echo(f"{len(failed)} of {total} document(s) failed: " + "; ".join(
            f"{f.filename} ({f.error[0]}: {f.error[1]})" if f.error else f.filename for f in failed), err=True)
    if missing:
        click.echo(f"no result within {timeout:.0f} s for: " + ", ".join(
            f"{filename} ({document_id})" for filename, document_id in missing) + " (see `ocrstream status`)", err=True)
        return EXIT_TIMEOUT
    return EXIT_FAILED if failed else 0


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
@click.option("--failures", default=5, show_default=True, help="How many of the last failures to list.")
def status(as_json: bool, failures: int) -> None:
    """One screen: the stack's endpoints, each stage's processes, readiness and lag, the last
    hour's documents and failures, and what to do about anything down.

    Exit status: 0 healthy; 1 something is down or not ready; 3 no stack answers at all.
    """
    import json

    from ocrstream.ops.status import collect, render

    _quiet_clients()
    settings = get_settings()
    report = asyncio.run(collect(settings, n_failures=failures))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    elif report.no_stack:
        click.echo(f"ocrstream: no ocrstream stack reachable (Kafka API at {settings.kafka_bootstrap}, S3 and "
                   "PostgreSQL do not answer): start one with `ocrstream dev up` (or set OCRSTREAM_* to your stack)",
                   err=True)
    else:
        render(report)
    sys.exit(report.exit_code)


@main.command("tail-results")
@click.option("--group", default=None, help="Consumer group (default: a new one, from the beginning).")
@click.option("--idle-timeout", default=None, type=float, help="Exit after this many idle seconds.")
def tail_results(group: str | None, idle_timeout: float | None) -> None:
    """Print ocr.results.v1 events as JSON lines (an example downstream consumer)."""
    from ocrstream.streaming.results import format_result, iter_results

    async def tail() -> None:
        async for event in iter_results(get_settings(), group_id=group, timeout_s=idle_timeout):
            click.echo(format_result(event))

    asyncio.run(tail())


@main.command("search")
@click.argument("query", required=False, default="")
@click.option("--status", type=click.Choice(["done", "failed"]), default=None)
@click.option("--since", type=click.DateTime(), default=None, help="Stored at or after (ISO date/time, UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="Stored before (ISO date/time, UTC).")
@click.option("--template", default=None, help="Only documents of this fixed-layout template.")
@click.option("--field", "fields", multiple=True, metavar="NAME:VALUE",
              help="Field value: a template's, or a receipt field's (total:13.10, date:2018-03-01); repeatable.")
@click.option("--limit", default=10, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw result (as GET /v1/search returns it).")
def search_cmd(query: str, status, since, until, template, fields, limit: int, offset: int, as_json: bool) -> None:
    """Find documents by their words (PostgreSQL full text + trigram similarity for OCR noise)
    and/or their fields (--field; QUERY may then be left out)."""
    import json
    from datetime import timezone

    import asyncpg

    from ocrstream.storage.search import MARK, SearchQuery, parse_field_filters, search

    utc = lambda d: d.replace(tzinfo=timezone.utc) if d else None  # noqa: E731
    try:
        q = SearchQuery(query, status, utc(since), utc(until), template, parse_field_filters(list(fields)),
                        limit, offset)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def run() -> dict:
        pool = await asyncpg.create_pool(get_settings().dsn, min_size=1, max_size=1)
        try:
            return await search(pool, q)
        finally:
            await pool.close()

    try:
        result = asyncio.run(run())
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError, asyncpg.UndefinedFunctionError) as exc:
        raise click.ClickException(f"{exc}: the database lacks the search migration; start the store stage "
                                   "once (ocrstream run store) to apply it") from None
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    click.echo(f"{result['total']} matching page(s); showing {offset + 1}-{offset + len(result['hits'])}")
    for hit in result["hits"]:
        click.secho(f"\n{hit['score']:.3f}  {hit['document_id']}  page {hit['page_index'] + 1}  "
                    f"{hit['filename'] or ''}  [{hit['status']}]", bold=True)
        parts = hit["snippet"].replace(MARK[1], MARK[0]).split(MARK[0])
        click.echo("  " + "".join(click.style(s, bold=True, underline=True) if i % 2 else s
                                  for i, s in enumerate(parts)))
        for region in hit["regions"]:
            click.echo(f"    box {[round(v) for v in region['box']]}: {region['text']}")


@main.command("export")
@click.argument("document_id")
@click.option("--format", "fmt", type=click.Choice(["pdf", "txt", "hocr", "alto", "json"]), default="pdf",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File to write (default: DOCUMENT_ID.<format> in the current folder).")
def export_cmd(document_id: str, fmt: str, output: Path | None) -> None:
    """Write a stored document as a searchable PDF (original pages + invisible text), txt, hOCR,
    ALTO or JSON (reads PostgreSQL and, for pdf, the original from the bucket)."""
    import json

    import asyncpg

    from ocrstream.ocr.document import Document
    from ocrstream.ocr.exports import to_alto, to_hocr, to_searchable_pdf
    from ocrstream.storage.documents import load_document
    from ocrstream.storage.objectstore import ObjectStore

    settings = get_settings()

    async def load() -> tuple[dict | None, bytes | None]:
        pool = await asyncpg.create_pool(settings.dsn, min_size=1, max_size=1)
        try:
            data = await load_document(pool, document_id)
        finally:
            await pool.close()
        original = None
        if data is not None and fmt == "pdf" and data["status"] == "done":
            original = await ObjectStore(settings).get(data["object_key"])
        return data, original

    data, original = asyncio.run(load())
    if data is None:
        raise click.ClickException(f"no document {document_id}")
    if fmt == "pdf" and original is None:
        raise click.ClickException(f"document {document_id} is {data['status']}: no PDF")
    doc = Document.from_results({**data, "document": {"filename": data["filename"]}})
    from ocrstream.errors import ConfigurationError

    try:
        pdf = to_searchable_pdf(doc, original) if fmt == "pdf" and original is not None else b""
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    content: bytes = (pdf if fmt == "pdf" else
                      (doc.render_text() if fmt == "txt" else to_hocr(doc) if fmt == "hocr" else
                       to_alto(doc) if fmt == "alto" else json.dumps(doc.export(), ensure_ascii=False)).encode())
    output = output or Path(f"{document_id}.{fmt}")
    output.write_bytes(content)
    click.echo(f"{output} ({len(content)} bytes)")


#: what ``ocrstream ocr`` writes per document (``--format``).
OCR_FORMATS = ("txt", "json", "hocr", "alto")


@main.command("ocr")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(OCR_FORMATS), default="txt", show_default=True,
              help="txt: the text; json: the Document tree (JSON Lines, one document per line); hocr; alto.")
@click.option("--template", default=None, help="Fixed-layout template of these documents (e.g. lab-report).")
@click.option("-o", "--output", "output_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write one FILE.<format> per input into this folder (created) instead of stdout.")
def ocr_cmd(files: tuple[Path, ...], fmt: str, template: str | None, output_dir: Path | None) -> None:
    """OCR image or PDF FILES right here: no stack, no Kafka, S3 or PostgreSQL (the same pipeline
    and budgets as the stages, ocrstream/ocr/predictor.py), output on stdout.

    Several files: txt puts a `==> FILE <==` line before each document, json writes one document
    per line (JSON Lines), hocr and alto need --output (one XML document per file). Progress and
    errors go to stderr.

    Exit status: 0 when every file was read; 1 when any failed (file, error type and message
    printed); 2 on a usage error.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if logging.getLogger().level > logging.DEBUG:  # stderr: progress and errors only, unless -v
        logging.getLogger().setLevel(logging.WARNING)
    if output_dir is None and len(files) > 1 and fmt in ("hocr", "alto"):
        raise click.UsageError(f"several files as {fmt} need --output DIR (one XML document per file)")
    names = [f"{path.name}.{fmt}" for path in files]
    if output_dir is not None and len(set(names)) < len(names):
        raise click.UsageError("two input files have the same name: their outputs would overwrite each other")
    from ocrstream.errors import OcrStreamError
    from ocrstream.ocr.predictor import OCRPipeline
    from ocrstream.ocr.templates import get_template

    try:
        settings = get_settings()
        layout = get_template(template, settings.templates_dir) if template else None
    except OcrStreamError as exc:
        raise click.UsageError(str(exc)) from None
    pipeline = OCRPipeline.from_settings(settings)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for n, (path, name) in enumerate(zip(files, names), start=1):
        error, content = _ocr_file(pipeline, path, layout, fmt)
        if error:
            failed.append(path)
            click.echo(f"ocrstream ocr: {path}: {error}", err=True)
        elif output_dir is not None:
            (output_dir / name).write_text(content, "utf-8")
        else:
            if len(files) > 1 and fmt == "txt":
                click.secho(f"==> {path} <==", bold=True)
            click.echo(content)
        if len(files) > 1:
            click.echo(f"[{n}/{len(files)}] {path}: {'failed' if error else 'done'}"
                       + (f" -> {output_dir / name}" if output_dir is not None and not error else ""), err=True)
    if failed:
        click.echo(f"{len(failed)} of {len(files)} file(s) failed: " + ", ".join(map(str, failed)), err=True)
    sys.exit(1 if failed else 0)


def _ocr_file(pipeline, path: Path, template, fmt: str) -> tuple[str | None, str]:
    """(None, the document rendered as ``fmt``) or (``"ErrorType: message"``, "") for one file."""
    from ocrstream.ocr.document import VISIBLE_PAGE_BREAK
    from ocrstream.ocr.exports import to_alto, to_hocr
    from ocrstream.streaming.retry import as_typed

    try:
        pipeline.check_size(path.stat().st_size)  # before the bytes are read
        doc = pipeline(path.read_bytes(), template, document_id=path.name, filename=path.name)
    except Exception as exc:  # noqa: BLE001 - one bad file never stops the others
        typed = as_typed(exc)
        return f"{type(typed).__name__}: {typed}", ""
    if fmt == "json":
        return None, json.dumps(doc.export(), ensure_ascii=False)
    if fmt == "txt":
        return None, doc.render_text(VISIBLE_PAGE_BREAK)
    return None, to_hocr(doc) if fmt == "hocr" else to_alto(doc)


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


@main.group()
def dev() -> None:
    """The embedded local stack (Kafka API, S3, PostgreSQL) from registry packages."""


@dev.command("up")
@click.option("--state-dir", default=".ocrstream/dev", type=click.Path(path_type=Path), show_default=True)
@click.option("--kafka-storage", type=click.Choice(["s3", "memory"]), default="s3", show_default=True,
              help="Where the broker keeps topics: the embedded S3 (durable: survives a broker crash "
                   "and restarts), or memory (faster; lost when the broker stops).")
def dev_up(state_dir: Path, kafka_storage: str) -> None:
    """Start the stack in the background and write its settings to STATE_DIR/stack.env.

    On a stack whose services partly died, brings the dead ones back on the same ports and data.
    Data is kept across `dev down` / `dev up` (remove it with `dev down --purge`).
    """
    from ocrstream.devstack import EmbeddedStack, read_running

    endpoints = read_running(state_dir)
    if endpoints is None:
        endpoints = EmbeddedStack(state_dir, kafka_storage=kafka_storage).start()
    env_file = state_dir / "stack.env"
    endpoints.write_env_file(env_file)
    from ocrstream.settings import DEV_ENV_FILE

    click.echo(f"stack up; settings in {env_file} (mode 0600; read automatically from {DEV_ENV_FILE} "
               "under this directory, elsewhere with OCRSTREAM_ENV_FILE=<that file>)")
    for key, value in endpoints.as_env().items():
        shown = "********  (in the file)" if is_secret_setting(key) else value
        click.echo(f"export {key}={shown}")


def is_secret_setting(env_name: str) -> bool:
    """True for variables whose value is a secret (keys, passwords, DSNs that carry a password)."""
    return any(word in env_name for word in ("SECRET", "PASSWORD", "DSN", "API_KEY"))


@dev.command("down")
@click.option("--state-dir", default=".ocrstream/dev", type=click.Path(path_type=Path), show_default=True)
@click.option("--purge", is_flag=True, help="Also delete the stack's data (topics, objects, database).")
def dev_down(state_dir: Path, purge: bool) -> None:
    """Stop the stack started by ``dev up`` (by its recorded PIDs); its data is kept unless --purge."""
    from ocrstream.devstack import purge as purge_data
    from ocrstream.devstack import stop_running

    click.echo("stack stopped" if stop_running(state_dir) else "no stack running")
    if purge:
        click.echo(f"data in {state_dir} removed" if purge_data(state_dir) else "no data to remove")


@main.group()
def dlq() -> None:
    """Dead letters (ocr.dlq.v1): list, show, replay after a fix."""


def _dlq_filters(f):
    f = click.option("--stage", default=None, help="Only dead letters of this stage.")(f)
    f = click.option("--error-type", default=None, help="Only this error type (e.g. DecoderCrashedError).")(f)
    f = click.option("--since", default=None, type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]),
                     help="Only dead letters written at or after this time (ISO 8601; UTC if no zone).")(f)
    return f


def _select(stage, error_type, since, document_id=None):
    from datetime import timezone

    from ocrstream.ops import dlq as dl

    since = since.replace(tzinfo=since.tzinfo or timezone.utc) if since else None
    return dl.run(dl.dead_letters(get_settings(), stage=stage, error_type=error_type, since=since,
                                  document_id=document_id))


@dlq.command("list")
@_dlq_filters
@click.option("--json", "as_json", is_flag=True, help="One JSON dead letter per line.")
def dlq_list(stage, error_type, since, as_json) -> None:
    """Dead letters, oldest first: time, stage, error type, document, message."""
    import json as _json

    from ocrstream.contracts import events

    for d in _select(stage, error_type, since):
        if as_json:
            click.echo(_json.dumps(events.to_json_object(d.event)))
        else:
            e = d.event.error
            click.echo(f"{d.event.failed_at}  {e.stage:<10} {e.type:<24} {d.document_id}  {e.message[:80]}")


@dlq.command("show")
@click.argument("document_id")
def dlq_show(document_id: str) -> None:
    """Every dead letter of DOCUMENT_ID, in full (JSON)."""
    import json as _json

    from ocrstream.contracts import events

    letters = _select(None, None, None, document_id)
    if not letters:
        raise click.ClickException(f"no dead letter for document {document_id}")
    for d in letters:
        click.echo(_json.dumps({"partition": d.partition, "offset": d.offset, **events.to_json_object(d.event)},
                               indent=2))


@dlq.command("replay")
@_dlq_filters
@click.option("--document", "document_id", default=None, help="Only this document.")
@click.option("--all", "everything", is_flag=True, help="Replay every dead letter (no filter needed).")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed, send nothing.")
def dlq_replay(stage, error_type, since, document_id, everything, dry_run) -> None:
    """Send the inputs of the selected dead letters again (documents already done are skipped)."""
    from ocrstream.ops import dlq as dl

    if not (stage or error_type or since or document_id or everything):
        raise click.UsageError("name a filter (--stage, --error-type, --since, --document) or --all")
    letters = _select(stage, error_type, since, document_id)
    outcomes = dl.run(dl.replay(get_settings(), letters, dry_run=dry_run))
    for o in outcomes:
        click.echo(f"{o.action:<15} {o.letter.document_id}  {o.letter.error_type}  -> {o.topic}")
    counts = {a: sum(o.action == a for o in outcomes) for a in ("replayed", "would-replay", "skipped-done",
                                                                "not-replayable")}
    click.echo(", ".join(f"{n} {a}" for a, n in counts.items() if n) or "nothing to replay", err=True)


@main.group()
def webhook() -> None:
    """Completion webhooks (README "Webhooks"): deliveries in the outbox, replay of failed ones."""


def _outbox(call):
    """Run ``call(pool)`` against the store's database (ocrstream/storage/outbox.py)."""
    from ocrstream.storage.db import create_pool

    async def run():
        pool = await create_pool(get_settings(), max_size=1)
        try:
            return await call(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


@webhook.command("list")
@click.option("--failed", is_flag=True, help="Only deliveries given up on (after the bounded retries).")
@click.option("--limit", default=100, show_default=True, help="Newest deliveries shown.")
def webhook_list(failed: bool, limit: int) -> None:
    """Deliveries, newest first: status, attempts, document, URL, last answer; then counts by status."""
    from ocrstream.storage import outbox

    rows = _outbox(lambda pool: outbox.list_deliveries(pool, "failed" if failed else None, limit))
    for r in rows:
        last = f"HTTP {r['last_status']}" if r["last_status"] else ""
        click.echo(f"{r['created_at']:%Y-%m-%dT%H:%M:%S}  {r['status']:<9} {r['attempts']:>2}  {r['document_id']}  "
                   f"{r['url']}  {last} {(r['last_error'] or '')[:80]}".rstrip())
    counts = _outbox(outbox.counts)
    click.echo(", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "no deliveries", err=True)


@webhook.command("replay")
@click.argument("document_id", required=False)
def webhook_replay(document_id: str | None) -> None:
    """Failed deliveries (of DOCUMENT_ID, or all) pending again, due now, attempts reset."""
    from ocrstream.storage import outbox

    n = _outbox(lambda pool: outbox.replay(pool, document_id))
    click.echo(f"{n} deliveries pending again")


@main.group()
def apikey() -> None:
    """API keys of the HTTP doors (stored hashed in OCRSTREAM_API_KEYS_FILE)."""


@apikey.command("create")
@click.argument("name")
@click.option("--scopes", default="ingest,query", show_default=True, help="Comma list of: ingest, query.")
@click.option("--file", "keys_file", type=click.Path(path_type=Path), default=None,
              help="Keys file (default: OCRSTREAM_API_KEYS_FILE).")
def apikey_create(name: str, scopes: str, keys_file: Path | None) -> None:
    """Create a key called NAME; prints it once (only its SHA-256 is stored)."""
    from ocrstream.streaming.auth import create_key

    path = keys_file or (Path(get_settings().api_keys_file) if get_settings().api_keys_file else None)
    if path is None:
        raise click.UsageError("name the keys file with --file or OCRSTREAM_API_KEYS_FILE")
    try:
        token = create_key(path, name, tuple(s.strip() for s in scopes.split(",") if s.strip()))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(token)
    click.echo(f"stored hashed in {path} (mode 0600); send it as: Authorization: Bearer <key>", err=True)


def _keys_file(keys_file: Path | None) -> Path:
    path = keys_file or (Path(get_settings().api_keys_file) if get_settings().api_keys_file else None)
    if path is None:
        raise click.UsageError("name the keys file with --file or OCRSTREAM_API_KEYS_FILE")
    return path


@apikey.command("list")
@click.option("--file", "keys_file", type=click.Path(path_type=Path), default=None,
              help="Keys file (default: OCRSTREAM_API_KEYS_FILE).")
def apikey_list(keys_file: Path | None) -> None:
    """The keys by name: scopes and creation time (tokens are not stored, so never shown)."""
    from ocrstream.errors import ConfigurationError
    from ocrstream.streaming.auth import key_records

    try:
        records = key_records(_keys_file(keys_file))
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    for r in records:
        scopes = r["scopes"] if isinstance(r["scopes"], list) else []
        click.echo(f"{r['name']:<24} {','.join(map(str, scopes)):<20} {r.get('created', '')}")
    click.echo(f"{len(records)} key(s)", err=True)


@apikey.command("revoke")
@click.argument("name")
@click.option("--file", "keys_file", type=click.Path(path_type=Path), default=None,
              help="Keys file (default: OCRSTREAM_API_KEYS_FILE).")
def apikey_revoke(name: str, keys_file: Path | None) -> None:
    """Remove every key called NAME (running doors re-read the file within seconds, or at restart)."""
    from ocrstream.errors import ConfigurationError
    from ocrstream.streaming.auth import revoke_key

    try:
        removed = revoke_key(_keys_file(keys_file), name)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        raise click.ClickException(f"no key called {name!r}")
    click.echo(f"revoked {removed} key(s) called {name!r}", err=True)


@main.group()
def model() -> None:
    """Model tools: TrOCR export; synthetic lines, label export, fine-tuning and evaluation of recognisers."""


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
        from ocrstream.training.trocr_export import export_trocr
    except ImportError as exc:
        raise click.ClickException(f"{exc}: install the exporter with pip install 'ocrstream[export]'") from None
    export_trocr(src, out, quantize=quantize, opset=opset, keep_split=keep_split, overwrite=overwrite)


def _training(module: str, extra: str):
    """Import ``ocrstream.training.<module>``; a missing optional dependency becomes a usage error."""
    import importlib

    try:
        return importlib.import_module(f"ocrstream.training.{module}")
    except ImportError as exc:
        raise click.ClickException(f"{exc}: install with pip install 'ocrstream[{extra}]'") from None


@model.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", required=True, type=click.IntRange(1, 1_000_000), help="Lines to render.")
@click.option("--fonts", "fonts_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of .ttf/.otf fonts (default: Debian fonts-dejavu/-liberation/-freefont, else fc-list).")
@click.option("--text", "text_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Text file: lines cut into 1..8-word spans, mixed with the generators.")
@click.option("--generators", default="number,price,date,time,code,item", show_default=True,
              help="Comma list of text generators ('' = text file only).")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-degrade", is_flag=True, help="Clean renderings (no blur, noise, JPEG, skew...).")
def synth_cmd(out: Path, count: int, fonts_dir: str | None, text_file: str | None, generators: str, seed: int,
              no_degrade: bool) -> None:
    """Render COUNT labelled line images into OUT/img and OUT/lines.jsonl (needs the 'synth' extra)."""
    synth = _training("synth", "synth")
    try:
        report = synth.synthesize(out, count, fonts_dir=fonts_dir, text_file=text_file, seed=seed,
                                  generators=[g for g in generators.split(",") if g], degrade=not no_degrade)
    except synth.SynthError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{report.count} lines ({report.fonts} fonts, {report.cpu_s:.1f} CPU-s) -> {report.manifest}")


@model.command("label-export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--manifest", "manifests", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Any {image, text} JSONL manifest (repeatable).")
@click.option("--from-store", is_flag=True, help="Lines of stored documents that a person corrected "
              "(regions.verified_text), crops from the object store (OCRSTREAM_* settings).")
@click.option("--since", default=None, help="With --from-store: only lines verified at/after this ISO time.")
def label_export_cmd(out: Path, manifests: tuple[str, ...], from_store: bool, since: str | None) -> None:
    """Write labelled lines to OUT/lines.jsonl + OUT/img/ in the training manifest format."""
    labels = _training("labels", "dev")
    if not manifests and not from_store:
        raise click.UsageError("give --manifest FILE and/or --from-store")
    n = labels.export_labels(out, manifests=manifests, settings=get_settings() if from_store else None, since=since)
    click.echo(f"{n} lines -> {out / 'lines.jsonl'}")


@model.command("finetune")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", type=click.Choice(["ppocr", "trocr"]), default="ppocr", show_default=True)
@click.option("--trocr-checkpoint", type=click.Path(exists=True, file_okay=False), default=None,
              help="With --base trocr: the transformers checkpoint folder to fine-tune.")
@click.option("--train", "train", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training manifest (repeatable).")
@click.option("--train-caseless", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Training manifest whose labels are upper-cased print (e.g. SROIE): case-folded loss.")
@click.option("--val", required=True, type=click.Path(exists=True, dir_okay=False), help="Validation manifest (the gate).")
@click.option("--freeze", type=click.Choice(["backbone", "none"]), default="backbone", show_default=True)
@click.option("--lr", default=1e-4, show_default=True)
@click.option("--batch-size", default=8, show_default=True)
@click.option("--threads", default=1, show_default=True, help="torch intra-op threads.")
@click.option("--budget-min", default=60.0, show_default=True, help="CPU minutes of training (incl. validation).")
@click.option("--max-steps", default=None, type=int)
@click.option("--eval-every", default=100, show_default=True, help="Steps between validation-subset CER checks.")
@click.option("--val-limit", default=200, show_default=True, help="Validation lines read during training.")
@click.option("--checkpoint-every", default=100, show_default=True)
@click.option("--keep", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Weights to export: best validation-subset CER seen (base included), or the last.")
@click.option("--seed", default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@click.option("--force", is_flag=True, help="Write the model even if it is worse than the base on --val.")
def finetune_cmd(out: Path, base: str, trocr_checkpoint: str | None, train: tuple[str, ...],
                 train_caseless: tuple[str, ...], val: str, freeze: str, lr: float, batch_size: int, threads: int,
                 budget_min: float, max_steps: int | None, eval_every: int, val_limit: int, checkpoint_every: int,
                 keep: str, seed: int, resume: bool, force: bool) -> None:
    """Fine-tune the recogniser on labelled lines; write OUT/model.onnx + OUT/manifest.json if it beats the base."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not train and not train_caseless:
        raise click.UsageError("give at least one --train or --train-caseless manifest")
    if base == "trocr":
        if not trocr_checkpoint:
            raise click.UsageError("--base trocr needs --trocr-checkpoint DIR")
        trocr = _training("trocr_finetune", "finetune")
        result = trocr.finetune_trocr(trocr_checkpoint, [*train, *train_caseless], val, out, lr=lr,
                                      batch_size=batch_size, threads=threads, budget_cpu_s=60 * budget_min,
                                      max_steps=max_steps, seed=seed, force=force)
        click.echo(json.dumps(result, indent=2))
        return
    ft = _training("finetune", "finetune")
    cfg = ft.FinetuneConfig(train=list(train), train_caseless=list(train_caseless), val=val, out=str(out),
                            freeze=freeze, lr=lr, batch_size=batch_size, threads=threads,
                            budget_cpu_s=60 * budget_min, max_steps=max_steps, eval_every=eval_every,
                            val_limit=val_limit, checkpoint_every=checkpoint_every, keep=keep, seed=seed, resume=resume,
                            force=force)
    try:
        result = ft.finetune_ppocr(cfg)
    except ft.GateRefused as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"model -> {result.manifest} ({result.steps} steps, {result.train_cpu_s:.0f} CPU-s); "
               f"val CER ci {100 * result.base.cer_ci:.2f}% -> {100 * result.tuned.cer_ci:.2f}%, "
               f"WER ci {100 * result.base.wer_ci:.2f}% -> {100 * result.tuned.wer_ci:.2f}%")


@model.command("evaluate")
@click.argument("models", nargs=-1, required=True)
@click.option("--set", "sets", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="Labelled manifest (repeatable).")
@click.option("--limit", default=None, type=int, help="First N lines of each set.")
@click.option("--threads", default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
def evaluate_cmd(models: tuple[str, ...], sets: tuple[str, ...], limit: int | None, threads: int, as_json: bool) -> None:
    """CER/WER (ci and cs) of each MODEL (ppocr, a fine-tuned manifest/folder, a .onnx, a TrOCR ONNX folder) per set."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from ocrstream.training.evaluate import format_scores, load_for_eval, score
    from ocrstream.training.manifest import read_manifest

    rows = []
    for name in models:
        recognizer = load_for_eval(name, threads=threads)
        for path in sets:
            result, _ = score(recognizer, read_manifest(path, limit=limit), Path(path).parent.name + "/" + Path(path).name)
            rows.append((name, result))
            if as_json:
                click.echo(json.dumps({"model": name, **result.as_dict()}))
    if not as_json:
        click.echo(format_scores(rows))


@main.command()
@click.option("--input", "input_dir", default=None,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of documents to process (e.g. ../shared/data/sroie-dev/pages/img); "
                   "default: the checkout's samples/.")
@click.option("--state-dir", default=".ocrstream/demo", type=click.Path(path_type=Path), show_default=True)
@click.option("--timeout", default=1800.0, show_default=True, help="Seconds to wait for all results.")
def demo(input_dir: Path, state_dir: Path, timeout: float) -> None:
    """Run the whole pipeline on the embedded stack over INPUT, print every document's text."""
    from ocrstream.ops.demo import SAMPLES, run_demo

    if input_dir is None:
        if not SAMPLES.is_dir():
            raise click.UsageError(f"no sample documents at {SAMPLES} (an installed package ships none): "
                                   "pass --input DIR")
        input_dir = SAMPLES
    sys.exit(run_demo(input_dir, state_dir, timeout))


@main.command("settings")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per setting.")
def settings_cmd(as_json: bool) -> None:
    """Every OCRSTREAM_* setting by group: its value in this environment and what it does (secrets masked)."""
    from ocrstream.settings import describe

    group = None
    for row in describe(get_settings()):
        if as_json:
            click.echo(json.dumps(row, default=str))
            continue
        if row["group"] != group:
            group = row["group"]
            click.echo(f"\n{group}")
        click.echo(f"  {row['env']}={row['value'] if row['value'] is not None else ''}")
        click.echo(f"      {row['description']}")


if __name__ == "__main__":
    main()
