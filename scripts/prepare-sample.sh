#!/usr/bin/env bash
# Make the local base-image inputs the sample families need, since no image can be pulled:
#
#   fast  static busybox binaries for amd64, arm64 and arm/v7 (from Debian's busybox-static .debs)
#         -> samples/offline/busybox-base/busybox/busybox-{amd64,arm64,armv7}
#   real  Debian minbase root filesystems made with mmdebstrap, for each suite and architecture
#         -> samples/debian/debian-base/rootfs-<suite>-{amd64,arm64,armv7}.tar
#   all   both
#
# File names end in ${TARGETARCH}${TARGETVARIANT}, so a Dockerfile picks its platform's file directly.
# Downloads and tarballs are cached in $MULTIBAKE_CACHE (default /var/cache/multibake) and only
# hard-linked (or copied) into the build contexts: a second run downloads and builds nothing.
# To rebuild one rootfs, delete it from the cache and rerun.
#
# Needs root only for what is missing (apt-get install mmdebstrap, mmdebstrap --mode=root).
# The real tier needs QEMU binfmt handlers for the foreign architectures: run scripts/setup-stack.sh first.
#
# Environment: MULTIBAKE_CACHE (cache directory), MULTIBAKE_SUITES (default "bookworm trixie"),
# MULTIBAKE_MIRROR (Debian mirror for mmdebstrap; default: mmdebstrap's own, deb.debian.org).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MULTIBAKE_CACHE:-/var/cache/multibake}"
SUITES="${MULTIBAKE_SUITES:-bookworm trixie}"
MIRROR="${MULTIBAKE_MIRROR:-}"

BUSYBOX_DIR="$ROOT/samples/offline/busybox-base/busybox"
ROOTFS_DIR="$ROOT/samples/debian/debian-base"

# dpkg architecture -> ${TARGETARCH}${TARGETVARIANT} (Debian's armhf is ARMv7; see DESIGN.md)
declare -A TAG=([amd64]=amd64 [arm64]=arm64 [armhf]=armv7)
# dpkg architecture -> ELF e_machine, to check that each binary is what its name says
declare -A ELF_MACHINE=([amd64]=62 [arm64]=183 [armhf]=40)
# dpkg architecture -> binfmt handler needed to run it on an amd64 host
declare -A BINFMT=([arm64]=qemu-aarch64 [armhf]=qemu-arm)
ARCHES=(amd64 arm64 armhf)

say() { printf 'prepare-sample: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
need_root() { [ "$(id -u)" = 0 ] || die "need root to $*"; }

# Run "$@", then report how long it took.
timed() {
  local what="$1"; shift
  local t0=$SECONDS
  "$@"
  say "$what: $((SECONDS - t0)) s"
}

# Put $1 (in the cache) at $2 (in a build context): a hard link when possible, else a copy.
place() {
  local src="$1" dst="$2"
  if [ -e "$dst" ] && { [ "$src" -ef "$dst" ] || cmp -s "$src" "$dst"; }; then
    return 0
  fi
  mkdir -p "$(dirname "$dst")"
  rm -f "$dst"
  ln "$src" "$dst" 2>/dev/null || cp "$src" "$dst"
  say "placed ${dst#"$ROOT"/}"
}

elf_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' '; }

# apt-get update fails as a whole when one index of many fails (e.g. "Mirror sync in progress" on
# debian-security); callers check afterwards that what they need is known, so that is only a warning.
apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  need_root "run apt-get update"
  say "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq -o Acquire::Retries=3 ||
    say "warning: apt-get update reported errors (carrying on if the packages needed are known)"
  apt_updated=1
}

# --- fast tier: static busybox -------------------------------------------------------------------
#
# The foreign .debs are found with a private apt state in $CACHE/apt (its own package lists for
# amd64, arm64 and armhf, from the host's sources.list) instead of `dpkg --add-architecture` on the
# host: that would make every later host `apt-get update` fetch arm indexes too, and fail (exit 100)
# whenever the mirror serves a stale one, which breaks scripts that run `apt-get update` under set -e.

APT_PRIVATE=(
  -o "Dir::State::Lists=$CACHE/apt/lists"
  -o "Dir::Cache=$CACHE/apt/cache"
  -o APT::Architectures::=amd64 -o APT::Architectures::=arm64 -o APT::Architectures::=armhf
  -o Acquire::Languages=none
  # apt drops to user _apt for downloads; it cannot write into a root-only cache directory.
  -o APT::Sandbox::User=root
)

busybox_debs_known() {
  local a
  for a in "${ARCHES[@]}"; do
    apt-cache "${APT_PRIVATE[@]}" show "busybox-static:$a" >/dev/null 2>&1 || return 1
  done
}

