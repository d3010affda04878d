#!/usr/bin/env bash
# Benchmarks seatwarden on both deployments from one command, so their
# numbers can be compared side by side:
#
#   (a) embedded: SQLite in a fresh temp data dir + the in-process ledger;
#   (b) shared:   Redis + PostgreSQL (a fresh database), via scripts/services.sh.
#
# After a release build, for each it starts target/release/seatwarden on a free
# loopback port, creates an organization and a license with one seat per
# session, runs target/release/seatwarden-bench (acquire, heartbeat, release)
# against it and stops the server. Both runs use one RSA key generated up
# front, so key generation is never measured; seatwarden-bench also reports
# this machine's signing rate for that key, which bounds acquires/s.
#
# Usage: scripts/bench.sh [flags]
#   --sessions N        sessions acquired per run          (default 2000)
#   --heartbeats N      heartbeats per session             (default 10)
#   --concurrency N     requests in flight                 (default 32)
#   --rsa-bits N        signing key size: 2048|3072|4096   (default 4096)
#   --only embedded|shared
#                       run just one of the two deployments (default both)
#   --no-build          skip `cargo build --release`
#   -h, --help          show this help
#
# With the defaults a run takes about a minute or two on a 2-core machine
# after the build. When a run fails, server logs and outputs are kept in the
# work dir it names; otherwise everything is removed on exit.

set -euo pipefail

sessions=2000
heartbeats=10
concurrency=32
rsa_bits=4096
only=""
build=1

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

while (($#)); do
  case "$1" in
    --sessions) sessions=$2; shift 2 ;;
    --heartbeats) heartbeats=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --rsa-bits) rsa_bits=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in "" | embedded | shared) ;; *) echo "bench: --only takes embedded or shared" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
root=$PWD

if ((build)); then
  echo "bench: building release binaries" >&2
  cargo build --release --bin seatwarden --bin seatwarden-bench
fi
server="$root/target/release/seatwarden"
bench="$root/target/release/seatwarden-bench"

work=$(mktemp -d /tmp/seatwarden-bench.XXXXXX)
server_pid=""

stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}

cleanup() {
  local rc=$?
  stop_server
  if ((rc)); then
    echo "bench: failed; server logs and outputs are in $work" >&2
  else
    rm -rf "$work"
  fi
  if declare -F sw_stop_services >/dev/null; then sw_stop_services; fi
}

if [ "$only" != embedded ]; then
  # Starts Redis and PostgreSQL and exports SEATWARDEN_TEST_REDIS_URL and
  # SEATWARDEN_TEST_PG_URL; our EXIT trap (below) stops them.
  # shellcheck source=services.sh
  . "$root/scripts/services.sh"
  set -euo pipefail
fi
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Settings every run shares; everything not named here is the shipped default.
for var in $(compgen -e SEATWARDEN__ || true); do unset "$var"; done
export SEATWARDEN__SIGNING__KEY_PATH="$work/signing-key.pem"
export SEATWARDEN__SIGNING__RSA_BITS="$rsa_bits"
export SEATWARDEN__SIGNING__GENERATE_IF_MISSING=false
export SEATWARDEN__SEATS__LEASE_TTL_SECS=360

echo "bench: generating one RSA-$rsa_bits key for both runs" >&2
openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$rsa_bits" \
  -out "$SEATWARDEN__SIGNING__KEY_PATH" 2>/dev/null
chmod 600 "$SEATWARDEN__SIGNING__KEY_PATH"
export NO_COLOR=1

# run NAME: benchmarks one deployment, whose settings are in the environment.
run() {
  local name=$1 port org key deadline
  port=$(free_port)
  export SEATWARDEN__HTTP__LISTEN="127.0.0.1:$port"
  mkdir -p "$SEATWARDEN__DATA_DIR"

  org=$("$server" org create --name "bench-$name" | jq -r .id)
  key=$("$server" license create --org "$org" --seats "$sessions" --tier bench | jq -r .key)

  "$server" serve 2>"$work/$name-server.log" &
  server_pid=$!
  deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null "http://127.0.0.1:$port/health/ready" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null || ((SECONDS > deadline)); then
      echo "bench: the $name server did not become ready; its log:" >&2
      cat "$work/$name-server.log" >&2
      exit 1
    fi
    sleep 0.2
  done

  echo
  echo "=== $name ==="
  "$bench" --url "http://127.0.0.1:$port" --license-key "$key" --label "$name" \
    --concurrency "$concurrency" --sessions "$sessions" --heartbeats-per-session "$heartbeats" \
    --key-path "$SEATWARDEN__SIGNING__KEY_PATH" | tee "$work/$name.out"
  stop_server
}

if [ "$only" != shared ]; then
  export SEATWARDEN__DATA_DIR="$work/embedded"
  run embedded
fi

if [ "$only" != embedded ]; then
  db="sw_bench_$(date +%s)_$$"
  psql -q -v ON_ERROR_STOP=1 "$SEATWARDEN_TEST_PG_URL" -c "CREATE DATABASE $db"
  export SEATWARDEN__DATA_DIR="$work/shared"
  export SEATWARDEN__DATABASE__URL="${SEATWARDEN_TEST_PG_URL%/*}/$db"
  export SEATWARDEN__REDIS__URL="$SEATWARDEN_TEST_REDIS_URL"
  run shared
fi

echo
echo "=== summary: req/s (p50 ms / p99 ms) [non-2xx] ==="
printf '%-10s %-24s %-24s %-24s %s\n' deployment acquire heartbeat release "RSA sign ceiling"
for name in embedded shared; do
  [ -f "$work/$name.out" ] || continue
  # shellcheck disable=SC2046
  printf '%-10s %-24s %-24s %-24s %s\n' "$name" $(tail -n 1 "$work/$name.out" | jq -r '
    def cell(p): "\(p.rps)(\(p.p50_ms)/\(p.p99_ms))" + (if p.non_2xx > 0 then "[\(p.non_2xx)]" else "" end);
    cell(.phases.acquire), cell(.phases.heartbeat), cell(.phases.release),
    "\(.signing.acquire_ceiling_per_s)/s(RSA-\(.signing.rsa_bits))"')
done
