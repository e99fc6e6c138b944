"""``ocrstream usage``: what documents cost, per API key, door or template (ocrstream/storage/usage.py)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

import click

from ocrstream.cli.app import get_settings, main

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90m``, ``24h``, ``7d``) or an ISO 8601 time (UTC
    unless it names its zone). Raises click.BadParameter."""
    now = now or datetime.now(timezone.utc)
    if m := _AGO.match(value.strip()):
        return now - timedelta(seconds=float(m[1]) * _UNIT_S[m[2]])
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: a duration (90m, 24h, 7d) or an ISO 8601 time",
                                 param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def render_table(rows: list[dict], by: str) -> str:
    """The usage rows as a Markdown table with a total row: documents, pages, CPU-s (and per page), wall-s, MiB."""
    head = f"| {by} | documents | pages | CPU-s | CPU-s per page | wall-s | MiB in | MiB out |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total = {"name": "total", **{k: sum(r[k] or 0 for r in rows) for k in
                                 ("documents", "pages", "cpu_s", "wall_s", "bytes_in", "bytes_out")}}
    for r in [*rows, total] if rows else []:
        pages = r["pages"] or 0
        per_page = f"{r['cpu_s'] / pages:.3f}" if pages else "—"
        lines.append(f"| {r['name']} | {r['documents']} | {pages} | {r['cpu_s']:.2f} | {per_page} | "
                     f"{r['wall_s']:.2f} | {r['bytes_in'] / 2**20:.2f} | {r['bytes_out'] / 2**20:.2f} |")
    return "\n".join(lines)


@main.command("usage")
@click.option("--since", default="24h", show_default=True,
              help="Results stored since: a duration back from now (90m, 24h, 7d) or an ISO 8601 time.")
@click.option("--by", "by", type=click.Choice(["key", "door", "template"]), default="key", show_default=True,
              help="Group by API key (tenant), door (cli, http, kafka, bucket) or template.")
def usage_cmd(since: str, by: str) -> None:
    """What documents cost: CPU and wall seconds, pages and bytes of every stage, per group (README "Costs")."""
    from ocrstream.storage import usage
    from ocrstream.storage.db import create_pool

    when = parse_since(since)

    async def run() -> list[dict]:
        pool = await create_pool(get_settings(), max_size=1)
        try:
            return await usage.usage(pool, when, by)
        finally:
            await pool.close()

    rows = asyncio.run(run())
    click.echo(f"since {when.isoformat(timespec='seconds')}, by {by}")
    click.echo(render_table(rows, by) if rows else "no results stored in that time")
