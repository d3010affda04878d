#!/usr/bin/env bash
# The Python client's tests, against real seatwarden servers:
#
#   bash clients/python/run-tests.sh [pytest args...]
#
# Creates a virtualenv (default: target/python-venv at the repository root,
# reused when present; SEATWARDEN_PY_VENV overrides), installs the package
# with its test extra from this folder, and runs pytest -q with any extra
# arguments. The servers come from SEATWARDEN_BIN (default:
# target/debug/seatwarden); the Redis+PostgreSQL tests need
# SEATWARDEN_TEST_REDIS_URL and SEATWARDEN_TEST_PG_URL (scripts/services.sh
# exports them) and are skipped without. Needs CPython >= 3.10 with pip.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${SEATWARDEN_PY_VENV:-$repo/target/python-venv}"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "run-tests.sh: $python must be CPython 3.10 or newer" >&2
  exit 1
fi

make_venv() {
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if "$python" -m venv "$venv" 2>/dev/null; then
    return
  fi
  # Debian's python3 ships venv without ensurepip (package python3-venv).
  rm -rf "$venv"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "run-tests.sh: installing python3-venv" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
    "$python" -m venv "$venv" && return
    rm -rf "$venv"
  fi
  # Last resort: virtualenv from PyPI.
  "$python" -m pip install -q --disable-pip-version-check virtualenv
  "$python" -m virtualenv -q "$venv"
}

if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  make_venv
fi

# Build from a copy, so that setuptools' in-tree build/ and *.egg-info never
# land in the work tree.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -R "$here/pyproject.toml" "$here/README.md" "$here/src" "$stage/"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "$stage[test]"

export SEATWARDEN_BIN="${SEATWARDEN_BIN:-$repo/target/debug/seatwarden}"
export PYTHONDONTWRITEBYTECODE=1
cd "$here"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
