#!/usr/bin/env bash
# Re-resolve the locks from pyproject.toml, then run the tests on the result.
#   tools/lock.sh            # after editing pyproject.toml: keeps every pin that still fits
#   tools/lock.sh --upgrade  # every package to the newest version the ranges allow
#   tools/lock.sh --no-test  # only write the locks
# Writes requirements.lock (runtime + every extra but gpu: what demo.sh, test.sh and CI install)
# and deploy/requirements.lock (the runtime with the pdf and trocr extras, for the image), the second constrained by the
# first so that both name the same versions. Both carry hashes. Resolution by uv (pinned below);
# torch resolves to the CPU build on this kind of machine's disk (/opt/wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
upgrade=() test=1
for arg in "$@"; do
  case "$arg" in
    --upgrade) upgrade=(--upgrade) ;;
    --no-test) test=0 ;;
    *) echo "usage: tools/lock.sh [--upgrade] [--no-test]" >&2; exit 2 ;;
  esac
done
tooldir="${TMPDIR:-/tmp}/ocrstream-uv"
[ -x "$tooldir/bin/uv" ] || { python3 -m venv "$tooldir" && "$tooldir/bin/pip" install -q uv==0.13.9 2>&1 | grep -v "is ignored: it is neither" || true; }
uv=("$tooldir/bin/uv" pip compile pyproject.toml --python-version 3.11 --python-platform x86_64-manylinux_2_28
    --generate-hashes --no-header --annotation-style line --quiet)
head='# Locked with hashes (python 3.11, linux x86_64). Do not edit: tools/lock.sh rewrites it (README, "Dependencies").'
"${uv[@]}" "${upgrade[@]}" --find-links /opt/wheels --extra test -o requirements.lock
"${uv[@]}" --constraint requirements.lock --extra pdf --extra trocr -o deploy/requirements.lock
for f in requirements.lock deploy/requirements.lock; do
  { echo "$head"; grep -v '^# Locked with hashes' "$f"; } >"$f.tmp" && mv "$f.tmp" "$f"
done
git --no-pager diff --stat -- requirements.lock deploy/requirements.lock || true
if [ "$test" = 1 ]; then
  exec ./test.sh
fi
