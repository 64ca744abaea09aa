#!/usr/bin/env bash
# Install what binder-prebuild needs on a Debian 12 machine, idempotently:
#   - Debian packages: python3-venv, git, nodejs/npm, podman + runc, docker-registry,
#     mmdebstrap (offline base image), chromium (browser tests)
#   - a virtualenv in .venv with the project and its test dependencies
#   - configurable-http-proxy (npm) in .cache/node, for JupyterHub
# Usage: scripts/install.sh [--no-engine] [--no-browser]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
ENGINE=1 BROWSER=1
for a in "$@"; do
  case "$a" in
    --no-engine) ENGINE=0 ;;
    --no-browser) BROWSER=0 ;;
    *) echo "install.sh: unknown option $a" >&2; exit 2 ;;
  esac
done
log() { printf 'install: %s\n' "$*" >&2; }

pkgs=(git python3 python3-venv python3-pip nodejs npm curl ca-certificates)
bins=(git python3 node npm curl)
if [[ $ENGINE == 1 ]]; then pkgs+=(podman runc uidmap docker-registry mmdebstrap); bins+=(podman runc docker-registry mmdebstrap); fi
if [[ $BROWSER == 1 ]]; then pkgs+=(chromium); bins+=(chromium); fi

missing=()
for i in "${!bins[@]}"; do command -v "${bins[$i]}" >/dev/null 2>&1 || missing+=("${bins[$i]}"); done
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=(python3-venv); fi
if (( ${#missing[@]} )); then
  SUDO=""
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null; then SUDO=sudo; else
      log "missing ${missing[*]} and not root (no sudo): install: ${pkgs[*]}"; exit 1; fi
  fi
  if command -v apt-get >/dev/null; then
    log "installing Debian packages (missing: ${missing[*]})"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  else
    log "not a Debian system: please install ${pkgs[*]} yourself"; exit 1
  fi
fi

PY=python3
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.binder-prebuild-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  log "installing the project into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

if [[ ! -x .cache/node/node_modules/.bin/configurable-http-proxy ]]; then
  log "installing configurable-http-proxy (npm) into .cache/node"
  mkdir -p .cache/node
  npm install --silent --no-audit --no-fund --prefix .cache/node configurable-http-proxy >/dev/null
fi
log "ready"
