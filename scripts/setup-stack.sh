#!/usr/bin/env bash
# Install and start a build stack for multibake: dockerd with the containerd image store, buildx,
# QEMU binfmt emulators for arm64 and arm/v7, and a registry on 127.0.0.1:5000.
#
#   scripts/setup-stack.sh [--stack auto|current|debian|buildkit|buildkit-net] [--browser] [--with cosign] [--allow-core-upgrade] [--dry-run]
#
# --browser also installs Debian's chromium (this machine's own release; its .debs are kept in
# $MULTIBAKE_CACHE/debs/chromium): the tests open the HTML release report in it, headless.
#
# Stacks (also $MULTIBAKE_STACK):
#   auto      (default) leave a working stack alone (Docker Desktop, a CI runner set up by
#             setup-qemu/setup-buildx, ...); on a machine without one, install `current`.
#   current   docker 28.5 + buildx 0.29 + containerd 2.1 from Debian unstable, the stack users run.
#             The binaries run on Debian 12's C library, so they are unpacked from their .debs into
#             $MULTIBAKE_CACHE/stack/ (keyed by version) instead of installed with apt: no package
#             of this machine is upgraded. runc comes from this machine's own release.
#   debian    docker.io 26 + buildx 0.13.1 from Debian trixie, installed with apt (for users of
#             older distributions). On Debian 12 this upgrades ~27 core packages (libc6, dpkg,
#             base-files, ...) to trixie's: refused unless --allow-core-upgrade or CI=true.
#   buildkit  `current`, plus standalone BuildKit daemons (built once from the Go module, cached)
#             registered as buildx builders: `multibake-remote` (one daemon, every platform) and
#             `multibake-multinode` (node `amd64` for linux/amd64, node `arm` for linux/arm64 and
#             linux/arm/v7: a stand-in for a native x86 host and a native arm host); and the SBOM
#             generator image in the local registry (scripts/sbom-scanner.sh).
#   buildkit-net  `buildkit`, plus the same two nodes as hosts of their own (scripts/buildkit-net.sh):
#             network namespaces joined by veth pairs to a bridge mbnet-br (10.213.0.1), buildkitd on
#             TCP with mutual TLS, a TLS registry on 10.213.0.1:5443, and a builder `multibake-net` of
#             nodes amd64 (tcp://10.213.0.10:1234) and arm (tcp://10.213.0.11:1234). buildx trusts that
#             registry's CA only through SSL_CERT_FILE (printed at the end).
#
# Extra tools (--with, repeatable or comma-separated; also $MULTIBAKE_WITH):
#   cosign    cosign $COSIGN_VERSION (signed releases, `sign:`), built once from its Go module into
#             $MULTIBAKE_CACHE/cosign-<version>/cosign (about 11 minutes on 2 cores, ~140 MB) and
#             linked as /usr/local/bin/cosign when there is no cosign on PATH. Only on request: the
#             test and benchmark sessions ask for it; users usually bring their own cosign.
#
# Idempotent: each step checks whether its piece already works and does nothing if so. Before
# changing anything the script prints what it will change; --dry-run stops there.
set -euo pipefail

STACK="${MULTIBAKE_STACK:-auto}"
ALLOW_CORE_UPGRADE=0
[ "${CI:-}" = true ] && ALLOW_CORE_UPGRADE=1 # CI machines are thrown away after the run
DRY_RUN=0
BROWSER=0
WITH="${MULTIBAKE_WITH:-}"

REGISTRY_ADDR="${MULTIBAKE_REGISTRY_ADDR:-127.0.0.1:5000}"
CACHE="${MULTIBAKE_CACHE:-/var/cache/multibake}"
STATE_DIR="${MULTIBAKE_STATE_DIR:-/var/lib/multibake}"
LOG_DIR="$STATE_DIR/log"
RUN_DIR=/run/multibake
MIRROR="${MULTIBAKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# Pinned versions of the `current` stack (Debian unstable) and of BuildKit (Go module proxy).
# When unstable has moved on, the newest it carries is taken instead, and the script says so.
DOCKER_DEB=28.5.2+dfsg4-5
CONTAINERD_DEB=2.1.9+ds1-5
BUILDX_DEB=0.29.1+ds1-4
BUILDKIT_VERSION=v0.34.2
# cosign for signed releases (--with cosign): multibake's minimum supported version is 2.2.
COSIGN_VERSION=v2.6.5

