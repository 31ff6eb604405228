#!/usr/bin/env bash
# Build the kubeinfer container images from the repository root, with podman or docker.
#
#   images/build.sh                      # runtime (CPU) and operator
#   images/build.sh runtime operator runtime-gpu
#
# Images: $REGISTRY/runtime:$TAG, $REGISTRY/operator:$TAG (and $REGISTRY/runtime:$TAG-gpu),
# by default ghcr.io/kubeinfer/{runtime,operator}:<project version> - the names the
# operator (default runtime image) and the Helm chart (operator image) use.
#
# Env:
#   CONTAINER_CLI  podman or docker command (default: podman if found, else docker);
#                  on this project's CI machines: images/ci/podman
#   BASE_IMAGE     base of the CPU images (default in the Dockerfiles: python:3.11-slim-bookworm)
#   GPU_BASE_IMAGE base of the GPU image (default in Dockerfile.gpu: an nvidia/cuda cudnn runtime)
#   REGISTRY       image name prefix (default ghcr.io/kubeinfer)
#   TAG            image tag (default: version from pyproject.toml)
#   BUILD_FLAGS    more flags for `build`, e.g. "--platform linux/arm64" or "--no-cache"
#   PRINT_ONLY=1   print the image names, build nothing
# Prints one built image name per line on stdout; build output goes to stderr.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if [[ -z "${CONTAINER_CLI:-}" ]]; then
    if command -v podman >/dev/null; then CONTAINER_CLI=podman
    elif command -v docker >/dev/null; then CONTAINER_CLI=docker
    else echo "build.sh: neither podman nor docker found (set CONTAINER_CLI)" >&2; exit 1; fi
fi
read -r -a cli <<<"$CONTAINER_CLI"
export DOCKER_BUILDKIT=1  # docker: RUN --mount needs BuildKit (the default since Docker 23)

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -1)"
REGISTRY="${REGISTRY:-ghcr.io/kubeinfer}"
TAG="${TAG:-$version}"
read -r -a flags <<<"${BUILD_FLAGS:-}"
# The digest of what the builder stage reads. The final stage installs the builder's wheels
# through a bind mount, and buildah's layer cache (podman) does not look at a mount's
# content: without this build arg in the final RUN, a changed wheel set would reuse the
# old installed layer. (BuildKit keys mounts by content; the arg is harmless there.)
source_digest="$(
    git ls-files -z --cached --others --exclude-standard -- \
        .dockerignore pyproject.toml README.md images runtime operator 2>/dev/null \
        | grep -zv __pycache__ | sort -z | xargs -0 sha256sum 2>/dev/null | sha256sum | cut -c1-16
)"

build() {  # build <image> <dockerfile> [base image]
    local image="$1" dockerfile="$2" base="${3:-}" args=()
    if [[ -n "${PRINT_ONLY:-}" ]]; then echo "$image"; return; fi
    [[ -n "$base" ]] && args+=(--build-arg "BASE_IMAGE=$base")
    args+=(--build-arg "SOURCE_DIGEST=$source_digest")
    echo "build.sh: building $image from $dockerfile${base:+ on $base}" >&2
    local t0=$SECONDS
    "${cli[@]}" build -f "$dockerfile" -t "$image" "${args[@]}" "${flags[@]}" . >&2
    echo "build.sh: built $image in $((SECONDS - t0))s" >&2
    echo "$image"
}

targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(runtime operator)
for target in "${targets[@]}"; do
    case "$target" in
        runtime) build "$REGISTRY/runtime:$TAG" images/runtime/Dockerfile "${BASE_IMAGE:-}" ;;
        runtime-gpu) build "$REGISTRY/runtime:$TAG-gpu" images/runtime/Dockerfile.gpu "${GPU_BASE_IMAGE:-}" ;;
        operator) build "$REGISTRY/operator:$TAG" images/operator/Dockerfile "${BASE_IMAGE:-}" ;;
        *) echo "build.sh: unknown image '$target' (runtime, operator, runtime-gpu)" >&2; exit 2 ;;
    esac
done
