#!/usr/bin/env bash
# Install what binder-prebuild needs on a Debian 12 machine, idempotently:
#   - Debian packages, only those whose command is missing (scripts/install_plan.py decides):
#     git, curl, nodejs/npm, podman + runc + uidmap, docker-registry, mmdebstrap (offline
#     base image), chromium (browser tests), python3-venv
#   - a virtualenv in .venv with the project and its test dependencies
#   - configurable-http-proxy (npm) in .cache/node, for JupyterHub; thebe-core (npm) for its browser test
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

groups=base
[[ $ENGINE == 1 ]] && groups+=,engine
[[ $BROWSER == 1 ]] && groups+=,browser

SUDO=""
if [[ $(id -u) != 0 ]] && command -v sudo >/dev/null; then SUDO=sudo; fi
apt_install() { # packages...; on failure, say which package conflicted and how to go on
  local out
  if ! out=$(DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$@" 2>&1); then
    printf '%s\n' "$out" | tail -n 20 >&2
    printf '%s\n' "$out" | python3 scripts/install_plan.py explain "$@" | sed 's/^/install: /' >&2
    exit 1
  fi
}
# python3 first: the package plan is decided by a python3 script (stdlib only)
if ! command -v python3 >/dev/null 2>&1; then
  command -v apt-get >/dev/null || { log "python3 is missing: install Python 3.11 or later"; exit 1; }
  log "installing python3"; $SUDO apt-get update -qq; apt_install python3 python3-venv
fi
# Only what is missing, command by command: never a package whose command is already there
# (e.g. Debian's npm beside a Node.js that bundles its own, which apt cannot install).
if ! plan=$(python3 scripts/install_plan.py plan --groups "$groups"); then exit 1; fi
mapfile -t pkgs < <(printf '%s\n' "$plan" | sed '/^$/d')
if (( ${#pkgs[@]} )); then
  if [[ $(id -u) != 0 && -z $SUDO ]]; then
    log "missing packages and not root (no sudo): apt-get install ${pkgs[*]}"; exit 1
  fi
  command -v apt-get >/dev/null || { log "not a Debian system: please install ${pkgs[*]} yourself"; exit 1; }
  log "installing Debian packages: ${pkgs[*]}"
  $SUDO apt-get update -qq
  apt_install "${pkgs[@]}"
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
  if ! out=$(npm install --no-audit --no-fund --prefix .cache/node configurable-http-proxy 2>&1); then
    printf '%s\n' "$out" | tail -n 15 >&2
    log "npm could not install configurable-http-proxy (above); JupyterHub needs it. Fix that and run this again."
    exit 1
  fi
fi
if [[ ! -f .cache/node/node_modules/thebe-core/dist/lib/thebe-core.min.js ]]; then
  # a real BinderHub client for the launch API's browser test (tests/test_thebe_browser.py)
  log "installing thebe-core (npm) into .cache/node"
  mkdir -p .cache/node
  npm install --silent --no-audit --no-fund --prefix .cache/node thebe-core@0.5 >/dev/null
fi
log "ready"
