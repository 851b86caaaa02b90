#!/usr/bin/env bash
# Install and start the build stack multibake needs: dockerd with the containerd image store,
# docker-buildx, QEMU binfmt emulators for arm64 and arm/v7, and a registry on 127.0.0.1:5000.
#
# Idempotent: every step first checks whether its piece already works and does nothing if so,
# so machines with Docker Desktop or a CI runner set up by setup-qemu/setup-buildx are left alone.
# Only a fresh Debian 12 machine (root) gets packages installed.
set -euo pipefail

REGISTRY_ADDR="${MULTIBAKE_REGISTRY_ADDR:-127.0.0.1:5000}"
# 127.0.0.1:5001 is where the tests put a fault-injecting proxy in front of the registry.
DAEMON_JSON='{"features":{"containerd-snapshotter":true},"insecure-registries":["localhost:5000","127.0.0.1:5000","127.0.0.1:5001"]}'
# What earlier versions of this script wrote: safe to replace, nobody else wrote it.
OLD_DAEMON_JSON='{"features":{"containerd-snapshotter":true},"insecure-registries":["localhost:5000","127.0.0.1:5000"]}'

STATE_DIR="${MULTIBAKE_STATE_DIR:-/var/lib/multibake}"
LOG_DIR="$STATE_DIR/log"

say() { printf 'setup-stack: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

docker_up() { docker info >/dev/null 2>&1; }

buildx_ok() { docker buildx version >/dev/null 2>&1; }

# The docker driver can only build multi-platform images with the containerd image store.
multiplatform_ok() {
  docker_up || return 1
  local drv
  drv=$(docker buildx inspect 2>/dev/null | awk -F': *' '/^Driver:/ {print $2; exit}')
  if [ "$drv" = "docker" ]; then
    docker info -f '{{json .DriverStatus}}' 2>/dev/null | grep -q 'io.containerd.snapshotter' && return 0
    return 1
  fi
  return 0
}

binfmt_ok() {
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] && grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 &&
  [ -e /proc/sys/fs/binfmt_misc/qemu-arm ] && grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-arm
}

registry_ok() { curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null; }

# daemon.json is ours to write when missing or still as an earlier version of this script left it.
daemon_json_stale() {
  [ ! -f /etc/docker/daemon.json ] && return 0
  [ "$(tr -d ' \n' < /etc/docker/daemon.json)" = "$OLD_DAEMON_JSON" ]
}

stack_ok() { buildx_ok && multiplatform_ok && binfmt_ok && registry_ok && ! daemon_json_stale; }

apt_updated=0
apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to install: $*"
  have apt-get || die "not a Debian system; install by hand: $*"
  if [ "$apt_updated" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# dockerd 26 and buildx 0.13 come from trixie, pinned low so nothing else is upgraded from it.
enable_trixie() {
  [ -f /etc/apt/sources.list.d/trixie.list ] && return 0
  echo 'deb http://deb.debian.org/debian trixie main' > /etc/apt/sources.list.d/trixie.list
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie
  apt_updated=0
}

install_packages() {
  local need=()
  have curl || need+=(curl ca-certificates)
  have docker-registry || need+=(docker-registry)
  have qemu-aarch64-static || need+=(qemu-user-static)
  have update-binfmts || need+=(binfmt-support)
  [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
  if ! have dockerd || ! buildx_ok; then
    enable_trixie
    [ "$apt_updated" = 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -t trixie docker.io containerd runc docker-buildx >/dev/null
  fi
}

stop_dockerd() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  # wait for the process itself: a new dockerd refuses to start while the old one lives
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 1; done
  die "dockerd (pid $pid) did not stop"
}

start_dockerd() {
  mkdir -p /etc/docker "$LOG_DIR"
  if daemon_json_stale; then
    echo "$DAEMON_JSON" > /etc/docker/daemon.json
    if docker_up; then
      say "daemon.json updated: restarting dockerd"
      stop_dockerd
    fi
  fi
  docker_up && return 0
  have dockerd || die "dockerd is not installed"
  # A killed dockerd leaves its pid file behind and the next one refuses to start.
  local pidfile=/var/run/docker.pid
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "removing stale $pidfile"
    rm -f "$pidfile"
  fi
  [ -f /var/run/docker/containerd/containerd.pid ] &&
    ! kill -0 "$(cat /var/run/docker/containerd/containerd.pid)" 2>/dev/null &&
    rm -f /var/run/docker/containerd/containerd.pid
  say "starting dockerd (log: $LOG_DIR/dockerd.log)"
  setsid nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker_up && return 0; sleep 1; done
  tail -n 20 "$LOG_DIR/dockerd.log" >&2 || true
  die "dockerd did not come up within 60 s"
}

enable_binfmt() {
  binfmt_ok && return 0
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 || true
  update-binfmts --enable qemu-arm || true
  binfmt_ok || die "QEMU binfmt handlers for aarch64/arm could not be registered"
}

start_registry() {
  registry_ok && return 0
  mkdir -p "$STATE_DIR/registry" "$LOG_DIR"
  cat > "$STATE_DIR/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
YML
  say "starting registry on $REGISTRY_ADDR (log: $LOG_DIR/registry.log)"
  setsid nohup docker-registry serve "$STATE_DIR/registry.yml" >"$LOG_DIR/registry.log" 2>&1 < /dev/null &
  for _ in $(seq 1 30); do registry_ok && return 0; sleep 0.5; done
  die "registry did not answer on $REGISTRY_ADDR"
}

main() {
  if stack_ok; then
    say "stack ready (buildx $(docker buildx version | awk '{print $2}'), registry $REGISTRY_ADDR)"
    return 0
  fi
  install_packages
  enable_binfmt      # before dockerd: BuildKit lists the emulators it finds at start-up
  start_dockerd
  start_registry
  multiplatform_ok || die "the docker driver lacks the containerd image store; add \"features\":{\"containerd-snapshotter\":true} to /etc/docker/daemon.json and restart dockerd"
  say "stack ready (buildx $(docker buildx version | awk '{print $2}'), registry $REGISTRY_ADDR)"
}

main "$@"
