#!/usr/bin/env bash
# The demo, end to end on a fresh machine: venv, install, embedded stack, four stages,
# the sample documents (or --input DIR), their text printed, everything stopped.
#   ./demo.sh                                           # samples/
#   ./demo.sh --input ../shared/data/sroie-dev/pages/img  # 60 real receipts
set -euo pipefail
cd "$(dirname "$0")"
tools/venv.sh
exec .venv/bin/ocrstream demo "$@"
