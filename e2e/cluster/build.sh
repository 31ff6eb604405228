#!/usr/bin/env bash
# Builds the e2e control plane from Go modules and caches the binaries outside the repo:
#   ${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}/k8s/<K8S_VERSION>/bin/
#     kube-apiserver kube-controller-manager kube-scheduler etcd kwok kwokctl
# Idempotent: each group of binaries carries a stamp keyed by the pinned versions and a
# hash of the wrapper modules' files; a group whose stamp matches is not rebuilt.
# Cold: roughly 10-25 minutes on 2 cores and a few GB of memory (linking kube-apiserver).
# Prints the bin directory as its last line of output.
#
# Environment: KUBEINFER_CACHE (cache root), KUBEINFER_BUILD_NICE (niceness, default 10),
# KUBEINFER_BUILD_JOBS (go build -p, default: number of cores).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

# Bump when the way binaries are built changes (flags, ldflags), to invalidate stamps.
BUILD_RECIPE=1

cache_root="${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}"
bin_dir="$cache_root/k8s/$K8S_VERSION/bin"
nice_level="${KUBEINFER_BUILD_NICE:-10}"
jobs="${KUBEINFER_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

export PATH="/usr/local/go/bin:$PATH"
export GOTOOLCHAIN=local CGO_ENABLED=0
# GOPATH and GOCACHE keep Go's defaults (~/go, ~/.cache/go-build): outside the repo.
command -v go >/dev/null || { echo "build.sh: go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }

log() { printf '[build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

hash_files() { cat "$@" | sha256sum | cut -d' ' -f1; }

# stamp_ok NAME KEY BINARY... : true when bin/.stamp-NAME holds KEY and all binaries exist.
stamp_ok() {
  local name="$1" key="$2"; shift 2
  [ -f "$bin_dir/.stamp-$name" ] && [ "$(cat "$bin_dir/.stamp-$name")" = "$key" ] || return 1
  local b
  for b in "$@"; do [ -x "$bin_dir/$b" ] || return 1; done
}

mkdir -p "$bin_dir"
# One build at a time per version (two test sessions may start together); the second
# waits, then finds everything cached.
exec 9>"$cache_root/k8s/$K8S_VERSION/.build.lock"
if ! flock -n 9; then
  log "another build.sh is running for $K8S_VERSION: waiting for it"
  flock 9
fi
work="$(mktemp -d "$cache_root/k8s/$K8S_VERSION/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT

k8s_minor="${K8S_VERSION#v1.}"; k8s_minor="${k8s_minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"

# Quick builds first, the long one last.
# --- etcd ------------------------------------------------------------------------
etcd_key="recipe=$BUILD_RECIPE etcd=$ETCD_VERSION mod=$(hash_files "$here/etcd/go.mod" "$here/etcd/go.sum" "$here/etcd/main.go")"
if stamp_ok etcd "$etcd_key" etcd; then
  log "etcd $ETCD_VERSION: cached"
else
  log "building etcd $ETCD_VERSION"
  start=$SECONDS
  (
    cd "$here/etcd"
    GOFLAGS="-buildvcs=false -mod=readonly" nice -n "$nice_level" \
      go build -p "$jobs" -trimpath -ldflags "-s -w" -o "$work/etcd" .
  )
  mv -f "$work/etcd" "$bin_dir/etcd"
  echo "$etcd_key" > "$bin_dir/.stamp-etcd"
  log "etcd built in $((SECONDS - start))s"
fi

# --- kwok, kwokctl ------------------------------------------------------------------
kwok_key="recipe=$BUILD_RECIPE kwok=$KWOK_VERSION k8s=$K8S_VERSION"
if stamp_ok kwok "$kwok_key" kwok kwokctl; then
  log "kwok, kwokctl $KWOK_VERSION: cached"
else
  log "building kwok, kwokctl $KWOK_VERSION"
  start=$SECONDS
  cpkg=sigs.k8s.io/kwok/pkg/consts
  GOBIN="$work" GOFLAGS="-buildvcs=false" nice -n "$nice_level" \
    go install -p "$jobs" -trimpath \
    -ldflags "-s -w -X $cpkg.Version=${KWOK_VERSION#v} -X $cpkg.KubeVersion=${K8S_VERSION#v}" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  mv -f "$work/kwok" "$bin_dir/kwok"
  mv -f "$work/kwokctl" "$bin_dir/kwokctl"
  echo "$kwok_key" > "$bin_dir/.stamp-kwok"
  log "kwok, kwokctl built in $((SECONDS - start))s"
fi

# --- kube-apiserver, kube-controller-manager, kube-scheduler -----------------------
kube_bins=(kube-apiserver kube-controller-manager kube-scheduler)
kube_key="recipe=$BUILD_RECIPE k8s=$K8S_VERSION mod=$(hash_files "$here/k8s/go.mod" "$here/k8s/go.sum" "$here/k8s/tools.go")"
if stamp_ok kube "$kube_key" "${kube_bins[@]}"; then
  log "kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION: cached"
else
  log "building kube-apiserver, kube-controller-manager, kube-scheduler $K8S_VERSION (cold: 10-25 min)"
  start=$SECONDS
  vpkg=k8s.io/component-base/version
  ldflags="-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$k8s_minor"
  ldflags+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=$build_date"
  # The same variables exist under k8s.io/client-go/pkg/version; kubectl-style clients read those.
  cpkg=k8s.io/client-go/pkg/version
  ldflags+=" -X $cpkg.gitVersion=$K8S_VERSION -X $cpkg.gitMajor=1 -X $cpkg.gitMinor=$k8s_minor"
  ldflags+=" -X $cpkg.gitTreeState=clean -X $cpkg.buildDate=$build_date"
  (
    cd "$here/k8s"
    GOFLAGS="-buildvcs=false -mod=readonly" nice -n "$nice_level" \
      go build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$work/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler
  )
  for b in "${kube_bins[@]}"; do mv -f "$work/$b" "$bin_dir/$b"; done
  echo "$kube_key" > "$bin_dir/.stamp-kube"
  log "kube binaries built in $((SECONDS - start))s"
fi

log "binaries ready in $bin_dir"
echo "$bin_dir"
