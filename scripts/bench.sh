#!/usr/bin/env bash
# Benchmarks seatwarden on both deployments from one command, so their
# numbers can be compared side by side:
#
#   (a) embedded: SQLite in a fresh temp data dir + the in-process ledger;
#   (b) shared:   Redis + PostgreSQL (a fresh database), via scripts/services.sh.
#
# After a release build, for each deployment it creates, through the server's
# CLI (4 at a time):
#   - one organization with --licenses licenses  (the large-customer case),
#   - --orgs organizations with one license each,
#   - a churn pool of --churn-licenses licenses in an organization of its own
#     (in the large one with --churn-same-org),
# starts target/release/seatwarden on a free loopback port and runs
# target/release/seatwarden-bench three times against it:
#   one-org    acquire, heartbeat, release; sessions round-robin over the
#              licenses of the one organization;
#   many-orgs  the same phases, sessions round-robin over the organizations;
#   mixed      heartbeats at --mixed-concurrency on --sessions live sessions of
#              the one organization while --churn-concurrency loops acquire a
#              seat of the churn pool and release it at once, for --mixed-secs;
#              reports heartbeat p50/p99 and the acquire rate under that load.
# Right before each run's acquires, seatwarden-bench measures the signing
# ceiling: the server's own signer on all cores, the most acquires/s the
# machine can do (one signature each), and prints acquire/ceiling.
#
# Each run prints a table per shape and one JSON line; a summary table
# (Markdown) ends the output. Both deployments use one key per algorithm
# (--algorithm), generated up front, so key generation is never measured. Traffic stays on 127.0.0.1.
#
# Usage: scripts/bench.sh [flags]
#   --sessions N          sessions per shape                      (default 2000)
#   --heartbeats N        heartbeats per session (one-org, many-orgs) (default 50)
#   --concurrency N       requests in flight (one-org, many-orgs)   (default 32)
#   --mixed-concurrency N heartbeats in flight in the mixed run     (default 8)
#   --licenses N          licenses in the one organization          (default 100)
#   --orgs N              organizations of the many-orgs shape      (default 100)
#   --mixed-secs N        length of the mixed run                   (default 20)
#   --churn-concurrency N acquire+release loops in the mixed run    (default 16)
#   --churn-licenses N    licenses of the churn pool                (default 10)
#   --churn-same-org      put the churn pool in the one organization
#   --sign-secs N         length of each signing-ceiling measurement (default 2)
#   --quick               small run (~1 min for both after the build): sessions 500,
#                         heartbeats 4, licenses 20, orgs 20, mixed-secs 6,
#                         sign-secs 1; explicit flags still win
#   --rsa-bits N          RS256 key size: 2048|3072|4096            (default 4096)
#   --algorithm LIST      signing algorithms, comma-separated: RS256, ES256,
#                         EdDSA, or HSM-RS256 and HSM-ES256 for a key in a
#                         PKCS#11 token (SoftHSM2, installed if missing);
#                         default RS256. Each gets its own runs of every
#                         deployment and its own signing ceiling
#   --only embedded|shared
#                         run just one of the two deployments (default both)
#   --no-build            skip `cargo build --release`
#   --soak SECS           instead of the three runs: a soak of the mixed load
#                         for SECS (600 for the 10-minute soak) after a 30 s
#                         warm-up, reporting the server's RSS, open files and
#                         sockets after the warm-up, after half the soak and at
#                         its end (each once its sessions are released): growth
#                         in the second half, once bounded caches are full, is
#                         a leak
#   -h, --help            show this help
#
# With the defaults both deployments take about 3 minutes on a 2-core machine
# after the build. When a run fails, server logs and outputs are kept in the
# work dir it names; otherwise everything is removed on exit.

set -euo pipefail

sessions="" heartbeats="" concurrency="" mixed_concurrency="" licenses="" orgs="" mixed_secs=""
churn_concurrency="" churn_licenses="" sign_secs=""
churn_same_org=0 quick=0 rsa_bits=4096 only="" build=1 soak=0 algorithms=RS256

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }

