#!/usr/bin/env bash
# The tests, on a fresh machine: venv, install with test extras, every test (slow ones too:
# they start a real embedded Kafka API, S3 and PostgreSQL themselves).
set -euo pipefail
cd "$(dirname "$0")"
# Installed once per pyproject.toml: later runs (e.g. `./test.sh tests/test_store.py`, `./test.sh -m unit`)
# skip pip while pyproject.toml is unchanged (the stamp holds its hash; delete .venv to reinstall).
stamp=.venv/.installed-pyproject
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python3 -m venv .venv
  if .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' >.venv/pip.log 2>&1; then
    echo "$want" >"$stamp"
  fi
  grep -v '^WARNING: Location' .venv/pip.log || true
fi
# Debian tools the deploy tests use: promtool/prometheus (alert rule unit tests, a real Prometheus
# scraping the stages) and kubectl (kustomize). Installed when missing and we are root (CI is);
# otherwise those tests skip and say how to get them.
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
if ((${#missing[@]})) && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/tmp/ocrstream-apt.log 2>&1 || echo "apt-get install ${missing[*]} failed (see /tmp/ocrstream-apt.log): those tests will skip"
fi
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest -ra "$@"
