#!/usr/bin/env bash
# A chaos run: three seatwarden nodes on one Redis and one PostgreSQL,
# a mixed seat load, faults injected underneath, and checks afterwards.
#
#   scripts/chaos.sh [--duration SECS] [--seed N] [--keep] [--slack SECS]
#
# Starts, on free loopback ports and under one temp dir: PostgreSQL (as the
# `postgres` user), Redis with appendonly yes / appendfsync everysec, a
# Python asyncio TCP proxy between the nodes and Redis that can stall the
# network, and three nodes of $SEATWARDEN_BIN (default target/debug/seatwarden)
# with a 4 s lease, 1 s heartbeats and a 1 s sweep.
#
# Load: 5 licenses with 2-3 seats, about 2.4 machines per seat, each machine
# acquiring on a random node, heartbeating on random nodes, releasing (or, now
# and then, vanishing without a word so that its lease lapses), and an
# organization owner force-releasing a held session every few seconds.
#
# Faults, spread over the run (one of each per started minute, in random
# order): kill -9 of a random node and its restart; a clean Redis restart on
# the same AOF; a PostgreSQL restart; a 2.5-4 s network stall between the
# nodes and Redis; an `orgs` subsystem restart through the ops API.
#
# Checks (scripts/chaos/checks.py, from the client's request log, samples of
# the ledger and the store, and the store's sessions and audit log): no
# over-allocation at any sampled instant or in the replayed history; no lost
# acquire (every 200/201 session has its record) or release (every 200 has
# its ended record); every abandoned session ends as expired within a bound
# after the load; no 5xx but 503s inside the window of a fault that explains
# them; no heartbeat refused while its lease was live. It prints a table of
# requests, the faults injected and every violation with its evidence, and
# exits 1 on any violation (2 if the run itself failed).
#
#   --duration SECS  load time (default 120; CI uses 60)
#   --seed N         repeat a run's random choices (printed at the start)
#   --keep           keep the work dir even when the run passes
#   --slack SECS     how long after a fault its 503s are still accepted (5)
#
# Needs redis-server, PostgreSQL and python3 >= 3.10 (installed with apt-get
# when missing and running as root); the driver uses the standard library
# only. Logs (node logs, requests.jsonl, the store dump) stay in the work dir,
# which is printed and kept when the run fails; re-check a kept run with
# `python3 scripts/chaos/checks.py DIR`.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"

duration=120 keep=0
args=()
while (($#)); do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --duration=*) duration=${1#*=}; shift ;;
    --seed|--slack) args+=("$1" "$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "chaos.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v python3 >/dev/null 2>&1 || need+=(python3)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "chaos: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "chaos: missing ${need[*]}" >&2
    exit 2
  fi
fi
python=python3
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  python=/usr/bin/python3
  "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "chaos: needs python3 >= 3.10" >&2; exit 2; }
fi

bin="${SEATWARDEN_BIN:-$repo/target/debug/seatwarden}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
if [ ! -x "$bin" ]; then
  echo "chaos: no seatwarden binary at $bin (cargo build, or set SEATWARDEN_BIN)" >&2
  exit 2
fi

work=$(mktemp -d /tmp/seatwarden-chaos.XXXXXX)
chmod 755 "$work"
driver_pid=""
status=2

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$driver_pid" ] && kill -0 "$driver_pid" 2>/dev/null; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$driver_pid" 2>/dev/null || true
  fi
  # Whatever the driver left behind: every pid it started, by id, and only
  # while that pid still runs in this run's work dir (a pid can be reused).
  if [ -f "$work/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] || continue
      cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || continue
      case "$cwd" in "$work" | "$work"/*) kill -KILL "$pid" 2>/dev/null || true ;; esac
    done <"$work/pids"
  fi
  if [ -f "$work/pg/postmaster.pid" ]; then
    pg_ctl=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)/pg_ctl
    if [ "$(id -u)" = 0 ]; then
      runuser -u postgres -- "$pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    else
      "$pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
    fi
  fi
  if [ "$status" = 0 ] && [ "$keep" = 0 ]; then
    rm -rf "$work"
  else
    echo "chaos: logs kept in $work (node*.log, requests.jsonl, sessions.jsonl, audit.jsonl," \
      "faults.jsonl, samples.jsonl, redis/, pglog/, proxy.log)" >&2
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'status=130; exit 130' INT
trap 'status=143; exit 143' TERM

export PYTHONDONTWRITEBYTECODE=1
"$python" "$here/chaos/chaos.py" --work "$work" --duration "$duration" --bin "$bin" \
  ${args[@]+"${args[@]}"} &
driver_pid=$!
set +e
wait "$driver_pid"
status=$?
set -e
driver_pid=""
if [ "$status" != 0 ]; then
  for f in "$work"/node*.log; do
    [ -f "$f" ] || continue
    echo "--- last lines of $f" >&2
    tail -n 15 "$f" >&2
  done
fi
