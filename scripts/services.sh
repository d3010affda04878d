#!/usr/bin/env bash
# Starts throwaway redis-server and PostgreSQL instances on free loopback
# ports for the test suite and the benchmark, and exports their URLs:
#
#   SEATWARDEN_TEST_REDIS_URL  redis://127.0.0.1:PORT
#   SEATWARDEN_TEST_REDIS_CLUSTER_URLS
#                              redis://127.0.0.1:P1,...:P2,...:P3, a Redis
#                              Cluster of three masters
#   SEATWARDEN_TEST_PG_URL     postgres://postgres@127.0.0.1:PORT/postgres
#   SEATWARDEN_TEST_SMTP_URL   smtp://127.0.0.1:PORT (aiosmtpd, no TLS, no auth)
#   SEATWARDEN_TEST_SMTP_DIR   the Maildir it stores every message in (DIR/new/),
#                              one file each, with X-RcptTo naming the recipients
#   SEATWARDEN_TEST_PKCS11_MODULE
#                              SoftHSM2's PKCS#11 module (tests make their own
#                              tokens with softhsm2-util)
#
# Source it (`. scripts/services.sh`); it installs what is missing, and the
# servers and their data are removed when the sourcing shell exits.
# PostgreSQL refuses to run as root, so it runs as the `postgres` user.

set -euo pipefail

sw_need_install=()
command -v redis-server >/dev/null 2>&1 || sw_need_install+=(redis-server)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  sw_need_install+=(postgresql)
fi
command -v python3 >/dev/null 2>&1 || sw_need_install+=(python3)
# The SMTP sink: aiosmtpd for Debian's own python3 (an unrelated python3
# earlier on PATH, such as a pyenv shim, doesn't see Debian's modules).
sw_smtp_python=""
for sw_py in python3 /usr/bin/python3; do
  if command -v "$sw_py" >/dev/null 2>&1 && "$sw_py" -c 'import aiosmtpd' 2>/dev/null; then
    sw_smtp_python=$sw_py
    break
  fi
