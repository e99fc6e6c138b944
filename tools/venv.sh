#!/usr/bin/env bash
# The project's virtualenv (.venv), installed from the lock: every package at the version and hash
# that requirements.lock names (the runtime and every extra but gpu), then ocrstream itself, editable,
# without dependency resolution. Used by demo.sh and test.sh (and so by .ci/run).
# Runs pip only when requirements.lock or pyproject.toml changed since the last install (the stamp
# holds their hash; delete .venv to reinstall from scratch).
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.installed-lock
want="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "installing the locked dependencies into .venv (requirements.lock; a first install takes a few minutes)" >&2
python3 -m venv .venv
if .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements.lock >.venv/pip.log 2>&1 \
   && .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . >>.venv/pip.log 2>&1; then
  echo "$want" >"$stamp"
else
  grep -v -e '^WARNING: Location' -e 'is ignored: it is neither' .venv/pip.log >&2 || true
  echo "pip failed (full log: .venv/pip.log)" >&2
  exit 1
fi
