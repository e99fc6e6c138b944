"""``python -m ocrstream.cli``."""

from ocrstream.cli.main import main

main()
