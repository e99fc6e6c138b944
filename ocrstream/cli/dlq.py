"""Dead letters: ``dlq list``, ``dlq show``, ``dlq replay``."""

from __future__ import annotations

import click

from ocrstream.cli.app import get_settings, main


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
@click.option("--force", is_flag=True, help="Send even when an earlier replay of a document is still pending "
              "(its outcome not stored yet, e.g. because that replay was lost).")
def dlq_replay(stage, error_type, since, document_id, everything, dry_run, force) -> None:
    """Send the inputs of the selected dead letters again. Idempotent: documents already done are
    skipped, and so are documents whose earlier replay is still pending (unless --force)."""
    from ocrstream.ops import dlq as dl

    if not (stage or error_type or since or document_id or everything):
        raise click.UsageError("name a filter (--stage, --error-type, --since, --document) or --all")
    letters = _select(stage, error_type, since, document_id)
    outcomes = dl.run(dl.replay(get_settings(), letters, dry_run=dry_run, force=force))
    for o in outcomes:
        click.echo(f"{o.action:<15} {o.letter.document_id}  {o.letter.error_type}  -> {o.topic}")
    counts = {a: sum(o.action == a for o in outcomes) for a in dl.ACTIONS}
    click.echo(", ".join(f"{n} {a}" for a, n in counts.items() if n) or "nothing to replay", err=True)
