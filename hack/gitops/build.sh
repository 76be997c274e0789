#!/usr/bin/env bash
# Builds the GitOps health harnesses and caches them outside the repo, keyed by the library versions
# and a hash of the harness sources; prints the bin dir on stdout. A warm cache makes this a no-op.
#
#   kstatus  <- sigs.k8s.io/cli-utils/pkg/kstatus/status (what Flux and kpt wait on)
#   argolua  <- github.com/yuin/gopher-lua (the Lua VM Argo CD runs health checks in)
#
# Go's module and build caches are the usual ones.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HARNESSES=(kstatus argolua)
CACHE_DIR=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}

log() { printf '[gitops-build %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

module_version() {  # module -> the version go.mod requires
  awk -v m="$1" '$1 == m {print $2; exit} $1 == "require" && $2 == m {print $3; exit}' "$HERE/go.mod"
}

KSTATUS_VERSION=$(module_version sigs.k8s.io/cli-utils)
LUA_VERSION=$(module_version github.com/yuin/gopher-lua)
[ -n "$KSTATUS_VERSION" ] && [ -n "$LUA_VERSION" ] || { log "cannot read the versions from the go.mod"; exit 1; }
# Any edit of a harness, its go.sum or this script builds anew; so does another Go toolchain.
HASH=$(
  cd "$HERE"
  {
    go env GOVERSION
    { echo build.sh; echo go.mod; echo go.sum; find "${HARNESSES[@]}" objects -type f -name '*.go'; } |
      LC_ALL=C sort | xargs sha256sum
  } | sha256sum | cut -c1-12
)
BIN_DIR=$CACHE_DIR/bin/gitops-cliutils-$KSTATUS_VERSION-gopherlua-$LUA_VERSION-$HASH

all_present() {
  for h in "${HARNESSES[@]}"; do [ -x "$BIN_DIR/$h" ] || return 1; done
}

if all_present; then
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$CACHE_DIR/bin"
# Build beside the final dir and move it in at once: an interrupted build leaves no half a cache.
tmp=$(mktemp -d "$BIN_DIR.tmp.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS
for h in "${HARNESSES[@]}"; do
  log "compiling $h"
  (cd "$HERE" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$tmp/$h" "./$h")
done
rm -rf "$BIN_DIR"
mv "$tmp" "$BIN_DIR"
log "harnesses ready in $BIN_DIR after $((SECONDS - start)) s"
echo "$BIN_DIR"
