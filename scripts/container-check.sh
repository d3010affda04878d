#!/usr/bin/env bash
# Builds the container image from Containerfile and runs `seatwarden --help`
# in it:
#
#   bash scripts/container-check.sh
#
# Uses podman (or docker, when its daemon answers). When no engine can build
# here, typically because the base images cannot be pulled (a machine that
# reaches package registries but no container registry), it prints
# "skipped: <reason>" and exits 0; a failure of the build or of the image
# itself exits 1.
#
# Environment:
#   ENGINE         podman or docker (default: podman if installed, else docker)
#   IMAGE          tag to build (default localhost/seatwarden:check)
#   RUST_IMAGE, RUNTIME_IMAGE
#                  base images, e.g. from a registry mirror (see Containerfile)
#   INSTALL_PODMAN=1
#                  apt-get install podman when no engine is present (root)
#
# Podman keeps its images under target/container-check/ (overlay storage, or
# vfs where overlay mounts are refused), uses runc when installed (crun
# refuses hosts with cgroup v1 and v2 controllers mixed), host networking for
# RUN steps, and ulimits no higher than its own (without CAP_SYS_RESOURCE a
# container cannot get more, and podman's defaults ask for more).
set -euo pipefail
cd "$(dirname "$0")/.."

image="${IMAGE:-localhost/seatwarden:check}"
skip() { printf 'container-check: skipped: %s\n' "$*"; exit 0; }
say() { printf 'container-check: %s\n' "$*" >&2; }

engine="${ENGINE:-}"
if [ -z "$engine" ]; then
  if command -v podman >/dev/null 2>&1; then
    engine=podman
  elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    engine=docker
  elif [ "${INSTALL_PODMAN:-0}" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing podman"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null; } \
      || skip "podman could not be installed"
    engine=podman
  else
    skip "no container engine (podman, or docker with a running daemon); INSTALL_PODMAN=1 installs podman"
  fi
fi

build_args=()
[ -z "${RUST_IMAGE:-}" ] || build_args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
[ -z "${RUNTIME_IMAGE:-}" ] || build_args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")

cmd=("$engine")
run_opts=()
if [ "$engine" = podman ]; then
  nofile="$(ulimit -Hn)"
  nproc="$(ulimit -Hu)"
  # podman caps its own process limit at 32768.
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then nproc=32768; fi
  [ "$nofile" != unlimited ] || nofile=1048576
  run_opts+=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  store="$PWD/target/container-check"
  probe="$(mktemp -d)"
  trap 'rm -rf "$probe"' EXIT
  printf 'FROM scratch\nCOPY Containerfile /probe\n' >"$probe/Containerfile"
  why=""
  for driver in overlay vfs; do
    cmd=(podman --root "$store/$driver" --runroot "${TMPDIR:-/tmp}/seatwarden-container-check-$driver"
         --storage-driver "$driver")
    if command -v runc >/dev/null 2>&1; then cmd+=(--runtime runc); fi
    # A build that pulls nothing shows whether this storage works at all.
    if why="$("${cmd[@]}" build -q -t localhost/container-check-probe "$probe" 2>&1)"; then
      why=""
      break
    fi
  done
  [ -z "$why" ] || skip "podman cannot build here: $(printf '%s\n' "$why" | tail -1)"
fi

# Fail early, and say why, when the base images cannot be had.
for base in "${RUST_IMAGE:-docker.io/library/rust:1.94-slim-bookworm}" \
            "${RUNTIME_IMAGE:-docker.io/library/debian:bookworm-slim}"; do
  if ! "${cmd[@]}" image inspect "$base" >/dev/null 2>&1; then
    say "pulling $base"
    if ! pull_log="$("${cmd[@]}" pull "$base" 2>&1)"; then
      skip "cannot pull $base: $(printf '%s\n' "$pull_log" | tail -1)"
    fi
  fi
done

say "building $image with $engine (the first build compiles every dependency)"
build_opts=(-f Containerfile -t "$image" "${build_args[@]}")
[ "$engine" = podman ] && build_opts+=(--network host "${run_opts[@]}")
"${cmd[@]}" build "${build_opts[@]}" . || { say "the image build failed"; exit 1; }

out="$("${cmd[@]}" run --rm --network none "${run_opts[@]}" "$image" --help)" \
  || { say "seatwarden --help failed in the image"; exit 1; }
printf '%s\n' "$out"
grep -q -- "--config <FILE>" <<<"$out" || { say "unexpected --help output"; exit 1; }
user="$("${cmd[@]}" image inspect --format '{{.Config.User}}' "$image")"
[ "$user" = 10001:10001 ] || { say "the image runs as '$user', not 10001:10001"; exit 1; }
say "ok: $image builds, runs as $user and answers --help"
