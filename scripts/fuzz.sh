#!/usr/bin/env bash
# Fuzzes the HTTP API with Schemathesis against the OpenAPI document the
# server serves (GET /api/v1/openapi.json), on both deployments:
#
#   bash scripts/fuzz.sh [options]
#
#   --deployment D     embedded, shared or both (default both). embedded is
#                      SQLite + the in-process ledger in a fresh data dir;
#                      shared is PostgreSQL + Redis (scripts/services.sh is
#                      sourced unless SEATWARDEN_TEST_PG_URL and
#                      SEATWARDEN_TEST_REDIS_URL are already set; each run
#                      gets its own PostgreSQL database).
#   --max-examples N   examples per operation and phase (default 25)
#   --max-time S       give each pass a time budget of S seconds instead:
#                      Schemathesis keeps fuzzing until it is spent
#   --pass-timeout S   hard limit per pass (default 600); a pass that
#                      reaches it is killed and counts as failed
#   --workers N        concurrent Schemathesis workers (default 1: with
#                      more, CPython before 3.11.8/3.12.1 can fail in
#                      Hypothesis with "AST constructor recursion depth
#                      mismatch", gh-106905)
#   --phases P         Schemathesis phases (default
#                      examples,coverage,fuzzing,stateful)
#   --seed N           Schemathesis seed, for a reproducible run
#
# The server is SEATWARDEN_BIN (default target/debug/seatwarden); nothing is
# built here. Schemathesis (the version in scripts/fuzz/requirements.txt) is
# installed into target/fuzz-venv when missing; it needs CPython >= 3.11.
#
# Each deployment gets a fresh server, seeded by scripts/fuzz/seed.py (a
# platform administrator, a verified owner of an organization, licenses,
# live sessions, a machine, a queue ticket, an invitation and an API key),
# then two passes of `st run`:
#   user   every operation but /api/v1/admin/*, with the owner's access
#          token for `bearer`, the seeded session's seat token for
#          `seat_token` and the node's ops.token for `ops_token`;
#   admin  /api/v1/admin/* and /api/v1/ops/*, with the platform
#          administrator's access token for both.
# scripts/fuzz/seatwarden_hooks.py sends about half of the generated
# requests with variants: the seeded ids, keys and tokens in place of
# generated path parameters, query parameters and body fields (to get past
# the 404s), a NUL byte appended to one field (PostgreSQL refuses NUL in
# text and jsonb; SQLite takes it), or boundary date-times.
#
# Checks: not_a_server_error, status_code_conformance,
# content_type_conformance, response_headers_conformance and
# response_schema_conformance. After each pass the server must still run
# and answer GET /health/live with 200; a panic in its log also fails.
# One 5xx is not counted: 503 `billing_disabled` from the three billing
# routes, their documented answer on a server without `stripe.*` keys
# (billing is off by default, as here); SW_FUZZ_STRICT_5XX=1 counts it.
#
# Rate limits are switched off (SEATWARDEN__RATE_LIMITS__ENABLED=false):
# with them on, most requests would be 429s after the first burst, which
# is conformant but fuzzes nothing. Leases, access tokens and queue polls
# are lengthened for the same reason (the seeded credentials must outlive
# the run).
#
# Exit status: 0 when every pass of every deployment found nothing, 1
# otherwise. Logs, the seed data, and Schemathesis' output and JSON/NDJSON
# reports stay in a temporary folder whose path is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

deployments=both
max_examples=25
max_time=""
pass_timeout=600
workers=1
phases=examples,coverage,fuzzing,stateful
seed=""
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --deployment) deployments=$2; shift 2 ;;
    --max-examples) max_examples=$2; shift 2 ;;
    --max-time) max_time=$2; shift 2 ;;
    --pass-timeout) pass_timeout=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --phases) phases=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "fuzz.sh: unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
done
case "$deployments" in
  both) deployments="embedded shared" ;;
  embedded | shared) ;;
  *) echo "fuzz.sh: --deployment is embedded, shared or both" >&2; exit 2 ;;