done
[ -n "$sw_smtp_python" ] || sw_need_install+=(python3-aiosmtpd)
command -v softhsm2-util >/dev/null 2>&1 || sw_need_install+=(softhsm2)
if ((${#sw_need_install[@]})); then
  echo "services: installing ${sw_need_install[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${sw_need_install[@]}" >/dev/null
fi
# The Debian package starts a system-wide redis; ours is separate.

sw_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

SW_SERVICES_DIR=$(mktemp -d /tmp/seatwarden-services.XXXXXX)
chmod 755 "$SW_SERVICES_DIR"

# --- Redis -----------------------------------------------------------------
sw_redis_port=$(sw_free_port)
redis-server --port "$sw_redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$SW_SERVICES_DIR" --daemonize yes --pidfile "$SW_SERVICES_DIR/redis.pid" \
  --logfile "$SW_SERVICES_DIR/redis.log" >/dev/null
export SEATWARDEN_TEST_REDIS_URL="redis://127.0.0.1:$sw_redis_port"

# --- Redis Cluster: three masters, no replicas ---------------------------------
# Each node's cluster bus gets a free port of its own (--cluster-port), not
# the default port+10000, which another process may hold.
sw_cluster_nodes=()
sw_cluster_urls=()
for sw_i in 1 2 3; do
  sw_port=$(sw_free_port)
  sw_bus=$(sw_free_port)
  mkdir -p "$SW_SERVICES_DIR/cluster$sw_i"
  redis-server --port "$sw_port" --cluster-port "$sw_bus" --bind 127.0.0.1 \
    --cluster-enabled yes --cluster-config-file "$SW_SERVICES_DIR/cluster$sw_i/nodes.conf" \
    --save '' --appendonly no --dir "$SW_SERVICES_DIR/cluster$sw_i" --daemonize yes \
    --pidfile "$SW_SERVICES_DIR/cluster$sw_i/redis.pid" \
    --logfile "$SW_SERVICES_DIR/cluster$sw_i/redis.log" >/dev/null
  sw_cluster_nodes+=("127.0.0.1:$sw_port")
  sw_cluster_urls+=("redis://127.0.0.1:$sw_port")
done
for sw_node in "${sw_cluster_nodes[@]}"; do
  for _ in $(seq 1 100); do
    redis-cli -h 127.0.0.1 -p "${sw_node#*:}" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
done
redis-cli --cluster create "${sw_cluster_nodes[@]}" --cluster-replicas 0 --cluster-yes \
  >"$SW_SERVICES_DIR/cluster-create.log" 2>&1
# Every node must agree that all slots are served before a test uses it.
for sw_node in "${sw_cluster_nodes[@]}"; do
  for _ in $(seq 1 200); do
    redis-cli -h 127.0.0.1 -p "${sw_node#*:}" cluster info 2>/dev/null | grep -q 'cluster_state:ok' && break
    sleep 0.05
  done
done
SEATWARDEN_TEST_REDIS_CLUSTER_URLS=$(IFS=,; echo "${sw_cluster_urls[*]}")
export SEATWARDEN_TEST_REDIS_CLUSTER_URLS

# --- PostgreSQL --------------------------------------------------------------
sw_pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
sw_pg_port=$(sw_free_port)
sw_pg_data="$SW_SERVICES_DIR/pg"
mkdir -p "$sw_pg_data" "$SW_SERVICES_DIR/pglog" && chown postgres "$sw_pg_data" "$SW_SERVICES_DIR/pglog"
if [ "$(id -u)" = 0 ]; then sw_as_pg=(runuser -u postgres --); else sw_as_pg=(); fi
"${sw_as_pg[@]}" "$sw_pg_bin/initdb" -D "$sw_pg_data" -A trust -U postgres --no-sync >"$SW_SERVICES_DIR/initdb.log" 2>&1
"${sw_as_pg[@]}" "$sw_pg_bin/pg_ctl" -D "$sw_pg_data" -l "$SW_SERVICES_DIR/pglog/pg.log" -w start \
  -o "-c listen_addresses=127.0.0.1 -p $sw_pg_port -k $sw_pg_data -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400" >/dev/null
export SEATWARDEN_TEST_PG_URL="postgres://postgres@127.0.0.1:$sw_pg_port/postgres"

# --- SMTP sink -----------------------------------------------------------------
if [ -z "$sw_smtp_python" ]; then
  if /usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null; then
    sw_smtp_python=/usr/bin/python3
  else
    # Not a Debian machine with the package: PyPI, into a private venv.
    python3 -m venv "$SW_SERVICES_DIR/venv" >/dev/null
    "$SW_SERVICES_DIR/venv/bin/pip" install -q aiosmtpd >/dev/null
    sw_smtp_python="$SW_SERVICES_DIR/venv/bin/python"
  fi
fi
sw_smtp_port=$(sw_free_port)
export SEATWARDEN_TEST_SMTP_DIR="$SW_SERVICES_DIR/mail"
mkdir -p "$SEATWARDEN_TEST_SMTP_DIR"/{tmp,new,cur}
# Mailbox stores each message as its own file in the Maildir's new/ before it
# answers 250, so a message a sender saw accepted is already on disk.
"$sw_smtp_python" -m aiosmtpd -n -l "127.0.0.1:$sw_smtp_port" \
  -c aiosmtpd.handlers.Mailbox "$SEATWARDEN_TEST_SMTP_DIR" \
  >"$SW_SERVICES_DIR/smtp.log" 2>&1 &
sw_smtp_pid=$!
for _ in $(seq 1 100); do
  if "$sw_smtp_python" -c "import socket; socket.create_connection(('127.0.0.1', $sw_smtp_port), 0.2).close()" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
export SEATWARDEN_TEST_SMTP_URL="smtp://127.0.0.1:$sw_smtp_port"

# --- SoftHSM2: a PKCS#11 module; each test initializes its own token ----------
for sw_module in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
  if [ -f "$sw_module" ]; then
    export SEATWARDEN_TEST_PKCS11_MODULE="$sw_module"
    break
  fi
done
if [ -z "${SEATWARDEN_TEST_PKCS11_MODULE:-}" ]; then
  echo "services: softhsm2 is installed but libsofthsm2.so was not found" >&2
  exit 1
fi

sw_stop_services() {
  kill "$sw_smtp_pid" 2>/dev/null || true
  "${sw_as_pg[@]}" "$sw_pg_bin/pg_ctl" -D "$sw_pg_data" -m immediate stop >/dev/null 2>&1 || true
  [ -f "$SW_SERVICES_DIR/redis.pid" ] && kill "$(cat "$SW_SERVICES_DIR/redis.pid")" 2>/dev/null || true
  for sw_pid in "$SW_SERVICES_DIR"/cluster*/redis.pid; do
    [ -f "$sw_pid" ] && kill "$(cat "$sw_pid")" 2>/dev/null || true
  done
  rm -rf "$SW_SERVICES_DIR"
}
trap sw_stop_services EXIT

echo "services: redis at $SEATWARDEN_TEST_REDIS_URL, cluster at $SEATWARDEN_TEST_REDIS_CLUSTER_URLS, postgres at $SEATWARDEN_TEST_PG_URL, smtp at $SEATWARDEN_TEST_SMTP_URL" >&2
set +euo pipefail
