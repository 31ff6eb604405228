#!/usr/bin/env bash
# Starts the slow, cached e2e builds in the background so that they overlap with the fast
# test tiers instead of waiting for the first e2e test: the control plane
# (e2e/cluster/build.sh), then the metrics stack (e2e/metrics/build.sh). Each build script
# holds its own lock, so an e2e fixture that needs a binary waits for the running build
# and then finds it cached; a build that fails here is simply run again (and reported) by
# the fixture. With warm caches both finish in about a second.
#
#   tools/prebuild.sh start   start the builds (no-op when KUBEINFER_E2E=0)
#   tools/prebuild.sh stop    end them if still running (after the tests)
# Log: ${KUBEINFER_CACHE:-~/.cache/kubeinfer}/prebuild.log
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}"
pidfile="$cache_root/prebuild.pid"
mkdir -p "$cache_root"

case "${1:-start}" in
  start)
    [ "${KUBEINFER_E2E:-1}" = "0" ] && exit 0
    command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || exit 0  # the fixtures report it
    setsid bash -c '
      bash "$1/e2e/cluster/build.sh" && bash "$1/e2e/metrics/build.sh"
    ' prebuild "$here" >"$cache_root/prebuild.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "prebuild: control plane and metrics stack building in the background (log: $cache_root/prebuild.log)"
    ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid="$(cat "$pidfile")"; rm -f "$pidfile"
    kill -- "-$pid" 2>/dev/null || true
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
