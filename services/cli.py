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


@main.command("search")
@click.argument("query")
@click.option("--status", type=click.Choice(["done", "failed"]), default=None)
@click.option("--since", type=click.DateTime(), default=None, help="Stored at or after (ISO date/time, UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="Stored before (ISO date/time, UTC).")
@click.option("--template", default=None, help="Only documents of this fixed-layout template.")
@click.option("--field", "fields", multiple=True, metavar="NAME:VALUE", help="Template field value (repeatable).")
@click.option("--limit", default=10, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the raw result (as GET /v1/search returns it).")
def search_cmd(query: str, status, since, until, template, fields, limit: int, offset: int, as_json: bool) -> None:
    """Find documents by their words (PostgreSQL full text + trigram similarity for OCR noise)."""
    import json
    from datetime import timezone

    import asyncpg

    from services.store.search import MARK, SearchQuery, parse_field_filters, search

    utc = lambda d: d.replace(tzinfo=timezone.utc) if d else None  # noqa: E731
    try:
        q = SearchQuery(query, status, utc(since), utc(until), template, parse_field_filters(list(fields)),
                        limit, offset)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None

    async def run() -> dict:
        pool = await asyncpg.create_pool(get_settings().postgres_dsn, min_size=1, max_size=1)
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

    from services.core.objectstore import ObjectStore
    from services.document import Document
    from services.exports import to_alto, to_hocr, to_searchable_pdf
    from services.store.api import load_document

    settings = get_settings()

    async def load() -> tuple[dict | None, bytes | None]:
        pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=1)
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
    content: bytes = (to_searchable_pdf(doc, original) if fmt == "pdf" else
                      (doc.render_text() if fmt == "txt" else to_hocr(doc) if fmt == "hocr" else
                       to_alto(doc) if fmt == "alto" else json.dumps(doc.export(), ensure_ascii=False)).encode())
    output = output or Path(f"{document_id}.{fmt}")
    output.write_bytes(content)
    click.echo(f"{output} ({len(content)} bytes)")


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