while (($#)); do
  case "$1" in
    --sessions) sessions=$2; shift 2 ;;
    --heartbeats) heartbeats=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --mixed-concurrency) mixed_concurrency=$2; shift 2 ;;
    --licenses) licenses=$2; shift 2 ;;
    --orgs) orgs=$2; shift 2 ;;
    --mixed-secs) mixed_secs=$2; shift 2 ;;
    --churn-concurrency) churn_concurrency=$2; shift 2 ;;
    --churn-licenses) churn_licenses=$2; shift 2 ;;
    --churn-same-org) churn_same_org=1; shift ;;
    --sign-secs) sign_secs=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --rsa-bits) rsa_bits=$2; shift 2 ;;
    --algorithm) algorithms=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    --soak) soak=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "bench: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in "" | embedded | shared) ;; *) echo "bench: --only takes embedded or shared" >&2; exit 2 ;; esac
IFS=, read -r -a algorithm_list <<<"$algorithms"
for alg in "${algorithm_list[@]}"; do
  case "$alg" in RS256 | ES256 | EdDSA | HSM-RS256 | HSM-ES256) ;; *) echo "bench: --algorithm takes RS256, ES256, EdDSA, HSM-RS256 or HSM-ES256 (got $alg)" >&2; exit 2 ;; esac
done
if ((quick)); then
  : "${sessions:=500}" "${heartbeats:=4}" "${licenses:=20}" "${orgs:=20}" "${mixed_secs:=6}" "${sign_secs:=1}"
fi
: "${sessions:=2000}" "${heartbeats:=50}" "${concurrency:=32}" "${licenses:=100}" "${orgs:=100}"
: "${mixed_concurrency:=8}" "${mixed_secs:=20}" "${churn_concurrency:=16}" "${churn_licenses:=10}" "${sign_secs:=2}"
for v in sessions heartbeats concurrency mixed_concurrency licenses orgs churn_concurrency churn_licenses; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "bench: --${v//_/-} takes a positive integer" >&2; exit 2; }
done

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
export SEATWARDEN__SIGNING__RSA_BITS="$rsa_bits"
export SEATWARDEN__SIGNING__GENERATE_IF_MISSING=false
# The access-token key, which nothing generates when generate_if_missing is
# off; the bench never logs in, but a node needs one to start.
SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET="$(openssl rand -hex 32)"
export SEATWARDEN__AUTH__ACCESS_TOKEN_SECRET
export SEATWARDEN__SEATS__LEASE_TTL_SECS=360
# The load beats each session many times a minute, far above the shipped
# limits. Limits this high are never met, but every request is still
# counted, so the limiter's cost stays in the figures.
export SEATWARDEN__RATE_LIMITS__ACQUIRE_PER_MACHINE=1000000/sec
export SEATWARDEN__RATE_LIMITS__HEARTBEAT_PER_SESSION=1000000/sec

# One key per algorithm, generated up front, shared by both deployments.
key_label() {
  case "$1" in
    RS256) echo "RSA-$rsa_bits" ;;
    HSM-RS256) echo "PKCS#11-RSA-$rsa_bits" ;;
    HSM-*) echo "PKCS#11-${1#HSM-}" ;;
    *) echo "$1" ;;
  esac
}
new_key() {
  case "$1" in
    RS256) openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$rsa_bits" -out "$2" 2>/dev/null ;;
    ES256) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$2" 2>/dev/null ;;
    EdDSA) openssl genpkey -algorithm ED25519 -out "$2" 2>/dev/null ;;
  esac
  chmod 600 "$2"
}
hsm_pin=$(openssl rand -hex 8)
for alg in "${algorithm_list[@]}"; do
  echo "bench: generating one $(key_label "$alg") key for both deployments" >&2
  case "$alg" in
    HSM-*)
      # The key goes into a SoftHSM2 token (as another tool would put it
      # there), and the server signs with it through PKCS#11. The key file
      # is only the empty key set's seed, replaced before the server starts.
      if ! command -v softhsm2-util >/dev/null 2>&1; then
        echo "bench: installing softhsm2" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2 >/dev/null
      fi
      if [ -z "${SOFTHSM2_CONF:-}" ]; then
        mkdir -p "$work/softhsm/tokens"
        printf 'directories.tokendir = %s
