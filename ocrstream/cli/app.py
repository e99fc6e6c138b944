"""The ``ocrstream`` command group itself: logging, ``--version``, the settings it reads, exit codes.

Every command module adds its commands to :func:`main` when it is imported; :func:`main` imports a
module when one of its commands is asked for (:data:`COMMAND_MODULES`), so ``ocrstream submit``
starts without the code of ``status``, ``run`` or ``model``."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from ocrstream.errors import ConfigurationError


def get_settings():
    """The process's :class:`~ocrstream.settings.Settings` (pydantic is imported on first use,
    not at start-up: ``--help`` and usage errors answer without it, issue 15)."""
    from ocrstream.settings import get_settings as process_settings

    return process_settings()


#: Libraries whose INFO lines are noise to a user (fontTools: ~45 lines per searchable-PDF export);
#: shown with ``-v``.
CHATTY_LOGGERS = ("aiokafka", "httpx", "fontTools", "ocrmypdf", "pikepdf")


#: command -> the module that defines it (``ocrstream.cli.<module>``). Measured for issue 22 (`python -X
#: importtime`, this host): importing every command module took 84 ms of the 0.25 s a `submit` process
#: spends before it submits; the submit path alone needs :mod:`.submit`.
COMMAND_MODULES: dict[str, str] = {
    "apikey": "apikey", "demo": "dev", "dev": "dev", "dlq": "dlq", "export": "documents", "lag-exporter": "processes",
    "model": "model", "ocr": "documents", "probe": "processes", "reprocess": "documents", "run": "processes",
    "search": "documents", "settings": "processes", "status": "documents", "submit": "submit",
    "tail-results": "documents", "usage": "usage", "webhook": "webhook",
}


class LazyGroup(click.Group):
    """A click group that imports a command's module when the command is first looked up (click's
    documented pattern, "Lazily Loading Subcommands"); ``--help`` lists and so imports them all."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *COMMAND_MODULES})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(f"ocrstream.cli.{COMMAND_MODULES[cmd_name]}")
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; settings that cannot work (:class:`~ocrstream.errors.ConfigurationError`,
        e.g. ``OCRSTREAM_HTTP_PORT=80x``) end it with one line naming them and exit status
        :data:`EXIT_CONFIGURATION`, not a traceback."""
        try:
            return super().invoke(ctx)
        except ConfigurationError as exc:
            click.echo(f"ocrstream: {exc}", err=True)
            ctx.exit(EXIT_CONFIGURATION)


@click.group(cls=LazyGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--env-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Settings file to read (sets OCRSTREAM_ENV_FILE for this command and the processes it "
                   "starts). Default: OCRSTREAM_ENV_FILE, else .ocrstream/dev/stack.env here, else the one "
                   "the last `ocrstream dev up` recorded.")
@click.version_option(package_name="ocrstream", prog_name="ocrstream")
def main(verbose: bool, env_file: Path | None) -> None:
    """ocrstream: event-driven streaming OCR (Kafka stages, S3, ONNX Runtime, PostgreSQL)."""
    if env_file is not None:
        os.environ["OCRSTREAM_ENV_FILE"] = str(env_file.absolute())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.WARNING)


def _quiet_clients() -> None:
    """Client commands report connection failures themselves (one line): unless -v, the Kafka
    client's own connection errors are not logged."""
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


#: Exit codes of ``submit`` and ``status`` (click itself uses 2 for usage errors).
EXIT_FAILED, EXIT_NO_STACK, EXIT_TIMEOUT = 1, 3, 4
#: Exit code of any command whose settings cannot work (as click's usage errors and ``run``'s).
EXIT_CONFIGURATION = 2
