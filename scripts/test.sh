#!/usr/bin/env bash
# The whole test suite, on a fresh machine:
#   bash scripts/test.sh [extra cargo test args]
#
# Installs redis-server and PostgreSQL if they are missing (Debian), starts
# throwaway instances on free loopback ports (PostgreSQL as the unprivileged
# `postgres` user), runs every test of the workspace against them, and
# removes them afterwards. CI (.ci/run) runs exactly this.
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