# 127.0.0.1:5001 is where the tests put a fault-injecting proxy in front of the registry.
INSECURE='"localhost:5000","127.0.0.1:5000","127.0.0.1:5001"'
DAEMON_JSON='{"features":{"containerd-snapshotter":true},"insecure-registries":['"$INSECURE"']}'
# What earlier versions of this script wrote to /etc/docker/daemon.json: safe to replace.
OLD_DAEMON_JSONS=(
  '{"features":{"containerd-snapshotter":true},"insecure-registries":["localhost:5000","127.0.0.1:5000"]}'
  "$DAEMON_JSON"
)

say() { printf 'setup-stack: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --stack) [ $# -ge 2 ] || usage 2; STACK="$2"; shift 2 ;;
    --stack=*) STACK="${1#--stack=}"; shift ;;
    --allow-core-upgrade) ALLOW_CORE_UPGRADE=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --browser) BROWSER=1; shift ;;
    --with) [ $# -ge 2 ] || usage 2; WITH="$WITH,$2"; shift 2 ;;
    --with=*) WITH="$WITH,${1#--with=}"; shift ;;
    -h | --help) usage 0 ;;
    *) say "unknown argument: $1"; usage 2 ;;
  esac
done
case "$STACK" in auto | current | debian | buildkit | buildkit-net) ;; *) die "unknown stack '$STACK' (auto, current, debian, buildkit, buildkit-net)" ;; esac
WITH_COSIGN=0
for tool in ${WITH//,/ }; do
  case "$tool" in cosign) WITH_COSIGN=1 ;; *) die "unknown tool '$tool' for --with (cosign)" ;; esac
done

# --- checks ---------------------------------------------------------------------------------------

docker_up() { docker info >/dev/null 2>&1; }
buildx_ok() { docker buildx version >/dev/null 2>&1; }
server_version() { docker version -f '{{.Server.Version}}' 2>/dev/null || true; }
buildx_version() { docker buildx version 2>/dev/null | awk '{print $2}' | sed 's/^v//; s/+.*//'; }

# The docker driver can only build multi-platform images with the containerd image store.
multiplatform_ok() {
  docker_up || return 1
  docker info -f '{{json .DriverStatus}}' 2>/dev/null | grep -q 'io.containerd.snapshotter'
}

binfmt_ok() {
  local h
  for h in qemu-aarch64 qemu-arm; do
    [ -e "/proc/sys/fs/binfmt_misc/$h" ] && grep -q '^enabled' "/proc/sys/fs/binfmt_misc/$h" || return 1
  done
}

registry_ok() { curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null; }

# The running dockerd is the one this script started for the `current` stack.
ours_running() {
  local pid
  pid=$(cat /var/run/docker.pid 2>/dev/null) || return 1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "--config-file $STATE_DIR/daemon.json"
}

version_at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

current_ok() {
  buildx_ok && multiplatform_ok && version_at_least "$(server_version)" 28 &&
    version_at_least "$(buildx_version)" 0.29
}

base_ok() { buildx_ok && multiplatform_ok && binfmt_ok && registry_ok; }

# --- packages from this machine's own release -------------------------------------------------------

apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  DEBIAN_FRONTEND=noninteractive apt-get update -qq -o Acquire::Retries=3 ||
    say "warning: apt-get update reported errors (carrying on)"
  apt_updated=1
}

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to install: $*"
  have apt-get || die "not a Debian system; install by hand: $*"
  apt_update
  say "apt-get install $* (from this machine's own release)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