objectstore.backend = file
log.level = ERROR
' \
          "$work/softhsm/tokens" >"$work/softhsm/softhsm2.conf"
        export SOFTHSM2_CONF="$work/softhsm/softhsm2.conf"
        softhsm2-util --init-token --free --label bench --pin "$hsm_pin" --so-pin "$hsm_pin" >/dev/null
      fi
      new_key "${alg#HSM-}" "$work/hsm-$alg.pem"
      softhsm2-util --import "$work/hsm-$alg.pem" --token bench --label "bench-$alg" \
        --id "$(openssl rand -hex 8)" --pin "$hsm_pin" >/dev/null
      rm -f "$work/hsm-$alg.pem"
      new_key EdDSA "$work/key-$alg.pem"
      ;;
    *) new_key "$alg" "$work/key-$alg.pem" ;;
  esac
done
for module in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
  [ -f "$module" ] && break
done
export NO_COLOR=1

# Helpers for xargs, which runs them in child shells: each writes one key to
# the file it is given.
# new_license ORG SEATS OUT
new_license() {
  "$server" license create --org "$1" --seats "$2" --tier bench | jq -er .key >"$3"
}
# new_org_license NAME SEATS OUT: an organization with one license.
new_org_license() {
  local org
  org=$("$server" org create --name "$1" | jq -er .id)
  new_license "$org" "$2" "$3"
}
export -f new_license new_org_license
export server

