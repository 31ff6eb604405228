#!/usr/bin/env bash
# Make the local stand-in for python:3.11-slim-bookworm that CI builds the images on (no
# registry is reachable here): debootstrap a minimal Debian bookworm root with python3
# (3.11) and python3-venv, tar it, `podman import` it. Prints the image name (last line of
# stdout); logs go to stderr.
#
# Cached: the tarball under ${KUBEINFER_CACHE:-~/.cache/kubeinfer}/images/ and the imported
# image are keyed by a hash of this script, so editing the script makes a new base; an
# unchanged script costs a `podman image exists`. Concurrent callers serialize on a lock.
#
# The machine's own extra CA certificates (*.crt in $EXTRA_CA_DIR, default
# /usr/local/share/ca-certificates: here, the egress proxy's) are added to the base's trust
# store, so that pip in the image build reaches PyPI (images/ci/build.sh passes
# --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt). They are part of the cache key.
#
# Env: CONTAINER_CLI (default: images/ci/podman), DEBIAN_MIRROR, KUBEINFER_CACHE, EXTRA_CA_DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cli="${CONTAINER_CLI:-$here/podman}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
cache="${KUBEINFER_CACHE:-$HOME/.cache/kubeinfer}/images"
ca_dir="${EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
shopt -s nullglob
extra_ca=("$ca_dir"/*.crt)
key="$(cat "${BASH_SOURCE[0]}" "${extra_ca[@]}" | sha256sum | cut -c1-12)"
image="localhost/kubeinfer/base:bookworm-py311-$key"
tarball="$cache/base-bookworm-py311-$key.tar"
log() { echo "[base-image] $*" >&2; }

mkdir -p "$cache"
exec 9>"$cache/base.lock"
flock -w 1800 9

if $cli image exists "$image" 2>/dev/null; then
    log "cached: $image"
    echo "$image"
    exit 0
fi

if [[ ! -s "$tarball" ]]; then
    command -v debootstrap >/dev/null || { log "debootstrap not found (apt-get install debootstrap)"; exit 1; }
    root="$(mktemp -d "$cache/rootfs.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    log "debootstrap bookworm into $root (a few minutes; log: $cache/debootstrap.log)"
    nice -n 10 debootstrap --variant=minbase \
        --include=python3,python3-venv,ca-certificates,tzdata \
        bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
        || { tail -30 "$cache/debootstrap.log" >&2; exit 1; }
    if ((${#extra_ca[@]})); then
        cp "${extra_ca[@]}" "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >&2
    fi
    # what python:3.11-slim leaves out too: package lists, docs, man pages, caches
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/var/log/* "$root"/tmp/* "$root"/var/tmp/*
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 755 "$root"  # mktemp made it 0700: that would be the image's /
    tar --numeric-owner --xattrs -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi

log "importing $tarball as $image"
$cli import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$tarball" "$image" >&2
echo "$image"
