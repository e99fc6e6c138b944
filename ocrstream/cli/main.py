"""The ``ocrstream`` command line: the group (:mod:`.app`) with every command module registered.

A module per command group: :mod:`.processes` (run, probe, lag-exporter, settings), :mod:`.submit`,
:mod:`.documents` (status, tail-results, search, export, reprocess, ocr), :mod:`.dev` (dev up/down, demo),
:mod:`.dlq`, :mod:`.webhook`, :mod:`.apikey`, :mod:`.model`, :mod:`.usage`. Each module imports only
:mod:`.app`; importing this one registers them all (click decorators), in this order in ``--help``.
"""

from __future__ import annotations

from ocrstream.cli import apikey, dev, dlq, documents, model, processes, submit, usage, webhook  # noqa: F401 - registers
from ocrstream.cli.app import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