# many_licenses OUT COUNT SEATS ORG: COUNT licenses of ORG, keys to OUT.
# many_licenses OUT COUNT SEATS: COUNT organizations with one license each.
many_licenses() {
  local out=$1 count=$2 seats=$3 org=${4:-} dir
  dir=$(mktemp -d "$work/keys.XXXXXX")
  if [ -n "$org" ]; then
    seq "$count" | xargs -P 4 -I{} bash -c 'new_license "$@"' _ "$org" "$seats" "$dir/{}"
  else
    seq "$count" | xargs -P 4 -I{} bash -c 'new_org_license "$@"' _ "bench-org-{}" "$seats" "$dir/{}"
  fi
  cat "$dir"/* >"$out"
  rm -rf "$dir"
  if [ "$(wc -l <"$out")" -ne "$count" ]; then
    echo "bench: expected $count license keys in $out" >&2
    exit 1
  fi
}

# proc_stats: the server's resident memory (kB), open files and sockets, as
# one JSON object.
proc_stats() {
  local rss fds socks
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status")
  fds=$(find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
  socks=$(find "/proc/$server_pid/fd" -mindepth 1 -maxdepth 1 -lname 'socket:*' 2>/dev/null | wc -l)
  printf '{"rss_kb": %s, "open_files": %s, "sockets": %s}\n' "$rss" "$fds" "$socks"
}

# soak_run NAME PORT: the mixed load for 30 s, then for $soak seconds; the
# server's resources after each (its sessions released by then). A leak
# shows as growth from the first sample to the second: both are taken in
# the same idle state, after the same kind of load.
soak_run() {
  local name=$1 port=$2 warm after
  local mixed=(--url "http://127.0.0.1:$port" --label "$name" --sessions "$sessions" --mode mixed
    --concurrency "$mixed_concurrency" --license-keys-file "$work/$name-one-org.keys"
    --churn-keys-file "$work/$name-churn.keys" --churn-concurrency "$churn_concurrency")
  echo "=== $name: soak warm-up, 30 s of mixed load ==="
  "$bench" "${mixed[@]}" --shape soak-warmup --mixed-secs 30 --mixed-max-requests 100000000 >"$work/$name-soak-warmup.out"
  warm=$(proc_stats)
  # Two halves: bounded caches (the verified-token cache, the database
  # pool) fill during the first; a leak keeps growing in the second.
  echo "=== $name: soak, first half, $((soak / 2))s of mixed load ==="
  "$bench" "${mixed[@]}" --shape soak-1 --mixed-secs "$((soak / 2))" --mixed-max-requests 1000000000 | tee "$work/$name-soak-1.out"
  half=$(proc_stats)
  echo "=== $name: soak, second half, $((soak / 2))s of mixed load ==="
  "$bench" "${mixed[@]}" --shape soak-2 --mixed-secs "$((soak / 2))" --mixed-max-requests 1000000000 | tee "$work/$name-soak-2.out"
  after=$(proc_stats)
  jq -nr --argjson a "$warm" --argjson h "$half" --argjson b "$after" --arg name "$name" --arg secs "$soak" '
    def pct(x; y): if x == 0 then 0 else ((y - x) * 1000 / x | round) / 10 end;
    "| \($name) | \($secs) s | \($a.rss_kb) -> \($h.rss_kb) -> \($b.rss_kb) kB (second half \(pct($h.rss_kb; $b.rss_kb))%) | \($a.open_files) -> \($h.open_files) -> \($b.open_files) | \($a.sockets) -> \($h.sockets) -> \($b.sockets) |"
  ' | tee -a "$work/soak.md"
}

# run NAME: benchmarks one deployment, whose settings are in the environment.
run() {
  local name=$1 port big churn_org deadline started common
  port=$(free_port)
  export SEATWARDEN__HTTP__LISTEN="127.0.0.1:$port"
  mkdir -p "$SEATWARDEN__DATA_DIR"

  started=$SECONDS
  # The first command runs alone: it creates the schema.
  big=$("$server" org create --name "bench-$name-large" | jq -er .id)
  # Seats: enough for every session of a shape on a single license, so no
  # spread of sessions can run out.
  many_licenses "$work/$name-one-org.keys" "$licenses" "$sessions" "$big"
  many_licenses "$work/$name-many-orgs.keys" "$orgs" "$sessions"
  if ((churn_same_org)); then
    churn_org=$big
  else
    churn_org=$("$server" org create --name "bench-$name-churn" | jq -er .id)
  fi
  many_licenses "$work/$name-churn.keys" "$churn_licenses" 100000 "$churn_org"
  echo "bench: $name: created $((licenses + orgs + churn_licenses)) licenses in $((SECONDS - started))s" >&2
  if [ -n "${SEATWARDEN__SIGNING__PKCS11__MODULE:-}" ]; then
    # The token's key becomes the key set's only one, before the first serve.
    "$server" keys rotate --hsm-label "bench-$alg" | jq -er .rotated_to.kid >/dev/null
  fi

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

  if ((soak)); then
    soak_run "$name" "$port"
    stop_server
    return
  fi
  common=(--url "http://127.0.0.1:$port" --label "$name" --sessions "$sessions" --sign-secs "$sign_secs")
  if [ -n "${SEATWARDEN__SIGNING__PKCS11__MODULE:-}" ]; then
    common+=(--hsm-label "bench-$alg")
  else
    common+=(--key-path "$SEATWARDEN__SIGNING__KEY_PATH")
  fi
  # On Redis, the ledger's own heartbeat rate is the heartbeat's ceiling.
  if [ -n "${SEATWARDEN__REDIS__URL:-}" ]; then
    common+=(--redis-url "$SEATWARDEN__REDIS__URL")
  fi
  echo
  echo "=== $name: one organization, $licenses licenses ==="
  "$bench" "${common[@]}" --shape one-org --concurrency "$concurrency" --license-keys-file "$work/$name-one-org.keys" \
    --heartbeats-per-session "$heartbeats" | tee "$work/$name-1-one-org.out"
  echo
  echo "=== $name: $orgs organizations, one license each ==="
  "$bench" "${common[@]}" --shape many-orgs --concurrency "$concurrency" --license-keys-file "$work/$name-many-orgs.keys" \
    --heartbeats-per-session "$heartbeats" | tee "$work/$name-2-many-orgs.out"
  echo
  echo "=== $name: mixed, heartbeats while acquires saturate ==="
  "$bench" "${common[@]}" --shape mixed --mode mixed --concurrency "$mixed_concurrency" \
    --license-keys-file "$work/$name-one-org.keys" \
    --churn-keys-file "$work/$name-churn.keys" --churn-concurrency "$churn_concurrency" \
    --mixed-secs "$mixed_secs" | tee "$work/$name-3-mixed.out"
  stop_server
}

bench_started=$SECONDS
for alg in "${algorithm_list[@]}"; do
  export SEATWARDEN__SIGNING__KEY_PATH="$work/key-$alg.pem" SEATWARDEN__SIGNING__ALGORITHM="${alg#HSM-}"
  unset SEATWARDEN__SIGNING__PKCS11__MODULE SEATWARDEN__SIGNING__PKCS11__TOKEN_LABEL SEATWARDEN__SIGNING__PKCS11__PIN
  if [[ $alg == HSM-* ]]; then
    export SEATWARDEN__SIGNING__PKCS11__MODULE="$module" SEATWARDEN__SIGNING__PKCS11__TOKEN_LABEL=bench
    export SEATWARDEN__SIGNING__PKCS11__PIN="$hsm_pin"
  fi
  # Runs are named by deployment, and by algorithm too when there are several.
  suffix=""
  ((${#algorithm_list[@]} > 1)) && suffix="-$alg"
  unset SEATWARDEN__DATABASE__URL SEATWARDEN__REDIS__URL
  if [ "$only" != shared ]; then
    export SEATWARDEN__DATA_DIR="$work/embedded$suffix"
    run "embedded$suffix"
  fi

  if [ "$only" != embedded ]; then
    db_alg=${alg,,}
    db="sw_bench_$(date +%s)_$$_${db_alg//-/_}"
    psql -q -v ON_ERROR_STOP=1 "$SEATWARDEN_TEST_PG_URL" -c "CREATE DATABASE $db"
    export SEATWARDEN__DATA_DIR="$work/shared$suffix"
    export SEATWARDEN__DATABASE__URL="${SEATWARDEN_TEST_PG_URL%/*}/$db"
    export SEATWARDEN__REDIS__URL="$SEATWARDEN_TEST_REDIS_URL"
    run "shared$suffix"
  fi
done

if ((soak)); then
  echo
  echo "=== soak: after a 30 s warm-up -> after half of ${soak}s -> after all of it (mixed load; sessions released at each sample) ==="
  echo "| deployment | soak | RSS | open files | sockets |"
  echo "|---|---|---|---|---|"
  cat "$work/soak.md"
  exit 0
fi

# The last line of each .out is its JSON line.
jsonl="$work/runs.jsonl"
for f in "$work"/embedded-*.out "$work"/shared-*.out; do
  [ -f "$f" ] && tail -n 1 "$f"
done >"$jsonl"

echo
echo "=== summary: req/s (p50 / p99 ms) [non-2xx]; $sessions sessions, concurrency $concurrency," \
  "keys $(for a in "${algorithm_list[@]}"; do key_label "$a"; done | paste -sd,), $(nproc) cores shared with the load generator, $((SECONDS - bench_started))s ==="
echo "one-org: $licenses licenses of 1 org; many-orgs: $orgs orgs x 1 license;" \
  "mixed: heartbeats at concurrency $mixed_concurrency while $churn_concurrency loops acquire+release for ${mixed_secs}s"
echo
jq -rs '
  def cell(p): if p == null then "-" else
    "\(p.rps) (\(p.p50_ms) / \(p.p99_ms))" + (if p.non_2xx > 0 then " [\(p.non_2xx)]" else "" end) end;
  "| deployment | shape | acquire | heartbeat | release | sign ceiling/s | acquire / ceiling | ledger beats/s | heartbeat / ledger | non-2xx, all phases |",
  "|---|---|---|---|---|---|---|---|---|---|",
  (.[] | "| \(.label) | \(.shape) | \(cell(.phases.acquire)) | \(cell(.phases.heartbeat)) | \(cell(.phases.release)) | \(.signing.ceiling_per_s // "-") | \(.acquire_over_ceiling // "-") | \(.ledger_heartbeat_ceiling_per_s // "-") | \(.heartbeat_over_ledger_ceiling // "-") | \([.phases[].non_2xx] | add) |")
' "$jsonl"
