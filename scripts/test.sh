#!/usr/bin/env bash
# The whole test suite, on a fresh machine:
#   bash scripts/test.sh [extra cargo test args]
#
# Installs redis-server and PostgreSQL if they are missing (Debian), starts
# throwaway instances on free loopback ports (PostgreSQL as the unprivileged
# `postgres` user), runs every test of the workspace against them, and
# removes them afterwards; then runs the Python client's tests (pytest, in
# a virtualenv under target/) against real servers. CI (.ci/run) runs
# exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is not installed; install a Rust toolchain (1.94 or newer)" >&2
  exit 1
fi

# shellcheck source=scripts/services.sh
. scripts/services.sh
set -euo pipefail

cargo test --workspace --locked "$@"

# The Python client (clients/python) against real servers: the binary the
# test build above left in target/debug, embedded and on the Redis and
# PostgreSQL started above.
SEATWARDEN_BIN="$PWD/target/debug/seatwarden" bash clients/python/run-tests.sh

# Operations: the chaos run (three nodes under load while Redis, PostgreSQL,
# a node and a subsystem fail; its own Redis and PostgreSQL), Schemathesis
# over the served OpenAPI document on both deployments, the Helm
# chart rendered and validated offline, and the container image when an
# engine can pull its base images here (otherwise it says why it skipped).
SEATWARDEN_BIN="$PWD/target/debug/seatwarden" bash scripts/chaos.sh --duration "${CHAOS_SECS:-60}"
SEATWARDEN_BIN="$PWD/target/debug/seatwarden" bash scripts/fuzz.sh --max-examples "${FUZZ_EXAMPLES:-10}"
SEATWARDEN_BIN="$PWD/target/debug/seatwarden" bash scripts/helm-check.sh
bash scripts/container-check.sh