host_packages_needed() {
  local need=()
  have curl || need+=(curl ca-certificates)
  have docker-registry || need+=(docker-registry)
  have qemu-aarch64-static || need+=(qemu-user-static)
  have update-binfmts || need+=(binfmt-support)
  if [ "$STACK" != debian ]; then
    have runc || need+=(runc)
    have iptables || need+=(iptables)
  fi
  [ ${#need[@]} -eq 0 ] || printf '%s\n' "${need[@]}"
}

# --- the `current` stack: unpacked from Debian unstable's .debs ---------------------------------------

STACK_PREFIX="$CACHE/stack/docker-$DOCKER_DEB"

# A private apt state for Debian unstable: the host's sources and pins are not touched, so no later
# `apt-get upgrade` of this machine ever sees unstable.
APT_SID=(
  -o "Dir::Etc::SourceList=$CACHE/apt-sid/sources.list" -o "Dir::Etc::SourceParts=$CACHE/apt-sid/empty"
  -o "Dir::State::Lists=$CACHE/apt-sid/lists" -o "Dir::Cache=$CACHE/apt-sid/cache"
  -o Acquire::Languages=none -o APT::Sandbox::User=root
)

sid_candidate() { # package -> version unstable carries now
  apt-cache "${APT_SID[@]}" policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}'
}

fetch_current_debs() {
  local dir="$CACHE/debs/current" pkg want got specs=()
  mkdir -p "$dir" "$CACHE/apt-sid/lists/partial" "$CACHE/apt-sid/cache/archives/partial" "$CACHE/apt-sid/empty"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR sid main" > "$CACHE/apt-sid/sources.list"
  say "apt-get update (a private package list for Debian unstable in $CACHE/apt-sid)"
  apt-get "${APT_SID[@]}" -qq -o Acquire::Retries=3 update || say "warning: apt-get update reported errors"
  for pkg in docker.io=$DOCKER_DEB containerd=$CONTAINERD_DEB docker-buildx=$BUILDX_DEB docker-cli=$DOCKER_DEB; do
    want="${pkg#*=}"
    got=$(sid_candidate "${pkg%%=*}")
    [ -n "$got" ] || die "Debian unstable does not list ${pkg%%=*}"
    [ "$got" = "$want" ] || say "warning: unstable has ${pkg%%=*} $got, not the pinned $want: taking $got"
    specs+=("${pkg%%=*}=$got")
  done
  (cd "$dir" && apt-get "${APT_SID[@]}" -q download "${specs[@]}" >/dev/null)
  rm -rf "$CACHE/apt-sid/lists"
}

unpack_current() {
  [ -x "$STACK_PREFIX/bin/dockerd" ] && return 0
  local tmp f
  ls "$CACHE/debs/current/"docker.io_*.deb >/dev/null 2>&1 || fetch_current_debs
  tmp=$(mktemp -d)
  for f in "$CACHE/debs/current/"*.deb; do dpkg-deb -x "$f" "$tmp"; done
  mkdir -p "$STACK_PREFIX/bin"
  # runc (unstable's needs glibc 2.38) stays the host's own; everything else runs on glibc >= 2.34.
  for f in sbin/dockerd sbin/docker-proxy bin/containerd bin/containerd-shim-runc-v2 bin/ctr bin/docker; do
    cp "$tmp/usr/$f" "$STACK_PREFIX/bin/"
  done
  cp "$tmp/usr/libexec/docker/cli-plugins/docker-buildx" "$STACK_PREFIX/bin/"
  rm -rf "$tmp"
  say "unpacked docker, containerd and buildx into $STACK_PREFIX"
}

# buildx and (only when there is none) the docker CLI are linked where the docker CLI looks.
link_clients() {
  local plugin=/usr/local/lib/docker/cli-plugins/docker-buildx
  mkdir -p "$(dirname "$plugin")"
  if [ ! -e "$plugin" ] || [ -L "$plugin" ]; then ln -sfn "$STACK_PREFIX/bin/docker-buildx" "$plugin"; fi
  have docker || ln -sfn "$STACK_PREFIX/bin/docker" /usr/local/bin/docker
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

clear_stale_pidfiles() { # a killed dockerd leaves its pid files behind and the next one refuses to start
  local f
  for f in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    if [ -f "$f" ] && ! kill -0 "$(cat "$f")" 2>/dev/null; then say "removing stale $f"; rm -f "$f"; fi
  done
}

wait_dockerd() {
  for _ in $(seq 1 60); do docker_up && return 0; sleep 1; done
  tail -n 20 "$LOG_DIR/dockerd.log" >&2 || true
  die "dockerd did not come up within 60 s"
}

start_current_dockerd() {
  mkdir -p "$STATE_DIR" "$LOG_DIR"
  # Our own daemon.json: /etc/docker/daemon.json, which belongs to the machine, is not touched.
  echo "$DAEMON_JSON" > "$STATE_DIR/daemon.json"
  clear_stale_pidfiles
  say "starting dockerd $DOCKER_DEB (log: $LOG_DIR/dockerd.log)"
  PATH="$STACK_PREFIX/bin:$PATH" setsid nohup "$STACK_PREFIX/bin/dockerd" --config-file "$STATE_DIR/daemon.json" \
    >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
  wait_dockerd
}

setup_current() {
  if docker_up && ! ours_running; then
    current_ok && return 0
    die "a dockerd $(server_version) that this script did not start is running; stop it first (or use --stack auto to keep it)"
  fi
  unpack_current
  link_clients
  if ours_running && ! current_ok; then stop_dockerd; fi
  docker_up || start_current_dockerd
  current_ok || die "docker $(server_version) / buildx $(buildx_version) is not the current stack"
}

# --- the `debian` stack: trixie's packages with apt -----------------------------------------------------

TRIXIE_PKGS=(docker.io containerd runc docker-buildx)

enable_trixie() {
  [ -f /etc/apt/sources.list.d/trixie.list ] && return 0
  echo "deb $MIRROR trixie main" > /etc/apt/sources.list.d/trixie.list
  # pinned low so that nothing else is ever upgraded from trixie by a plain `apt-get upgrade`
  printf 'Package: *\nPin: release n=trixie\nPin-Priority: 100\n' > /etc/apt/preferences.d/trixie
  apt_updated=0
}

# Installed packages that `apt-get install -t trixie` would move to trixie's versions.
trixie_upgrades() {
  apt-get install -s -t trixie --no-install-recommends "${TRIXIE_PKGS[@]}" 2>/dev/null |
    awk '/^Inst / && /\[/ {print $2}'
}

setup_debian() {
  local upgrades
  if ! have dockerd || ! buildx_ok; then
    [ "$(id -u)" = 0 ] || die "need root to install ${TRIXIE_PKGS[*]}"
    enable_trixie
    apt_update
    upgrades=$(trixie_upgrades | tr '\n' ' ')
    if [ -n "$upgrades" ] && [ "$ALLOW_CORE_UPGRADE" != 1 ]; then
      say "installing docker.io from trixie would upgrade these installed packages to trixie's: $upgrades"
      die "refusing a cross-release upgrade; rerun with --allow-core-upgrade (or use --stack current, which upgrades nothing)"
    fi
    [ -n "$upgrades" ] && say "upgrading to trixie's versions (allowed): $upgrades"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t trixie "${TRIXIE_PKGS[@]}" >/dev/null
  fi
  mkdir -p /etc/docker "$LOG_DIR"
  local current_json=""
  [ -f /etc/docker/daemon.json ] && current_json=$(tr -d ' \n' < /etc/docker/daemon.json)
  if [ -z "$current_json" ] || printf '%s\n' "${OLD_DAEMON_JSONS[@]}" | grep -qxF "$current_json"; then
    if [ "$current_json" != "$DAEMON_JSON" ]; then
      echo "$DAEMON_JSON" > /etc/docker/daemon.json
      docker_up && { say "daemon.json updated: restarting dockerd"; stop_dockerd; }
    fi
  fi
  docker_up && return 0
  clear_stale_pidfiles
  say "starting dockerd (log: $LOG_DIR/dockerd.log)"
  setsid nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
  wait_dockerd
}

# --- the `buildkit` stack: standalone buildkitd daemons as buildx builders ------------------------------

BUILDKIT_PREFIX="$CACHE/buildkit-$BUILDKIT_VERSION"
# name:platforms of each daemon; the remote builder uses `all`, the two-node builder `amd64` + `arm`.
BUILDKIT_DAEMONS=("all:linux/amd64,linux/arm64,linux/arm/v7" "amd64:linux/amd64" "arm:linux/arm64,linux/arm/v7")

build_buildkit() {
  [ -x "$BUILDKIT_PREFIX/bin/buildkitd" ] && [ -x "$BUILDKIT_PREFIX/bin/buildctl" ] && return 0
  [ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
  have go || apt_install golang-go
  # buildkit's go.mod asks for a newer Go than some distributions ship: the go command then fetches
  # that toolchain from the Go module proxy (Debian's go.env sets GOTOOLCHAIN=local, so say auto).
  export GOTOOLCHAIN=auto
  local dir
  say "building buildkitd and buildctl $BUILDKIT_VERSION from the Go module (once; cached in $BUILDKIT_PREFIX)"
  # `go install …@version` refuses buildkit (its go.mod has exclude directives): build inside the module.
  export GOPATH="$CACHE/go" GOFLAGS=-modcacherw
  dir=$(go mod download -json "github.com/moby/buildkit@$BUILDKIT_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$dir" ] || die "go mod download github.com/moby/buildkit@$BUILDKIT_VERSION failed"
  mkdir -p "$BUILDKIT_PREFIX/bin"
  # The version is stamped in as BuildKit's release builds do: buildx reads it to pick features.
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -o "$BUILDKIT_PREFIX/bin/" \
    -ldflags "-X github.com/moby/buildkit/version.Version=$BUILDKIT_VERSION -X github.com/moby/buildkit/version.Package=github.com/moby/buildkit" \
    ./cmd/buildkitd ./cmd/buildctl)
}

buildkitd_config() {
  cat <<TOML
[worker.oci]
  enabled = true
  platforms = [ $(printf '"%s",' ${2//,/ } | sed 's/,$//') ]
[worker.containerd]
  enabled = false
[registry."127.0.0.1:5000"]
  http = true
[registry."localhost:5000"]
  http = true
[registry."127.0.0.1:5001"]
  http = true
TOML
}

buildkitd_up() { "$BUILDKIT_PREFIX/bin/buildctl" --addr "unix://$RUN_DIR/buildkitd-$1.sock" debug workers >/dev/null 2>&1; }

start_buildkitd() { # name platforms
  local name="$1" platforms="$2"
  buildkitd_up "$name" && return 0
  mkdir -p "$RUN_DIR" "$STATE_DIR/buildkit-$name" "$LOG_DIR"
  buildkitd_config "$name" "$platforms" > "$STATE_DIR/buildkitd-$name.toml"
  say "starting buildkitd '$name' for $platforms (log: $LOG_DIR/buildkitd-$name.log)"
  setsid nohup "$BUILDKIT_PREFIX/bin/buildkitd" --config "$STATE_DIR/buildkitd-$name.toml" \
    --root "$STATE_DIR/buildkit-$name" --addr "unix://$RUN_DIR/buildkitd-$name.sock" \
    >"$LOG_DIR/buildkitd-$name.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do buildkitd_up "$name" && return 0; sleep 0.5; done
  tail -n 20 "$LOG_DIR/buildkitd-$name.log" >&2 || true
  die "buildkitd '$name' did not answer"
}

builder_exists() { docker buildx inspect "$1" >/dev/null 2>&1; }

register_builders() {
  if ! builder_exists multibake-remote; then
    docker buildx create --name multibake-remote --driver remote --node all \
      --platform linux/amd64,linux/arm64,linux/arm/v7 "unix://$RUN_DIR/buildkitd-all.sock" >/dev/null
  fi
  if ! builder_exists multibake-multinode; then
    docker buildx create --name multibake-multinode --driver remote --node amd64 \
      --platform linux/amd64 "unix://$RUN_DIR/buildkitd-amd64.sock" >/dev/null
    docker buildx create --append --name multibake-multinode --driver remote --node arm \
      --platform linux/arm64,linux/arm/v7 "unix://$RUN_DIR/buildkitd-arm.sock" >/dev/null
  fi
  docker buildx inspect --bootstrap multibake-remote >/dev/null
  docker buildx inspect --bootstrap multibake-multinode >/dev/null
}

setup_buildkit() {
  local d
  build_buildkit
  for d in "${BUILDKIT_DAEMONS[@]}"; do start_buildkitd "${d%%:*}" "${d#*:}"; done
  register_builders
}

# --- the `buildkit-net` stack: the two nodes as hosts of their own, over TCP with mutual TLS ---------------

NET_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/buildkit-net.sh"

setup_buildkit_net() {
  local env node args
  export MULTIBAKE_BUILDKIT_VERSION=$BUILDKIT_VERSION
  "$NET_SCRIPT" ok || "$NET_SCRIPT" up >/dev/null
  env=$("$NET_SCRIPT" env)
  get() { printf '%s\n' "$env" | sed -n "s/^$1=//p"; }
  if ! builder_exists multibake-net; then
    args=(--driver remote)
    for node in amd64 arm; do
      docker buildx create --name multibake-net "${args[@]}" --node "$node" \
        --platform "$( [ $node = amd64 ] && echo linux/amd64 || echo linux/arm64,linux/arm/v7)" \
        --driver-opt "cacert=$(get CA),cert=$(get CLIENT_CERT),key=$(get CLIENT_KEY),servername=$(get "NODE_${node}_SERVERNAME")" \
        "$(get "NODE_${node}_ENDPOINT")" >/dev/null
      args=(--driver remote --append)
    done
  fi
  docker buildx inspect --bootstrap multibake-net >/dev/null
  say "builder multibake-net ready; registry $(get REGISTRY): for buildx to trust its CA, export SSL_CERT_FILE=$(get SSL_CERT_FILE)"
}

# --- extra tools: cosign ---------------------------------------------------------------------------

COSIGN_PREFIX="$CACHE/cosign-$COSIGN_VERSION"

cosign_ok() { [ -x "$COSIGN_PREFIX/cosign" ] && "$COSIGN_PREFIX/cosign" version >/dev/null 2>&1; }

build_cosign() {
  if ! cosign_ok; then
    [ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
    have go || apt_install golang-go
    say "building cosign $COSIGN_VERSION from the Go module (once, minutes; cached in $COSIGN_PREFIX)"
    mkdir -p "$COSIGN_PREFIX"
    # cosign's go.mod may ask for a newer Go than the distribution's: let the go command fetch it.
    # The build cache lives beside the module cache so that a rebuild after a failure is quick.
    (export GOTOOLCHAIN=auto GOPATH="$CACHE/go" GOCACHE="$CACHE/go/build-cache" GOFLAGS=-modcacherw \
      GOBIN="$COSIGN_PREFIX" CGO_ENABLED=0 && go install -trimpath "github.com/sigstore/cosign/v2/cmd/cosign@$COSIGN_VERSION")
    cosign_ok || die "cosign $COSIGN_VERSION did not build"
  fi
  if ! have cosign; then
    ln -sfn "$COSIGN_PREFIX/cosign" /usr/local/bin/cosign
    say "linked /usr/local/bin/cosign -> $COSIGN_PREFIX/cosign"
  fi
}

# --- common pieces ------------------------------------------------------------------------------

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
  cache:
    blobdescriptor: inmemory
http:
  addr: $REGISTRY_ADDR
YML
  say "starting registry on $REGISTRY_ADDR (log: $LOG_DIR/registry.log)"
  setsid nohup docker-registry serve "$STATE_DIR/registry.yml" >"$LOG_DIR/registry.log" 2>&1 </dev/null &
  for _ in $(seq 1 30); do registry_ok && return 0; sleep 0.5; done
  die "registry did not answer on $REGISTRY_ADDR"
}

# Debian's chromium for the browser tests of the HTML report (headless; no browser download of its own).
install_browser() {
  [ "$BROWSER" = 1 ] || return 0
  have chromium && return 0
  [ "$DRY_RUN" = 1 ] && return 0
  [ "$(id -u)" = 0 ] || die "need root to install chromium"
  mkdir -p "$CACHE/debs/chromium/partial"
  apt_update
  say "apt-get install chromium (from this machine's own release; .debs kept in $CACHE/debs/chromium)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    -o Dir::Cache::archives="$CACHE/debs/chromium" chromium >/dev/null
}

announce() { # what this run will change, before it changes anything
  local pkgs
  pkgs=$(host_packages_needed | tr '\n' ' ')
  say "stack '$STACK': this run may"
  [ -n "$pkgs" ] && say "  - apt-get install from this machine's own release: $pkgs"
  case "$STACK" in
    current | buildkit | buildkit-net)
      say "  - unpack docker $DOCKER_DEB, containerd $CONTAINERD_DEB, buildx $BUILDX_DEB (Debian unstable) into $STACK_PREFIX"
      say "  - link /usr/local/lib/docker/cli-plugins/docker-buildx (and /usr/local/bin/docker if there is none)"
      say "  - start dockerd with $STATE_DIR/daemon.json (containerd image store, insecure 127.0.0.1 registries)" ;;
    debian)
      say "  - add a low-pinned trixie source and apt-get install -t trixie ${TRIXIE_PKGS[*]}"
      say "  - write /etc/docker/daemon.json if it is missing or one this script wrote, and (re)start dockerd" ;;
  esac
  [ "$STACK" = buildkit-net ] && say "  - scripts/buildkit-net.sh up: namespaces mbnet-amd64, mbnet-arm, bridge mbnet-br (10.213.0.0/24), certificates and a TLS registry in $STATE_DIR/mbnet, /etc/docker/certs.d/10.213.0.1:5443; register builder multibake-net"
  case "$STACK" in buildkit | buildkit-net) say "  - build buildkitd $BUILDKIT_VERSION into $BUILDKIT_PREFIX and start 3 daemons on $RUN_DIR; register builders multibake-remote, multibake-multinode" ;; esac
  if [ "$BROWSER" = 1 ] && ! have chromium; then say "  - apt-get install chromium (from this machine's own release)"; fi
  case "$STACK" in buildkit | buildkit-net) say "  - build the SBOM scanner image once (scripts/sbom-scanner.sh, cached in $CACHE) and push it to $REGISTRY_ADDR" ;; esac
  say "  - register QEMU binfmt handlers (qemu-aarch64, qemu-arm) and start a registry on $REGISTRY_ADDR"
  announce_tools
}

announce_tools() {
  if [ "$WITH_COSIGN" = 1 ] && ! cosign_ok; then
    say "  - build cosign $COSIGN_VERSION into $COSIGN_PREFIX (and link /usr/local/bin/cosign if there is none)"
  fi
  return 0
}

setup_tools() { [ "$WITH_COSIGN" = 0 ] || build_cosign; }

main() {
  if [ "$STACK" = auto ]; then
    if base_ok; then
      install_browser
      announce_tools
      [ "$DRY_RUN" = 1 ] && return 0
      setup_tools
      say "stack ready (docker $(server_version), buildx $(buildx_version), registry $REGISTRY_ADDR)"
      return 0
    fi
    # A working engine of the user's is kept; a machine without one gets the current stack.
    if docker_up && ! ours_running; then STACK=keep; else STACK=current; fi
  fi
  announce
  [ "$DRY_RUN" = 1 ] && return 0
  local pkgs
  pkgs=$(host_packages_needed | tr '\n' ' ')
  # shellcheck disable=SC2086
  [ -z "$pkgs" ] || apt_install $pkgs
  enable_binfmt # before dockerd: BuildKit lists the emulators it finds at start-up
  case "$STACK" in
    current) setup_current ;;
    debian) setup_debian ;;
    buildkit) setup_current; setup_buildkit ;;
    buildkit-net) setup_current; setup_buildkit ;;
  esac
  start_registry
  install_browser
  setup_tools
  multiplatform_ok || die "the docker driver lacks the containerd image store; add \"features\":{\"containerd-snapshotter\":true} to /etc/docker/daemon.json and restart dockerd"
  # the SBOM generator BuildKit runs for `attest type=sbom` (Docker Hub's is out of reach here)
  if [ "$STACK" = buildkit ] || [ "$STACK" = buildkit-net ]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/sbom-scanner.sh" || say "warning: no SBOM scanner image (SBOM tests will say why)"
  fi
  [ "$STACK" = buildkit-net ] && setup_buildkit_net
  say "stack ready (docker $(server_version), buildx $(buildx_version), registry $REGISTRY_ADDR)"
}

main
