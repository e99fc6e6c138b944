#!/usr/bin/env bash
# The demo, end to end on a fresh machine: venv, install, embedded stack, four stages,
# the sample documents (or --input DIR), their text printed, everything stopped.
#   ./demo.sh                                           # samples/
#   ./demo.sh --input ../shared/data/sroie-dev/pages/img  # 60 real receipts
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
exec .venv/bin/ocrstream demo "$@"
