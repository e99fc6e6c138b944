"""The ``ocrstream`` command line: the group (:mod:`.app`), which imports a command's module when the
command is asked for (:data:`ocrstream.cli.app.COMMAND_MODULES`).

A module per command group: :mod:`.processes` (run, probe, lag-exporter, settings), :mod:`.submit`,
:mod:`.documents` (status, tail-results, search, export, reprocess, ocr), :mod:`.dev` (dev up/down, demo),
:mod:`.dlq`, :mod:`.webhook`, :mod:`.apikey`, :mod:`.model`, :mod:`.usage`. Each module imports only
:mod:`.app` and registers its commands with click decorators; ``--help`` lists them alphabetically.
"""

from __future__ import annotations

from ocrstream.cli.app import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
