#!/usr/bin/env bash
# The tests, on a fresh machine: venv, install with test extras, every test (slow ones too:
# they start a real embedded Kafka API, S3 and PostgreSQL themselves).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest -ra "$@"
