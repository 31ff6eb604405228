#!/usr/bin/env bash
# CI entry point: build the images (default: runtime and operator) on the local base image
# with this machine's podman, and print their names (stdout, one per line).
#
#   images/ci/build.sh [runtime] [operator]
#
# What differs from a user's `images/build.sh`, and only here:
# - BASE_IMAGE: the debootstrapped bookworm from images/ci/base-image.sh (no registry here);
# - CONTAINER_CLI: images/ci/podman (vfs, runc, cgroupfs, no default ulimits);
# - pip in the builder stage trusts the base's CA bundle, to which base-image.sh added this
#   machine's extra CAs (egress here goes through a TLS-intercepting proxy): build arg
#   PIP_CERT; PIP_INDEX_URL is passed on when set. (Not `--volume`: buildah 1.28 leaves the
#   mount points behind as empty files in every stage, the final image included.)
# Caching: an image whose inputs (build context files, Dockerfiles, base image, flags) hash
# as when it was last built here is not rebuilt at all (vfs makes even a fully cached
# `podman build` take a minute). Otherwise podman's layer cache. Dependency wheels are built in a layer keyed by
# pyproject.toml alone, so a source change rebuilds only the project wheel and the final
# install. (The Dockerfiles' pip cache mount stays empty here: pip caches nothing behind
# this proxy. On other machines it keeps downloads across pyproject.toml changes.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINER_CLI="${CONTAINER_CLI:-$here/podman}"
cache="${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}/images"
mkdir -p "$cache"

base="$("$here/base-image.sh" | tail -1)"
export BASE_IMAGE="${BASE_IMAGE:-$base}"

# pip in the builder stage trusts the base's CA bundle, which holds this machine's extra
# CAs (base-image.sh); and uses $PIP_INDEX_URL if set. Build args, never in the final image.
flags=(--build-arg "PIP_CERT=/etc/ssl/certs/ca-certificates.crt")
[[ -n "${PIP_INDEX_URL:-}" ]] && flags+=(--build-arg "PIP_INDEX_URL=$PIP_INDEX_URL")

export BUILD_FLAGS="${flags[*]} ${BUILD_FLAGS:-}"
# one build at a time on a machine (vfs builds of two trees at once only thrash 2 cores)
exec 9>"$cache/build.lock"
flock -w 1800 9

repo="$(cd "$here/../.." && pwd)"
inputs="$(
    cd "$repo"
    git ls-files -z --cached --others --exclude-standard -- \
        .dockerignore pyproject.toml README.md images runtime operator \
        | grep -zv __pycache__ | sort -z | xargs -0 sha256sum
    echo "$BASE_IMAGE $($CONTAINER_CLI image inspect --format '{{.Id}}' "$BASE_IMAGE") $BUILD_FLAGS"
)"
key="$(sha256sum <<<"$inputs" | cut -c1-16)"
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(runtime operator)
for target in "${targets[@]}"; do
    image="$(PRINT_ONLY=1 "$here/../build.sh" "$target")"
    stamp="$cache/stamp-${image//[^A-Za-z0-9._-]/_}"
    id="$($CONTAINER_CLI image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
    if [[ -n "$id" && -f "$stamp" && "$(cat "$stamp")" == "$key $id" ]]; then
        echo "ci/build.sh: $image up to date (inputs $key)" >&2
        echo "$image"
        continue
    fi
    nice -n "${KUBEINFER_BUILD_NICE:-10}" "$here/../build.sh" "$target"
    echo "$key $($CONTAINER_CLI image inspect --format '{{.Id}}' "$image")" >"$stamp"
done
