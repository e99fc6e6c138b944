"""Completion webhooks: ``webhook list``, ``webhook replay`` (the outbox, ocrstream/storage/outbox.py)."""

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
