"""The ``ocrstream`` command group itself: logging, ``--version``, the settings it reads, exit codes.

Every command module (:mod:`ocrstream.cli.main` imports them all) adds its commands to :func:`main`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click


def get_settings():
    """The process's :class:`~ocrstream.settings.Settings` (pydantic is imported on first use,
    not at start-up: ``--help`` and usage errors answer without it, issue 15)."""
    from ocrstream.settings import get_settings as process_settings

    return process_settings()


#: Libraries whose INFO lines are noise to a user (fontTools: ~45 lines per searchable-PDF export);
#: shown with ``-v``.
CHATTY_LOGGERS = ("aiokafka", "httpx", "fontTools", "ocrmypdf", "pikepdf")


@click.group()
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
