#!/usr/bin/env bash
# Make the SBOM generator image that BuildKit runs for `attest type=sbom,generator=IMAGE`, and push
# it to the local registry, so SBOM attestations can be made without Docker Hub:
#
#   scripts/sbom-scanner.sh [--print-ref] [--dry-run]
#
# The image is tools/sbom-scanner: a scanner speaking BuildKit's SBOM protocol (as BuildKit's own
# docker/buildkit-syft-scanner does), built on syft's Go module; it writes reproducible SPDX
# documents. The static binaries are built once per version (tools/sbom-scanner/VERSION and syft's
# version from its go.mod) into $MULTIBAKE_CACHE/sbom-scanner-<version>/ (about 4 minutes of CPU for
# one platform), and the image is pushed to $MULTIBAKE_REGISTRY_ADDR (default 127.0.0.1:5000) as
#   <registry>/multibake-tools/sbom-scanner:<version>
# which `--print-ref` prints without building anything. Idempotent: an image already in the registry
# is left alone; one the registry lost is pushed again from the cached binaries.
#
# Platforms: $MULTIBAKE_SBOM_SCANNER_PLATFORMS (default linux/amd64). BuildKit runs the scanner on
# the builder's own first platform, so a builder whose first node is arm needs linux/arm64 in it.
#
# Needs Go (as scripts/setup-stack.sh --stack buildkit installs it), docker with buildx, and the
# registry running (scripts/setup-stack.sh).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/tools/sbom-scanner"
CACHE="${MULTIBAKE_CACHE:-/var/cache/multibake}"
REGISTRY_ADDR="${MULTIBAKE_REGISTRY_ADDR:-127.0.0.1:5000}"
PLATFORMS="${MULTIBAKE_SBOM_SCANNER_PLATFORMS:-linux/amd64}"
PRINT_REF=0
DRY_RUN=0

say() { printf 'sbom-scanner: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --print-ref) PRINT_REF=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) say "unknown argument: $1"; exit 2 ;;
  esac
done

SYFT_VERSION=$(awk '$1 == "github.com/anchore/syft" {print $2; exit}' "$SRC/go.mod")
[ -n "$SYFT_VERSION" ] || die "tools/sbom-scanner/go.mod names no github.com/anchore/syft"
VERSION="$(tr -d ' \n' < "$SRC/VERSION")-syft-$SYFT_VERSION"
IMAGE="$REGISTRY_ADDR/multibake-tools/sbom-scanner:$VERSION"
BIN_DIR="$CACHE/sbom-scanner-$VERSION"

if [ "$PRINT_REF" = 1 ]; then echo "$IMAGE"; exit 0; fi

# platform (linux/arm/v7) -> the file name suffix ${TARGETARCH}${TARGETVARIANT} (armv7)
suffix() { local p="${1#linux/}"; echo "${p//\//}"; }

image_present() {
  curl -fsS -o /dev/null -H 'Accept: application/vnd.oci.image.index.v1+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY_ADDR/v2/multibake-tools/sbom-scanner/manifests/$VERSION" 2>/dev/null
}

build_binary() { # platform
  local platform="$1" out goarch goarm=""
  out="$BIN_DIR/sbom-scanner-$(suffix "$platform")"
  [ -x "$out" ] && return 0
  [ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"
  command -v go >/dev/null 2>&1 || die "Go is needed to build the scanner (scripts/setup-stack.sh --stack buildkit installs it)"
  case "$platform" in
    linux/amd64) goarch=amd64 ;;
    linux/arm64) goarch=arm64 ;;
    linux/arm/v7) goarch=arm goarm=7 ;;
    linux/arm/v6) goarch=arm goarm=6 ;;
    *) die "no Go target for platform $platform" ;;
  esac
  say "building the scanner $VERSION for $platform (once; cached in $BIN_DIR)"
  mkdir -p "$BIN_DIR"
  (cd "$SRC" && GOPATH="$CACHE/go" GOFLAGS=-modcacherw GOTOOLCHAIN=auto CGO_ENABLED=0 GOOS=linux \
    GOARCH="$goarch" GOARM="$goarm" go build -trimpath \
    -ldflags "-s -w -X main.version=$VERSION -X main.syftVersion=$SYFT_VERSION" -o "$out.partial" .)
  mv -f "$out.partial" "$out"
}

push_image() {
  local ctx platform
  ctx=$(mktemp -d)
  cp "$SRC/Dockerfile" "$ctx/"
  for platform in ${PLATFORMS//,/ }; do
    ln "$BIN_DIR/sbom-scanner-$(suffix "$platform")" "$ctx/" 2>/dev/null ||
      cp "$BIN_DIR/sbom-scanner-$(suffix "$platform")" "$ctx/"
  done
  say "pushing $IMAGE ($PLATFORMS)"
  # The docker driver: every machine with the stack has it (its image exporter takes no
  # rewrite-timestamp, so the image digest is not reproducible; the binaries are).
  docker buildx build --builder default --quiet --provenance=false --sbom=false \
    --platform "$PLATFORMS" --output "type=image,name=$IMAGE,push=true" "$ctx" >/dev/null
  rm -rf "$ctx"
}

main() {
  if image_present; then
    say "$IMAGE is in the registry"
    return 0
  fi
  say "will build the scanner $VERSION for $PLATFORMS into $BIN_DIR (if not cached) and push $IMAGE"
  [ "$DRY_RUN" = 1 ] && return 0
  local platform
  for platform in ${PLATFORMS//,/ }; do build_binary "$platform"; done
  push_image
  image_present || die "$IMAGE is not in the registry after the push"
}

main
