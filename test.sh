#!/usr/bin/env bash
# The tests, on a fresh machine: venv from the lock, every test (slow ones too:
# they start a real embedded Kafka API, S3 and PostgreSQL themselves).
set -euo pipefail
cd "$(dirname "$0")"
# Every package at the version and hash requirements.lock names (tools/venv.sh; pip runs only when the
# lock or pyproject.toml changed).
tools/venv.sh
# Debian tools the deploy tests use: promtool/prometheus (alert rule unit tests, a real Prometheus
# scraping the stages) and kubectl (kustomize); chromium for the review page's browser test
# (tests/test_review_page.py, Playwright driving Debian's chromium; never `playwright install`). Installed when missing and we are root (CI is);
# otherwise those tests skip and say how to get them.
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v chromium >/dev/null || missing+=(chromium)
if ((${#missing[@]})) && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} (apt-get)"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >/tmp/ocrstream-apt.log 2>&1 || echo "apt-get install ${missing[*]} failed (see /tmp/ocrstream-apt.log): those tests will skip"
fi
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest -ra "$@"
