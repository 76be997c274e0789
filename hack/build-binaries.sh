#!/usr/bin/env bash
# Builds the local cluster's binaries from their Go modules and caches them outside the repo,
# keyed by version. A warm cache makes this a no-op; a cold build takes ~12 minutes on 2 cores.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  <- k8s.io/kubernetes
#   etcd                                                               <- go.etcd.io/etcd/server/v3
#   helm                                                               <- helm.sh/helm/v3
#   kueue (+ its CRDs and webhook manifests)                           <- sigs.k8s.io/kueue
#   jobset (+ its CRDs and webhook manifests)                          <- sigs.k8s.io/jobset
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
KUEUE_VERSION=${KUEUE_VERSION:-v0.17.0}
# The proxy refuses jobset's version list but serves exact versions.
JOBSET_VERSION=${JOBSET_VERSION:-v0.10.1}
CACHE_DIR=${KUBETUNE_CACHE:-$HOME/.cache/kubetune}
BIN_DIR=$CACHE_DIR/bin/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-kueue-$KUEUE_VERSION-jobset-$JOBSET_VERSION

log() { printf '[build-binaries %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

all_present() {
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd helm kueue jobset; do
    [ -x "$BIN_DIR/$b" ] || return 1
  done
  [ -d "$BIN_DIR/manifests/kueue" ] && [ -d "$BIN_DIR/manifests/jobset" ]
}

if all_present; then
  echo "$BIN_DIR"
  exit 0
fi
mkdir -p "$BIN_DIR"

# Go prints nothing for minutes during a cold build; a heartbeat shows it is alive.
heartbeat() { while sleep 30; do log "still building ($1)..."; done; }
# A failed build exits via `set -e` before the `kill $hb` below; stop any heartbeat with it.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

build_kubernetes() {
  local work=$CACHE_DIR/build/kubernetes-$K8S_VERSION
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local staging_version=v0.${K8S_VERSION#v1.}
  mkdir -p "$work"; cd "$work"
  log "kubernetes $K8S_VERSION: preparing wrapper module in $work"
  if [ ! -f go.mod ] || ! grep -q "k8s.io/kubernetes $K8S_VERSION" go.mod; then
    rm -f go.mod go.sum
    go mod init kubetune.dev/localcluster/kubernetes >/dev/null 2>&1
    local upstream_gomod
    upstream_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    # The staging modules are exactly those that upstream replaces with ./staging/... folders.
    local staging
    staging=$(grep -oE '^\s*k8s.io/[a-z0-9-]+ => \./staging' "$upstream_gomod" | awk '{print $1}')
    [ -n "$staging" ] || { log "no staging modules found in $upstream_gomod"; exit 1; }
    for m in $staging; do go mod edit -replace "$m=$m@$staging_version"; done
    go mod edit -require "k8s.io/kubernetes@$K8S_VERSION"
    log "resolving commands (go get)"
    go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
           "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
           "k8s.io/kubernetes/cmd/kube-scheduler@$K8S_VERSION" \
           "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
  fi
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  log "compiling kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (cold: ~12 min)"
  heartbeat kubernetes & local hb=$!
  go build -trimpath -ldflags "-s -w $ld" -o "$BIN_DIR/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  kill $hb 2>/dev/null || true
}

build_etcd() {
  local work=$CACHE_DIR/build/etcd-$ETCD_VERSION
  mkdir -p "$work"; cd "$work"
  if [ ! -f go.mod ] || ! grep -q "$ETCD_VERSION" go.mod; then
    rm -f go.mod go.sum
    go mod init kubetune.dev/localcluster/etcd >/dev/null 2>&1
    log "etcd $ETCD_VERSION: resolving"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  fi
  log "compiling etcd"
  heartbeat etcd & local hb=$!
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
  kill $hb 2>/dev/null || true
}

build_helm() {
  log "helm $HELM_VERSION: go install"
  heartbeat helm & local hb=$!
  GOBIN="$BIN_DIR" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  kill $hb 2>/dev/null || true
}

# Controllers built in a wrapper module, like etcd: `go install pkg@version` would ask the proxy for
# the module's version list (to check deprecation), which it refuses for jobset. Their CRDs and
# webhook manifests are copied beside the binary, from the same module version.
build_controller() {  # name module package version
  local name=$1 module=$2 package=$3 version=$4
  local work=$CACHE_DIR/build/$name-$version
  mkdir -p "$work"; cd "$work"
  if [ ! -f go.mod ] || ! grep -q "$module $version" go.mod; then
    rm -f go.mod go.sum
    go mod init "kubetune.dev/localcluster/$name" >/dev/null 2>&1
    log "$name $version: resolving"
    go get "$package@$version"
  fi
  log "compiling $name (kueue cold: ~7 min)"
  heartbeat "$name" & local hb=$!
  go build -trimpath -ldflags "-s -w" -o "$BIN_DIR/$name" "$package"
  kill $hb 2>/dev/null || true
  local src; src=$(go mod download -json "$module@$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$BIN_DIR/manifests/$name"; mkdir -p "$BIN_DIR/manifests/$name"
  cp -r "$src/config/components/crd" "$src/config/components/webhook" "$BIN_DIR/manifests/$name/"
  chmod -R u+w "$BIN_DIR/manifests/$name"
}

start=$SECONDS
[ -x "$BIN_DIR/etcd" ] || build_etcd
[ -x "$BIN_DIR/kube-apiserver" ] && [ -x "$BIN_DIR/kubectl" ] || build_kubernetes
[ -x "$BIN_DIR/helm" ] || build_helm
[ -x "$BIN_DIR/kueue" ] && [ -d "$BIN_DIR/manifests/kueue" ] ||
  build_controller kueue sigs.k8s.io/kueue sigs.k8s.io/kueue/cmd/kueue "$KUEUE_VERSION"
[ -x "$BIN_DIR/jobset" ] && [ -d "$BIN_DIR/manifests/jobset" ] ||
  build_controller jobset sigs.k8s.io/jobset sigs.k8s.io/jobset "$JOBSET_VERSION"
all_present || { log "a binary is missing after the build"; exit 1; }
log "binaries ready in $BIN_DIR after $((SECONDS - start)) s"
echo "$BIN_DIR"
