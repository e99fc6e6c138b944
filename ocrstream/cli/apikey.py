"""API keys of the HTTP doors: ``apikey create``, ``apikey list``, ``apikey revoke``."""

from __future__ import annotations

from pathlib import Path

import click

from ocrstream.cli.app import get_settings, main


@main.group()
def apikey() -> None:
    """API keys of the HTTP doors (stored hashed in OCRSTREAM_API_KEYS_FILE)."""


@apikey.command("create")
@click.argument("name")
@click.option("--scopes", default="ingest,query", show_default=True, help="Comma list of: ingest, query, review.")
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
