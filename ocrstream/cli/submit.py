"""``ocrstream submit``: documents in through the HTTP door or Kafka, receipts and results out."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import click

from ocrstream.cli.app import EXIT_FAILED, EXIT_NO_STACK, EXIT_TIMEOUT, _quiet_clients, get_settings, main

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
    rejected or failed (its stage and error type are printed); 2 when the settings cannot work;
    3 when no stack answers; 4 when --timeout passed before every result came.
    """
    from ocrstream.errors import NotARegularFileError
    from ocrstream.streaming.paths import iter_paths

    try:
        files = iter_paths(paths, on_skip=lambda path, kind: click.echo(
            f"ocrstream: skipped {path}: a {kind}, not a file", err=True))
    except NotARegularFileError as exc:
        raise click.ClickException(str(exc)) from None
    if not files:
        raise click.ClickException(f"no files under {', '.join(map(str, paths))}")
    if via != "kafka":
        from ocrstream.client.http_submit import DoorRefusedError, DoorSettings, DoorUnavailableError, HttpDoor

        # read without pydantic: ~0.15 s less before the file goes out (ocrstream/environment.py)
        door = HttpDoor(DoorSettings.from_environment() or get_settings())
        door.callback_url = callback_url
        if takes_http_door(via, len(files), door):
            try:
                sys.exit(_submit_http(door, files, wait, timeout, template))
            except DoorUnavailableError as exc:
                click.echo(f"ocrstream: {exc}", err=True)
                sys.exit(EXIT_NO_STACK)
            except DoorRefusedError as exc:
                # never around a keyed door silently: the caller sets the key or says --via kafka
                has_key = door.settings.api_key is not None
                click.echo(f"ocrstream: {refusal_hint(exc.status, door.url, has_key) or exc}", err=True)
                sys.exit(EXIT_FAILED)
    _submit_kafka(get_settings(), files, wait, timeout, template, callback_url,
                  door="--via kafka" if via == "kafka" else "no HTTP door answered")


def refusal_hint(status: int, url: str, has_key: bool) -> str | None:
    """What to do when the ingest HTTP door refuses this client's key (401, 403), naming the
    variable to set; None for other statuses."""
    around = "or go around the door on purpose with --via kafka (S3 and the broker directly)"
    if status == 401:
        what = ("the key in OCRSTREAM_API_KEY is not one of its keys" if has_key
                else "it requires an API key and OCRSTREAM_API_KEY is not set")
        return (f"the ingest HTTP door at {url} answered 401: {what}. Set OCRSTREAM_API_KEY to a key with the "
                f"ingest scope (`ocrstream apikey create NAME --scopes ingest --file KEYS`), {around}")
    if status == 403:
        return (f"the ingest HTTP door at {url} answered 403: the key in OCRSTREAM_API_KEY lacks the ingest "
                f"scope. Set OCRSTREAM_API_KEY to a key with it, {around}")
    return None


def takes_http_door(via: str, n_files: int, door) -> bool:
    """Whether ``submit --via VIA`` of ``n_files`` files goes through ``door`` (an
    :class:`ocrstream.client.http_submit.HttpDoor`): ``http`` always, ``kafka`` never, ``auto`` when at
    most HTTP_DOOR_MAX_FILES files are given and the door answers."""
    if via in ("http", "kafka"):
        return via == "http"
    return n_files <= HTTP_DOOR_MAX_FILES and door.available()


def _submit_kafka(settings, files: list[Path], wait: bool, timeout: float, template: str | None,
                  callback_url: str | None = None, door: str = "--via kafka") -> None:
    """``submit`` through the CLI door (S3 and the broker from this process); exits. ``door``: why
    this door (said on stderr once the documents are submitted)."""
    import asyncio

    from ocrstream.client.client import StackUnreachableError
    from ocrstream.streaming import tracing

    _quiet_clients()
    tracing.configure("submit")  # each document's trace starts here when OTEL_EXPORTER_OTLP_ENDPOINT is set
    try:
        sys.exit(asyncio.run(_submit(settings, files, wait, timeout, template, callback_url, door)))
    except StackUnreachableError as exc:
        click.echo(f"ocrstream: {exc.hint}", err=True)
        sys.exit(EXIT_NO_STACK)
    finally:
        tracing.shutdown()  # export the door spans before exiting


def _echo_receipt(bucket: str, document_id: str, filename: str | None, error: tuple[str, str] | None,
                  reused: bool, object_key: str | None) -> None:
    """One line per submitted file: its id, name, and where its original is in ``bucket`` (or why it
    was refused)."""
    state = (f"rejected at ingest: {error[0]}: {error[1]}" if error
             else "reused: same bytes as this done document" if reused
             else f"s3://{bucket}/{object_key}")
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


def _submit_http(door, files: list[Path], wait: bool, timeout: float, template: str | None) -> int:
    """``submit`` through the ingest HTTP door (:mod:`ocrstream.client.http_submit`); the exit code.

    Documents still without a result when the door's longest wait ran out (60 s), and re-used
    ones, are waited for / read as the CLI door does (:meth:`ocrstream.client.client.Client.wait`)."""
    import time

    deadline = time.monotonic() + timeout
    with click.progressbar(length=len(files), label="processing", file=sys.stderr,
                           hidden=len(files) == 1 or not wait) as bar:
        answers = door.submit_all(files, template, wait_s=timeout if wait else 0.0,
                                  on_answer=lambda a: bar.update(1))
    click.echo(f"ocrstream: submitted through the ingest HTTP door at {door.url}", err=True)
    for a in answers:
        _echo_receipt(door.settings.s3_bucket, a.document_id or "-", a.filename, a.error, a.status == "reused",
                      a.object_key)
    if not wait:
        return EXIT_FAILED if any(a.error for a in answers) else 0
    pending = [a for a in answers if a.result is None and not a.error]
    missing: list[tuple[str, str]] = []
    later: dict[str, Finished] = {}
    if pending:
        import asyncio  # only when the HTTP door did not wait for every answer (not on the quick path)

        more, missing = asyncio.run(_wait_direct(get_settings(), pending, max(deadline - time.monotonic(), 1.0)))
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
                  callback_url: str | None = None, door: str = "--via kafka") -> int:
    """Submit ``files`` through the CLI door (and wait for their results); the exit code."""
    from ocrstream.client.client import Client

    async with Client(settings, wait=wait) as client:
        client.callback_url = callback_url
        receipts = await client.submit_paths(files, template)
        click.echo(f"ocrstream: submitted through Kafka ({door}): S3 at {settings.s3_endpoint}, "
                   f"the broker at {settings.kafka_bootstrap}", err=True)
        for r in receipts:
            error = (type(r.error).__name__, str(r.error)) if r.error else None
            _echo_receipt(settings.s3_bucket, r.document_id, r.filename, error, r.reused, r.object_key)
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
