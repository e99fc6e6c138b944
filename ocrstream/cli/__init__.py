"""The ``ocrstream`` command line (click); ``python -m ocrstream.cli`` runs it too."""

from ocrstream.cli.main import main

__all__ = ["main"]