cached_deb() { # newest cached busybox-static .deb for dpkg arch $1, or nothing
  local f
  f=$(ls -1 "$CACHE/debs/busybox-static_"*"_$1.deb" 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$f" ] && printf '%s\n' "$f"
}

download_busybox_debs() {
  local missing=() a
  for a in "${ARCHES[@]}"; do
    cached_deb "$a" >/dev/null || missing+=("busybox-static:$a")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache/archives/partial" "$CACHE/debs"
  if ! busybox_debs_known; then
    say "apt-get update (private lists for amd64, arm64, armhf in $CACHE/apt)"
    # One stale index among many (e.g. "File has unexpected size ... Mirror sync in progress?" on
    # debian-security) fails the whole update; what matters is whether busybox-static is known.
    apt-get "${APT_PRIVATE[@]}" -qq -o Acquire::Retries=3 update ||
      say "warning: apt-get update reported errors (carrying on if busybox-static is known)"
    busybox_debs_known || die "apt does not know busybox-static for all of: ${ARCHES[*]}"
  fi
  say "apt-get download ${missing[*]}"
  (cd "$CACHE/debs" && apt-get "${APT_PRIVATE[@]}" -q download "${missing[@]}" >/dev/null)
  # The .debs are what is cached; the private package lists (100+ MB) are not needed again.
  rm -rf "$CACHE/apt"
}

extract_busybox() { # dpkg arch
  local a="$1" deb out tmp bin
  deb=$(cached_deb "$a") || die "no busybox-static .deb for $a in $CACHE/debs"
  out="$CACHE/busybox/busybox-${TAG[$a]}"
  # Re-extract only when the .deb is newer than the extracted binary.
  if [ ! -s "$out" ] || [ "$deb" -nt "$out" ]; then
    tmp=$(mktemp -d)
    dpkg-deb -x "$deb" "$tmp"
    bin=""
    for p in bin/busybox usr/bin/busybox; do
      [ -f "$tmp/$p" ] && { bin="$tmp/$p"; break; }
    done
    [ -n "$bin" ] || { rm -rf "$tmp"; die "no busybox binary in $deb"; }
    mkdir -p "$CACHE/busybox"
    install -m 0755 "$bin" "$out.tmp"
    mv -f "$out.tmp" "$out"
    rm -rf "$tmp"
    say "extracted $(basename "$deb") -> $out"
  fi
  [ "$(elf_machine "$out")" = "${ELF_MACHINE[$a]}" ] || die "$out is not a $a binary"
  place "$out" "$BUSYBOX_DIR/busybox-${TAG[$a]}"
}

prepare_fast() {
  download_busybox_debs
  local a
  for a in "${ARCHES[@]}"; do extract_busybox "$a"; done
}

# --- real tier: Debian root filesystems -----------------------------------------------------------

ensure_mmdebstrap() {
  local pkgs=()
  have mmdebstrap || pkgs+=(mmdebstrap)
  have arch-test || pkgs+=(arch-test)   # mmdebstrap uses it to check a foreign arch can run
  [ ${#pkgs[@]} -eq 0 ] && return 0
  need_root "install ${pkgs[*]}"
  apt_update
  say "apt-get install ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

check_binfmt() { # dpkg arch
  local h="${BINFMT[$1]:-}"
  [ -z "$h" ] && return 0
  [ -e "/proc/sys/fs/binfmt_misc/$h" ] && grep -q '^enabled' "/proc/sys/fs/binfmt_misc/$h" ||
    die "binfmt handler $h is not enabled (needed to bootstrap $1); run scripts/setup-stack.sh"
}

# mmdebstrap once; $3...: extra arguments (a mirror). Writes $out.partial.
run_mmdebstrap() { # suite, dpkg arch, out, [mirror...]
  local suite="$1" a="$2" out="$3"; shift 3
  local args=(--mode=root --variant=minbase --format=tar "--architectures=$a"
    --aptopt='Acquire::Retries "3"'
    # no documentation, man pages or translations: smaller images, as the official ones do
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --quiet)
  # merged /usr by symlinks plus usr-is-merged, as debootstrap does; otherwise apt picks the
  # usrmerge package, which pulls in perl (+40 MB)
  [ -d /usr/share/mmdebstrap/hooks/merged-usr ] && args+=(--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr)
  rm -f "$out.partial"
  mmdebstrap "${args[@]}" "$suite" "$out.partial" "$@"
}

make_rootfs() { # suite, dpkg arch
  local suite="$1" a="$2" out
  out="$CACHE/rootfs/rootfs-$suite-$a.tar"
  if [ ! -s "$out" ]; then
    need_root "run mmdebstrap --mode=root"
    ensure_mmdebstrap
    check_binfmt "$a"
    mkdir -p "$CACHE/rootfs"
    say "mmdebstrap $suite $a (minbase; a few minutes for a foreign architecture)"
    local t0=$SECONDS mirror=() url
    [ -n "$MIRROR" ] && mirror=("$MIRROR")
    if ! run_mmdebstrap "$suite" "$a" "$out" "${mirror[@]}"; then
      # mmdebstrap runs `apt-get update --error-on=any`: one stale index fails it ("File has
      # unexpected size ... Mirror sync in progress?"; seen for the armhf indexes of
      # bookworm-security, trixie-updates and trixie-security). Fall back to the release suite alone.
      case "$MIRROR" in http://*|https://*|file:/*) url="$MIRROR" ;; *) url=http://deb.debian.org/debian ;; esac
      say "warning: mmdebstrap $suite $a failed with $suite-updates/$suite-security; retrying with" \
          "'deb $url $suite main' only (this rootfs gets no updates or security fixes from apt)"
      if ! run_mmdebstrap "$suite" "$a" "$out" "deb $url $suite main"; then
        rm -f "$out.partial"
        die "mmdebstrap $suite $a failed"
      fi
    fi
    mv -f "$out.partial" "$out"
    say "rootfs $suite $a: $((SECONDS - t0)) s, $(du -m "$out" | cut -f1) MB"
  fi
  place "$out" "$ROOTFS_DIR/rootfs-$suite-${TAG[$a]}.tar"
}

prepare_real() {
  local suite a
  for suite in $SUITES; do
    for a in "${ARCHES[@]}"; do make_rootfs "$suite" "$a"; done
  done
}

main() {
  local tier="${1:-fast}"
  case "$tier" in
    fast) timed "fast tier ready" prepare_fast ;;
    real) timed "real tier ready" prepare_real ;;
    all)  timed "fast tier ready" prepare_fast; timed "real tier ready" prepare_real ;;
    -h|--help) sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; return 0 ;;
    *) say "usage: $0 [fast|real|all]"; exit 2 ;;
  esac
}

main "$@"
