#!/usr/bin/env bash
# Builds the e2e metrics stack from Go modules and caches it outside the repo:
#   ${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}/metrics/p<PROMETHEUS_VERSION>-keda<KEDA_VERSION>/
#     bin/prometheus           Prometheus (cmd/prometheus; file and http service discovery only,
#                              no web UI assets: the API is all the tests use)
#     bin/keda-operator        KEDA's operator (cmd/operator)
#     bin/keda-adapter         KEDA's metrics API server (cmd/adapter)
#     crds/                    KEDA's CRDs (config/crd/bases from the module cache)
# Idempotent: each group carries a stamp keyed by the pinned versions and a hash of the
# wrapper module's files; a group whose stamp matches is not rebuilt.
# Cold: roughly 10-30 minutes on 2 cores (KEDA links every scaler's cloud SDK).
# Prints the bin directory as its last line of output.
#
# Environment: KUBEINFER_CACHE (cache root), KUBEINFER_BUILD_NICE (niceness, default 10),
# KUBEINFER_BUILD_JOBS (go build -p, default: number of cores).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

# Bump when the way binaries are built changes (flags, ldflags, tags), to invalidate stamps.
BUILD_RECIPE=1

cache_root="${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}"
top="$cache_root/metrics/p$PROMETHEUS_VERSION-keda$KEDA_VERSION"
bin_dir="$top/bin"
crd_dir="$top/crds"
nice_level="${KUBEINFER_BUILD_NICE:-10}"
jobs="${KUBEINFER_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}"

export PATH="/usr/local/go/bin:$PATH"
export GOTOOLCHAIN=local CGO_ENABLED=0
command -v go >/dev/null || { echo "build.sh: go not found (expected /usr/local/go/bin/go)" >&2; exit 1; }

log() { printf '[metrics/build.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

hash_files() { cat "$@" | sha256sum | cut -d' ' -f1; }

stamp_ok() {
  local name="$1" key="$2"; shift 2
  [ -f "$top/.stamp-$name" ] && [ "$(cat "$top/.stamp-$name")" = "$key" ] || return 1
  local p
  for p in "$@"; do [ -e "$p" ] || return 1; done
}

grep -q "^require github.com/kedacore/keda/v2 $KEDA_VERSION\$" "$here/keda/go.mod" || {
  echo "metrics/build.sh: keda/go.mod does not require github.com/kedacore/keda/v2 $KEDA_VERSION (versions.env)" >&2
  exit 1
}

mkdir -p "$bin_dir" "$crd_dir"
exec 9>"$top/.build.lock"
if ! flock -n 9; then
  log "another metrics/build.sh is running for $top: waiting for it"
  flock 9
fi
work="$(mktemp -d "$top/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
build_date="$(date -u +%Y%m%d-%H:%M:%S)"

# --- Prometheus ------------------------------------------------------------------------
prom_key="recipe=$BUILD_RECIPE prometheus=$PROMETHEUS_MODULE_VERSION"
if stamp_ok prometheus "$prom_key" "$bin_dir/prometheus"; then
  log "prometheus $PROMETHEUS_VERSION: cached"
else
  log "building prometheus $PROMETHEUS_VERSION ($PROMETHEUS_MODULE_VERSION)"
  start=$SECONDS
  vpkg=github.com/prometheus/common/version
  # remove_all_sd keeps only the file and http service discoveries (plugins/minimum.go).
  GOBIN="$work" GOFLAGS="-buildvcs=false" nice -n "$nice_level" \
    go install -p "$jobs" -trimpath -tags "netgo remove_all_sd" \
    -ldflags "-s -w -X $vpkg.Version=$PROMETHEUS_VERSION -X $vpkg.Branch=$PROMETHEUS_MODULE_VERSION -X $vpkg.BuildDate=$build_date" \
    "github.com/prometheus/prometheus/cmd/prometheus@$PROMETHEUS_MODULE_VERSION"
  mv -f "$work/prometheus" "$bin_dir/prometheus"
  echo "$prom_key" > "$top/.stamp-prometheus"
  log "prometheus built in $((SECONDS - start))s"
fi

# --- KEDA operator, metrics API server, CRDs ---------------------------------------------
keda_key="recipe=$BUILD_RECIPE keda=$KEDA_VERSION mod=$(hash_files "$here/keda/go.mod" "$here/keda/go.sum" "$here/keda/tools.go")"
if stamp_ok keda "$keda_key" "$bin_dir/keda-operator" "$bin_dir/keda-adapter" "$crd_dir/keda.sh_scaledobjects.yaml"; then
  log "keda $KEDA_VERSION: cached"
else
  log "building keda-operator, keda-adapter $KEDA_VERSION (cold: 10-30 min)"
  start=$SECONDS
  vpkg=github.com/kedacore/keda/v2/version
  (
    cd "$here/keda"
    GOFLAGS="-buildvcs=false -mod=readonly" nice -n "$nice_level" \
      go build -p "$jobs" -trimpath -ldflags "-s -w -X $vpkg.Version=${KEDA_VERSION#v} -X $vpkg.GitCommit=$KEDA_VERSION" \
      -o "$work/keda-operator" github.com/kedacore/keda/v2/cmd/operator
    GOFLAGS="-buildvcs=false -mod=readonly" nice -n "$nice_level" \
      go build -p "$jobs" -trimpath -ldflags "-s -w -X $vpkg.Version=${KEDA_VERSION#v} -X $vpkg.GitCommit=$KEDA_VERSION" \
      -o "$work/keda-adapter" github.com/kedacore/keda/v2/cmd/adapter
  )
  keda_dir="$(cd "$here/keda" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' github.com/kedacore/keda/v2)"
  [ -f "$keda_dir/config/crd/bases/keda.sh_scaledobjects.yaml" ] || {
    echo "metrics/build.sh: KEDA CRDs not found under $keda_dir/config/crd/bases" >&2; exit 1; }
  rm -rf "$crd_dir" && mkdir -p "$crd_dir"
  cp "$keda_dir"/config/crd/bases/*.yaml "$crd_dir/"
  chmod u+w "$crd_dir"/*.yaml
  mv -f "$work/keda-operator" "$bin_dir/keda-operator"
  mv -f "$work/keda-adapter" "$bin_dir/keda-adapter"
  echo "$keda_key" > "$top/.stamp-keda"
  log "keda built in $((SECONDS - start))s"
fi

log "metrics stack ready in $bin_dir (CRDs in $crd_dir)"
echo "$bin_dir"
