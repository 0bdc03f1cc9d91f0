#!/usr/bin/env bash
# Build kube-apiserver, kubectl, kubelet, kube-scheduler, kube-controller-manager
# and etcd from the Go module proxy at the versions pinned in hack/versions.env,
# into $CRIOPS_CACHE/bin/kubernetes-<version>/ and $CRIOPS_CACHE/bin/etcd-<version>/.
# Only missing binaries are built, so a second run is a no-op. Each build takes
# minutes on two cores (kubelet about 200 s).
. "$(dirname "$0")/lib.sh"

go_env
# Static binaries, as upstream ships them. k8s.io/kubernetes carries a go.work
# that names its staging directories, which its module zip lacks: ignore it.
export CGO_ENABLED=0 GOWORK=off

[[ $KUBERNETES_VERSION == "v$KUBERNETES_MINOR".* ]] ||
  die "KUBERNETES_VERSION $KUBERNETES_VERSION is not of KUBERNETES_MINOR $KUBERNETES_MINOR"

work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT

# pin_replaced DIR PREFIX VERSION: drop the go.mod replaces whose target starts
# with PREFIX (directories the module zip does not contain) and require the
# published modules at VERSION instead.
pin_replaced() {
  local edits=() mod
  for mod in $(cd "$1" && go mod edit -json |
    jq -r --arg prefix "$2" '.Replace[]? | select(.New.Path | startswith($prefix)) | .Old.Path'); do
    edits+=("-dropreplace=$mod" "-require=$mod@$3")
  done
  ((${#edits[@]})) || die "no replaces to $2 in $1/go.mod"
  (cd "$1" && go mod edit "${edits[@]}")
}

# Lower priority: the builds keep both cores busy for minutes, and tests or a
# benchmark may be running beside them.
gobuild() { nice go build -trimpath "$@"; }

# The Kubernetes binaries of the test world: kube-apiserver and kubectl for the
# operator's tests, kubelet, kube-scheduler and kube-controller-manager for test
# hosts that join as real Nodes. Static like upstream's release builds (kubelet
# included: CGO_ENABLED=0 is how upstream ships it).
KUBERNETES_COMMANDS="kube-apiserver kubectl kubelet kube-scheduler kube-controller-manager"

build_kubernetes() {
  local out="$CRIOPS_BIN/kubernetes-$KUBERNETES_VERSION" src="$work/kubernetes"
  local cmd missing=()
  for cmd in $KUBERNETES_COMMANDS; do
    [[ -x $out/$cmd ]] || missing+=("$cmd")
  done
  if ((${#missing[@]} == 0)); then
    log "kubernetes $KUBERNETES_VERSION already built in $out"
    return
  fi
  module_source "k8s.io/kubernetes@$KUBERNETES_VERSION" "$src"

  # k8s.io/kubernetes replaces its staging modules (k8s.io/api, client-go, ...)
  # with ./staging/src/k8s.io/<name>, nested modules that its module zip leaves
  # out. Each is published from the same tag as v0.<minor>.<patch>: require that.
  local staged="v0.${KUBERNETES_VERSION#v1.}"
  pin_replaced "$src" ./staging/ "$staged"

  # What upstream's hack/lib/version.sh stamps, so that --version and
  # `kubectl version` report the release. The commit is not known here.
  local major=${KUBERNETES_MINOR%%.*} minor=${KUBERNETES_MINOR#*.} ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=archive -X $pkg.buildDate=$module_time"
  done

  # Binaries already in $out may be in use (a running API server): each new one
  # is built beside them under a temporary name and moved into place whole.
  mkdir -p "$out"
  local start
  for cmd in "${missing[@]}"; do
    log "building $cmd $KUBERNETES_VERSION (staging modules at $staged)"
    start=$SECONDS
    (cd "$src" && gobuild -ldflags "$ldflags" -o "$out/.$cmd.tmp" "./cmd/$cmd")
    mv "$out/.$cmd.tmp" "$out/$cmd"
    log "built $cmd in $((SECONDS - start)) s"
  done
  log "kubernetes $KUBERNETES_VERSION ready in $out"
}

build_etcd() {
  local out="$CRIOPS_BIN/etcd-$ETCD_VERSION" src="$work/etcd"
  if [[ -x $out/etcd ]]; then
    log "etcd $ETCD_VERSION already built in $out"
    return
  fi
  module_source "go.etcd.io/etcd/server/v3@$ETCD_VERSION" "$src"

  # The server module replaces its sibling modules with ../api and so on, which
  # are outside its module zip: require the ones published at the same version.
  pin_replaced "$src" ../ "$ETCD_VERSION"

  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  log "building etcd $ETCD_VERSION"
  local start=$SECONDS
  # The module's root package is etcd's main (a wrapper of etcdmain). Its
  # version string is a constant of go.etcd.io/etcd/api/v3/version.
  (cd "$src" && gobuild -ldflags "-s -w" -o "$out.tmp/etcd" .)
  log "built etcd in $((SECONDS - start)) s"
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "etcd $ETCD_VERSION ready in $out"
}

build_etcd
build_kubernetes
