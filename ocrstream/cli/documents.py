"""Reading what the pipeline made: ``status``, ``tail-results``, ``search``, ``export``; ``reprocess``
(stored documents read again, versioned results); and ``ocr``, the whole OCR path in-process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import click

from ocrstream.cli.app import _quiet_clients, get_settings, main


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for scripts).")
@click.option("--failures", default=5, show_default=True, help="How many of the last failures to list.")
def status(as_json: bool, failures: int) -> None:
    """One screen: the stack's endpoints, each stage's processes, readiness and lag, the last
    hour's documents and failures, and what to do about anything down.

    Exit status: 0 healthy; 1 something is down or not ready; 2 settings that cannot work; 3 no stack answers at all.
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
@click.option("--ids", "ids_only", is_flag=True, help="Print only the matching documents' ids, best first, one a line.")
def search_cmd(query: str, status, since, until, template, fields, limit: int, offset: int, as_json: bool,
               ids_only: bool) -> None:
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
    if ids_only:
        for document_id in dict.fromkeys(hit["document_id"] for hit in result["hits"]):
            click.echo(document_id)
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
    from ocrstream.ocr.decode import Budget

    try:
        pdf = (to_searchable_pdf(doc, original, Budget.from_settings(settings))
               if fmt == "pdf" and original is not None else b"")
    except (ConfigurationError, ValueError) as exc:
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
@click.option("--document", "document", default=None, help="One document id.")
@click.option("--since", default=None, help="Documents stored at/after this ISO 8601 time.")
@click.option("--model-not", "model_not", default=None, metavar="SHA",
              help="Documents read by another model than SHA (a registered model's sha256/prefix/id, or a model id).")
@click.option("--all", "every", is_flag=True, help="Every done document.")
@click.option("--dry-run", is_flag=True, help="Only list what would be read again.")
@click.option("--rate", default=2.0, show_default=True, type=click.FloatRange(0, 1000, min_open=True),
              help="Documents sent per second at most (live documents keep their latency).")
@click.option("--force", is_flag=True, help="Also documents already read by the model that would read them now.")
@click.option("--limit", default=1_000_000, show_default=True, type=click.IntRange(1))
def reprocess(document: str | None, since: str | None, model_not: str | None, every: bool, dry_run: bool,
              rate: float, force: bool, limit: int) -> None:
    """Read stored documents again (their originals in the object store; nothing re-uploaded).
    Each makes a new result version; earlier versions are kept, verified text carries over."""
    from datetime import datetime

    import asyncpg

    from ocrstream.ops import reprocess as rp

    settings = get_settings()
    try:
        when = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise click.BadParameter(f"not an ISO 8601 time: {since}", param_hint="--since") from None

    async def run() -> tuple[rp.Plan, int]:
        conn = await asyncpg.connect(settings.dsn, timeout=settings.postgres_timeout_s)
        try:
            found = await rp.plan(settings, conn, document=document, since=when, model_not=model_not, every=every,
                                  force=force, limit=limit)
        finally:
            await conn.close()
        sent = 0 if dry_run else await rp.send(settings, found.documents, rate=rate)
        return found, sent

    try:
        found, sent = asyncio.run(run())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except (OSError, asyncpg.PostgresError) as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    for row in found.documents:
        click.echo(f"{'would read' if dry_run else 'sent'} {row['document_id']} (result v{row['result_version']}, "
                   f"model {row['model'] or '?'}) {row['filename'] or ''}".rstrip())
    if found.same_model:
        click.echo(f"skipped {len(found.same_model)} already read by {found.current_model} (--force to read them again)")
    click.echo(f"{len(found.documents)} document(s) {'would be read again' if dry_run else 'sent'}"
               + ("" if dry_run else f" at <= {rate:g}/s; new versions appear as the pipeline reads them"))
