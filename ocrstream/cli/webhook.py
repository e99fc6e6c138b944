"""Completion webhooks: ``webhook list``, ``webhook replay`` (the outbox, ocrstream/storage/outbox.py);
``webhook add KEY URL``, ``webhook remove KEY``, ``webhook list --keys`` (webhooks per API key)."""

from __future__ import annotations

import asyncio

import click

from ocrstream.cli.app import get_settings, main


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
@click.option("--keys", is_flag=True, help="The webhooks per API key instead (`webhook add`).")
def webhook_list(failed: bool, limit: int, keys: bool) -> None:
    """Deliveries, newest first: status, attempts, document, URL, last answer; then counts by status."""
    from ocrstream.storage import outbox

    if keys:
        for r in _outbox(outbox.key_webhooks):
            click.echo(f"{r['api_key']}  {r['url']}  (since {r['created_at']:%Y-%m-%dT%H:%M:%S})")
        return

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


@webhook.command("add")
@click.argument("key")
@click.argument("url")
def webhook_add(key: str, url: str) -> None:
    """Send the webhooks of documents submitted with the API key named KEY to URL, when their
    submission names no callback URL of its own (replaces KEY's earlier URL). URL is checked as a
    submission's is (http(s), no internal target unless OCRSTREAM_WEBHOOK_ALLOW_HOSTS allows it)."""
    from ocrstream.errors import InvalidSubmissionError
    from ocrstream.storage import outbox
    from ocrstream.streaming.webhooks import check_callback_url

    settings = get_settings()
    try:
        asyncio.run(check_callback_url(url, settings))
    except InvalidSubmissionError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None
    _warn_unknown_key(key)
    _outbox(lambda pool: outbox.set_key_webhook(pool, key, url))
    click.echo(f"webhooks of key {key!r} go to {url}")


@webhook.command("remove")
@click.argument("key")
def webhook_remove(key: str) -> None:
    """Forget the webhook of the API key named KEY (documents already stored keep their deliveries)."""
    from ocrstream.storage import outbox

    if not _outbox(lambda pool: outbox.remove_key_webhook(pool, key)):
        raise click.ClickException(f"key {key!r} has no webhook")
    click.echo(f"key {key!r}: webhook removed")


def _warn_unknown_key(key: str) -> None:
    """Warn (stderr) when a keys file is configured here and names no key ``key``."""
    from pathlib import Path

    from ocrstream.errors import ConfigurationError
    from ocrstream.streaming.auth import key_records

    path = get_settings().api_keys_file
    if not path:
        return
    try:
        names = {r["name"] for r in key_records(Path(path))}
    except ConfigurationError:
        return
    if key not in names:
        click.echo(f"warning: {path} has no key named {key!r} (yet)", err=True)
