#!/usr/bin/env bash
# Build the offline base image for local/e2e builds once:
#   mmdebstrap (Debian bookworm, apt variant, python3 + pip + venv + git + CA certs)
#   -> podman import as $BASE_IMAGE (default localhost/binder-prebuild-base:bookworm)
# Skips everything when the image already exists (FORCE=1 rebuilds).
#
# Settings (environment):
#   BASE_IMAGE       default localhost/binder-prebuild-base:bookworm
#   SUITE            default bookworm
#   DEBIAN_MIRROR    default: the host's apt mirror for Debian (deb.debian.org here)
#   SECURITY_MIRROR  default: the host's debian-security mirror
#   CONTAINERS_CONF  as exported by scripts/local-engine.sh (set here if unset)
#   FORCE=1          rebuild even if the image exists
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE_IMAGE="${BASE_IMAGE:-localhost/binder-prebuild-base:bookworm}"
SUITE="${SUITE:-bookworm}"
INCLUDE="python3,python3-pip,python3-venv,git,ca-certificates"

log() { printf 'base-image: %s\n' "$*" >&2; }

if [[ -z "${CONTAINERS_CONF:-}" ]]; then
    eval "$("$ROOT/scripts/local-engine.sh" env)"
fi

if [[ "${FORCE:-0}" != 1 ]] && podman image exists "$BASE_IMAGE"; then
    log "$BASE_IMAGE exists; skipping (FORCE=1 to rebuild)"
    exit 0
fi

command -v mmdebstrap >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get -y -q -o DPkg::Lock::Timeout=600 install --no-install-recommends mmdebstrap >&2 ||
        { apt-get -q update >&2 && apt-get -y -q install --no-install-recommends mmdebstrap >&2; }
}

# The mirrors the host's apt uses (deb822 *.sources or one-line sources.list).
host_uri() { # regex on the URI
    {
        grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources /dev/null | awk '{for (i = 2; i <= NF; i++) print $i}'
        grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /dev/null | awk '{print ($2 ~ /^\[/) ? $3 : $2}'
    } 2>/dev/null | grep -E "$1" | head -n1 || true
}
DEBIAN_MIRROR="${DEBIAN_MIRROR:-$(host_uri '/debian/?$')}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${SECURITY_MIRROR:-$(host_uri '/debian-security/?$')}"
SECURITY_MIRROR="${SECURITY_MIRROR:-http://deb.debian.org/debian-security}"

tmp="$(mktemp -d /var/tmp/binder-base.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

log "mmdebstrap $SUITE from $DEBIAN_MIRROR (+ $SECURITY_MIRROR)"
start=$SECONDS
mmdebstrap --variant=apt --include="$INCLUDE" \
    --components=main \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    "$SUITE" "$tmp/base.tar" \
    "deb $DEBIAN_MIRROR $SUITE main" \
    "deb $DEBIAN_MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main" >&2
log "rootfs built in $((SECONDS - start)) s ($(du -h "$tmp/base.tar" | cut -f1))"

podman import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV LANG=C.UTF-8' \
    --message "binder-prebuild base: mmdebstrap $SUITE +$INCLUDE" \
    "$tmp/base.tar" "$BASE_IMAGE" >&2
log "imported $BASE_IMAGE"
podman image inspect --format '{{.Id}} {{.Architecture}} {{.Size}}' "$BASE_IMAGE"