esac

BIN="${SEATWARDEN_BIN:-$REPO/target/debug/seatwarden}"
if [ ! -x "$BIN" ]; then
  echo "fuzz.sh: no seatwarden binary at $BIN; build it (cargo build) or set SEATWARDEN_BIN" >&2
  exit 1
fi
BIN="$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")"

LOGS=$(mktemp -d /tmp/seatwarden-fuzz.XXXXXX)
echo "fuzz: logs in $LOGS" >&2

# --- cleanup: our servers, our database, the services if we started them ---
server_pid=""
st_pid=""
pg_dbs=()
fuzz_cleanup() {
  local rc=$?
  if [ -n "$st_pid" ] && kill -0 "$st_pid" 2>/dev/null; then
    # timeout passes the signal on to st.
    kill -TERM "$st_pid" 2>/dev/null || true
    wait "$st_pid" 2>/dev/null || true
  fi
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  if ((${#pg_dbs[@]})) && [ -n "${PG_URL:-}" ]; then
    for db in "${pg_dbs[@]}"; do
      "$PSQL" "$PG_URL" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
  fi
  if declare -F sw_stop_services >/dev/null; then sw_stop_services; fi
  exit "$rc"
}
trap fuzz_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Schemathesis, pinned, in target/fuzz-venv --------------------------------
VENV="$REPO/target/fuzz-venv"
REQS="$REPO/scripts/fuzz/requirements.txt"
want_version=$(sed -n 's/^schemathesis==\([^ ]*\).*/\1/p' "$REQS")
have_version() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null || true; }
if [ "$(have_version)" != "$want_version" ]; then
  python=""
  for candidate in ${PYTHON:-} python3 python3.13 python3.12 python3.11 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python=$candidate
      break
    fi
  done
  if [ -z "$python" ]; then
    echo "fuzz.sh: Schemathesis needs CPython 3.11 or newer (set PYTHON)" >&2
    exit 1
  fi
  if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      # Debian's python3 ships venv without ensurepip (package python3-venv).
      rm -rf "$VENV"
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "fuzz: installing python3-venv" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null 2>&1 \
          || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
      fi
      "$python" -m venv "$VENV"
    fi
  fi
  echo "fuzz: installing schemathesis $want_version into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
fi
ST="$VENV/bin/st"
echo "fuzz: $("$ST" --version)" >&2

# --- PostgreSQL and Redis for the shared deployment ---------------------------
PSQL=psql
PG_URL=""
REDIS_URL=""
if [[ " $deployments " == *" shared "* ]]; then
  if [ -z "${SEATWARDEN_TEST_PG_URL:-}" ] || [ -z "${SEATWARDEN_TEST_REDIS_URL:-}" ]; then
    # shellcheck source=scripts/services.sh
    . scripts/services.sh
    set -euo pipefail
    # services.sh set its own EXIT trap; ours calls its cleanup.
    trap fuzz_cleanup EXIT
  fi
  PG_URL=$SEATWARDEN_TEST_PG_URL
  REDIS_URL=$SEATWARDEN_TEST_REDIS_URL
  if ! command -v psql >/dev/null 2>&1; then
    for PSQL in /usr/lib/postgresql/*/bin/psql; do :; done # the newest
  fi
fi

free_port() {
  "$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

OPS_TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance

declare -a results=()    # "deployment pass verdict detail"
failed=0

# start_server DIR NAME: starts the binary configured for deployment NAME
# with its data in DIR/data, waits for /health/ready; sets server_pid, URL.
start_server() {
  local dir=$1 name=$2 port
  port=$(free_port)
  URL="http://127.0.0.1:$port"
  mkdir -p "$dir/data"
  # Only our settings: none leak in from the caller's environment.
  local -a env_args=(-u RUST_LOG)
  while IFS='=' read -r k _; do
    [[ $k == SEATWARDEN__* ]] && env_args+=(-u "$k")
  done < <(env)
  env_args+=(
    "SEATWARDEN__DATA_DIR=$dir/data"
    "SEATWARDEN__HTTP__LISTEN=127.0.0.1:$port"
    "SEATWARDEN__HTTP__PUBLIC_URL=$URL"
    "SEATWARDEN__SIGNING__RSA_BITS=2048"
    "SEATWARDEN__MAIL__TEMPLATE_DIR=$REPO/config/templates/email"
    "SEATWARDEN__OPS__TOKEN=$OPS_TOKEN"
    "SEATWARDEN__RATE_LIMITS__ENABLED=false"
    "SEATWARDEN__AUTH__ACCESS_TOKEN_TTL_SECS=14400"
    "SEATWARDEN__SEATS__LEASE_TTL_SECS=14400"
    "SEATWARDEN__QUEUE__POLL_SECS=600"
    "SEATWARDEN__LOG__LEVEL=info"
  )
  if [ "$name" = shared ]; then
    local db
    db="sw_fuzz_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    "$PSQL" "$PG_URL" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE $db" >/dev/null
    pg_dbs+=("$db")
    env_args+=("SEATWARDEN__DATABASE__URL=${PG_URL%/*}/$db" "SEATWARDEN__REDIS__URL=$REDIS_URL")
  fi
  SERVER_ENV=("${env_args[@]}")
  (cd "$dir/data" && exec env "${SERVER_ENV[@]}" "$BIN" serve) >"$dir/server.log" 2>&1 </dev/null &
  server_pid=$!
  for _ in $(seq 1 1200); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "fuzz: the $name server exited at start:" >&2
      tail -20 "$dir/server.log" >&2
      return 1
    fi
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "$URL/health/ready")" = 200 ]; then
      return 0
    fi
    sleep 0.1
  done
  echo "fuzz: the $name server was not ready within 120 s" >&2
  return 1
}

stop_server() {
  local dir=$1
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  local rc=0
  for _ in $(seq 1 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server_pid" 2>/dev/null; then
    echo "fuzz: the server did not stop within 15 s of SIGTERM; killing it" >&2
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  wait "$server_pid" 2>/dev/null || rc=$?
  echo "$rc" >"$dir/server.exit"
  server_pid=""
}

# server_alive DEPLOYMENT PASS DIR: the crash check after a pass.
server_alive() {
  local dep=$1 pass=$2 dir=$3 live
  if ! kill -0 "$server_pid" 2>/dev/null; then
    results+=("$dep $pass CRASH the server process exited (see $dir/server.log)")
    return 1
  fi
  live=$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL/health/live" || true)
  if [ "$live" != 200 ]; then
    results+=("$dep $pass CRASH GET /health/live answered ${live:-nothing}")
    return 1
  fi
  return 0
}

# run_pass DEPLOYMENT PASS DIR BEARER OPS_BEARER [st filter args...]
run_pass() {
  local dep=$1 pass=$2 dir=$3 bearer=$4 ops_bearer=$5
  shift 5
  local out="$dir/$pass"
  mkdir -p "$out"
  # shellcheck disable=SC2054 # the commas are Schemathesis' list syntax
  local -a args=(
    --config-file "$REPO/scripts/fuzz/schemathesis.toml"
    run "$URL/api/v1/openapi.json"
    --checks "$CHECKS"
    --phases "$phases"
    --max-examples "$max_examples"
    --workers "$workers"
    --request-timeout 30
    --no-color
    --report json,ndjson
    --report-dir "$out"
    --report-json-path "$out/report.json"
    --report-ndjson-path "$out/events.ndjson"
    "$@"
  )
  [ -n "$max_time" ] && args+=(--max-time "$max_time")
  [ -n "$seed" ] && args+=(--seed "$seed")
  echo "fuzz: $dep/$pass: st ${args[*]}" >&2
  local rc=0
  (
    cd "$out"
    export SW_FUZZ_SEED="$dir/seed.json"
    export SW_FUZZ_BEARER="$bearer"
    export SW_FUZZ_SEAT_TOKEN
    SW_FUZZ_SEAT_TOKEN=$(jq -r .seat_token "$dir/seed.json")
    export SW_FUZZ_OPS_TOKEN="$ops_bearer"
    export PYTHONPATH="$REPO/scripts/fuzz${PYTHONPATH:+:$PYTHONPATH}"
    export SCHEMATHESIS_HOOKS=seatwarden_hooks
    export PYTHONDONTWRITEBYTECODE=1 # no __pycache__ in scripts/fuzz/
    exec timeout --kill-after=10 "$pass_timeout" "$ST" "${args[@]}"
  ) >"$out/schemathesis.txt" 2>&1 &
  # In the background and waited for, so that a signal runs our trap at once
  # (timeout puts st in a process group of its own; the trap ends it).
  st_pid=$!
  wait "$st_pid" || rc=$?
  st_pid=""
  local cases filtered st_seed
  cases=$(jq -r '"\(.test_cases.generated) cases, \(.test_cases.unique_failures) distinct failures, \(.errors | length) errors"' \
    "$out/report.json" 2>/dev/null || echo "no report")
  filtered=$(sed -n 's/^Filtered: \([0-9]*\).*/\1/p' "$out/schemathesis.txt" | head -1)
  [ -n "$filtered" ] && cases="$cases, $filtered documented 503 billing_disabled not counted"
  st_seed=$(sed -n 's/^Seed: \([0-9]*\).*/\1/p' "$out/schemathesis.txt" | head -1)
  [ -n "$st_seed" ] && cases="$cases; --seed $st_seed"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    results+=("$dep $pass FAIL killed after ${pass_timeout}s ($cases)")
    failed=1
  elif [ "$rc" != 0 ]; then
    results+=("$dep $pass FAIL st exited $rc: $cases")
    failed=1
  else
    results+=("$dep $pass ok $cases")
  fi
  server_alive "$dep" "$pass" "$dir" || failed=1
}

command -v jq >/dev/null 2>&1 || {
  echo "fuzz: installing jq" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
}

for dep in $deployments; do
  dir="$LOGS/$dep"
  mkdir -p "$dir"
  echo "fuzz: $dep: starting the server" >&2
  if ! start_server "$dir" "$dep"; then
    results+=("$dep setup FAIL the server did not start (see $dir/server.log)")
    failed=1
    stop_server "$dir"
    continue
  fi
  if ! env "${SERVER_ENV[@]}" "$VENV/bin/python" "$REPO/scripts/fuzz/seed.py" \
    --url "$URL" --bin "$BIN" --data-dir "$dir/data" >"$dir/seed.json" 2>"$dir/seed.log"; then
    results+=("$dep setup FAIL seeding: $(tail -1 "$dir/seed.log")")
    failed=1
    stop_server "$dir"
    continue
  fi
  access=$(jq -r .access_token "$dir/seed.json")
  admin=$(jq -r .admin_token "$dir/seed.json")
  run_pass "$dep" user "$dir" "$access" "$OPS_TOKEN" --exclude-path-regex '^/api/v1/admin/'
  run_pass "$dep" admin "$dir" "$admin" "$admin" --include-path-regex '^/api/v1/(admin|ops)/'
  panics=$(grep -c 'panicked at' "$dir/server.log" || true)
  if [ "${panics:-0}" != 0 ]; then
    results+=("$dep server FAIL $panics panic(s) in $dir/server.log")
    failed=1
  fi
  stop_server "$dir"
done

# --- summary ---------------------------------------------------------------------
echo
echo "== fuzz summary ($("$ST" --version); $max_examples examples per operation and phase; phases $phases) =="
for r in "${results[@]}"; do
  read -r dep pass verdict detail <<<"$r"
  printf '%-9s %-6s %-5s %s\n' "$dep" "$pass" "$verdict" "$detail"
done
"$VENV/bin/python" "$REPO/scripts/fuzz/summarize.py" "$LOGS" || true
echo "logs: $LOGS"
if ((failed)); then
  echo "fuzz: FAILED" >&2
  exit 1
fi
echo "fuzz: no failures"
