#!/usr/bin/env bash
# Local container stack for the local builder and the end-to-end tests:
# a rootful Podman API service (Docker-compatible socket) and a plain
# Docker registry on loopback.
#
# Launched user servers share the host network (see launcher/local_spawner.py),
# so they can reach anything on loopback: the registry therefore requires
# credentials that only the builder, the service and the engine have (a random
# password in $ENGINE_DIR, mode 0600, given to them as DOCKER_CONFIG and
# REGISTRY_AUTH_FILE; never in a user server's environment or filesystem), and
# it refuses deletes. Anonymous requests get 401.
#
#   scripts/local-engine.sh up      # install what is missing, start both, print env
#   scripts/local-engine.sh down    # stop what `up` started (pid files)
#   scripts/local-engine.sh env     # print the export lines only
#   scripts/local-engine.sh configs # write containers.conf/registries.conf only (no services), print env
#   scripts/local-engine.sh status  # exit 0 if both answer
#   eval "$(scripts/local-engine.sh env)"
#   source scripts/local-engine.sh [up|env]   # `up` (default) then export into this shell
#
# Settings (environment):
#   DATA_DIR       default: <repo>/data
#   ENGINE_DIR     state dir, default: $DATA_DIR/engine
#   REGISTRY_PORT  default: 5000 (the registry listens on 127.0.0.1 only)
#   REGISTRY_USER  default: binder-prebuild (its password is made once, in $ENGINE_DIR)
#
# Idempotent: `up` on a running stack only re-checks it and prints the env.

_le_script="${BASH_SOURCE[0]}"

# --- sourced: run in a child bash (keeps this shell's options clean), then export
if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    _le_cmd="${1:-up}"
    if [[ "$_le_cmd" == up ]]; then
        bash "$_le_script" up >/dev/null || return 1
    fi
    eval "$(bash "$_le_script" env)" || return 1
    unset _le_cmd _le_script
    return 0
fi

set -euo pipefail

ROOT="$(cd "$(dirname "$_le_script")/.." && pwd)"
DATA_DIR="${DATA_DIR:-$ROOT/data}"
ENGINE_DIR="${ENGINE_DIR:-$DATA_DIR/engine}"
mkdir -p "$ENGINE_DIR"
ENGINE_DIR="$(cd "$ENGINE_DIR" && pwd)"
REGISTRY_PORT="${REGISTRY_PORT:-5000}"

SOCK="$ENGINE_DIR/podman.sock"
CONTAINERS_CONF_FILE="$ENGINE_DIR/containers.conf"
REGISTRIES_CONF_FILE="$ENGINE_DIR/registries.conf"
REGISTRY_CONFIG="$ENGINE_DIR/registry.yml"
PODMAN_PID="$ENGINE_DIR/podman.pid"
REGISTRY_PID="$ENGINE_DIR/registry.pid"
REGISTRY_USER="${REGISTRY_USER:-binder-prebuild}"
REGISTRY_PASSWORD_FILE="$ENGINE_DIR/registry-password"
REGISTRY_HTPASSWD="$ENGINE_DIR/registry.htpasswd"
AUTH_FILE="$ENGINE_DIR/auth.json"          # containers-auth.json: podman CLI and service
DOCKER_CONFIG_DIR="$ENGINE_DIR/docker"     # config.json: binder-prebuild's registry client

log() { printf 'local-engine: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

print_env() {
    cat <<EOF
export DOCKER_HOST=unix://$SOCK
export CONTAINERS_CONF=$CONTAINERS_CONF_FILE
export CONTAINERS_REGISTRIES_CONF=$REGISTRIES_CONF_FILE
export REGISTRY_URL=http://127.0.0.1:$REGISTRY_PORT
export CONTAINER_ENGINE=podman
export ENGINE_DIR=$ENGINE_DIR
export REGISTRY_AUTH_FILE=$AUTH_FILE
export DOCKER_CONFIG=$DOCKER_CONFIG_DIR
EOF
}

write_credentials() {
    # one random password per ENGINE_DIR; the registry keeps only its bcrypt hash
    # (few rounds: the password is 32 random bytes, and the registry checks it on every request)
    (
        umask 077
        mkdir -p "$DOCKER_CONFIG_DIR"
        [[ -s "$REGISTRY_PASSWORD_FILE" ]] || python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$REGISTRY_PASSWORD_FILE"
        REGISTRY_USER="$REGISTRY_USER" REGISTRY_PORT="$REGISTRY_PORT" python3 -W ignore - \
            "$REGISTRY_PASSWORD_FILE" "$REGISTRY_HTPASSWD" "$AUTH_FILE" "$DOCKER_CONFIG_DIR/config.json" <<'PY'
import base64, crypt, json, os, sys
password_file, htpasswd, auth_file, docker_config = sys.argv[1:]
user, port = os.environ["REGISTRY_USER"], os.environ["REGISTRY_PORT"]
password = open(password_file).read().strip()
def write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", 0o600)
    os.replace(path + ".tmp", path)
write(htpasswd, f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))}\n")
token = base64.b64encode(f"{user}:{password}".encode()).decode()
auths = {"auths": {f"{host}:{port}": {"auth": token} for host in ("127.0.0.1", "localhost")}}
write(auth_file, json.dumps(auths, indent=2) + "\n")
write(docker_config, json.dumps(auths, indent=2) + "\n")
PY
    )
}

ensure_packages() {
    local missing=()
    command -v podman >/dev/null || missing+=(podman)
    command -v runc >/dev/null || missing+=(runc)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
    command -v curl >/dev/null || missing+=(curl)
    ((${#missing[@]})) || return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=600)
    # `apt-get update` only when the lists are empty or the install fails
    if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
        "${apt[@]}" update >&2
    fi
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2; then
        "${apt[@]}" update >&2
        "${apt[@]}" install --no-install-recommends "${missing[@]}" >&2
    fi
    # the Debian package starts its own registry on :5000 through systemd where
    # systemd runs; we run ours explicitly, so that unit must not hold the port
    if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
        systemctl disable --now docker-registry >/dev/null 2>&1 || true
    fi
}

write_configs() {
    cat >"$CONTAINERS_CONF_FILE.tmp" <<'EOF'
# written by scripts/local-engine.sh
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
EOF
    mv "$CONTAINERS_CONF_FILE.tmp" "$CONTAINERS_CONF_FILE"

    cat >"$REGISTRIES_CONF_FILE.tmp" <<EOF
# written by scripts/local-engine.sh
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "127.0.0.1:$REGISTRY_PORT"
insecure = true

[[registry]]
location = "localhost:$REGISTRY_PORT"
insecure = true
EOF
    mv "$REGISTRIES_CONF_FILE.tmp" "$REGISTRIES_CONF_FILE"

    mkdir -p "$ENGINE_DIR/registry"
    cat >"$REGISTRY_CONFIG.tmp" <<EOF
# written by scripts/local-engine.sh
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $ENGINE_DIR/registry
  delete:
    enabled: false
auth:
  htpasswd:
    realm: binder-prebuild
    path: $REGISTRY_HTPASSWD
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
    mv "$REGISTRY_CONFIG.tmp" "$REGISTRY_CONFIG"
}

pid_alive() { # pidfile
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

podman_ok() {
    [[ -S "$SOCK" ]] && [[ "$(curl -s -m 5 --unix-socket "$SOCK" http://d/_ping 2>/dev/null)" == OK ]]
}

registry_ok() {
    [[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' -u "$REGISTRY_USER:$(cat "$REGISTRY_PASSWORD_FILE" 2>/dev/null)" \
        "http://127.0.0.1:$REGISTRY_PORT/v2/" 2>/dev/null)" == 200 ]]
}

registry_closed() { # anonymous requests are refused
    [[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$REGISTRY_PORT/v2/" 2>/dev/null)" == 401 ]]
}

wait_for() { # what check_fn seconds
    local i
    for ((i = 0; i < $3 * 5; i++)); do
        "$2" && return 0
        sleep 0.2
    done
    die "$1 did not answer within $3 s"
}

start_podman() {
    if podman_ok; then
        pid_alive "$PODMAN_PID" || log "podman socket $SOCK answers (not started by us)"
        return 0
    fi
    if pid_alive "$PODMAN_PID"; then
        log "podman service pid $(cat "$PODMAN_PID") does not answer; restarting it"
        kill "$(cat "$PODMAN_PID")" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$SOCK"
    log "starting podman system service on $SOCK"
    CONTAINERS_CONF="$CONTAINERS_CONF_FILE" \
        CONTAINERS_REGISTRIES_CONF="$REGISTRIES_CONF_FILE" \
        REGISTRY_AUTH_FILE="$AUTH_FILE" \
        setsid nohup podman system service --time=0 "unix://$SOCK" \
        </dev/null >>"$ENGINE_DIR/podman.log" 2>&1 &
    echo $! >"$PODMAN_PID"
    wait_for "podman service (see $ENGINE_DIR/podman.log)" podman_ok 30
}

start_registry() {
    if registry_ok && registry_closed; then
        pid_alive "$REGISTRY_PID" || log "a registry already answers on 127.0.0.1:$REGISTRY_PORT (not started by us)"
        return 0
    fi
    if registry_ok && ! pid_alive "$REGISTRY_PID"; then
        die "a registry without authentication answers on 127.0.0.1:$REGISTRY_PORT (not started by us): stop it or pick another REGISTRY_PORT"
    fi
    if pid_alive "$REGISTRY_PID"; then
        kill "$(cat "$REGISTRY_PID")" 2>/dev/null || true
        sleep 1
    fi
    log "starting docker-registry on 127.0.0.1:$REGISTRY_PORT (storage $ENGINE_DIR/registry)"
    setsid nohup docker-registry serve "$REGISTRY_CONFIG" \
        </dev/null >>"$ENGINE_DIR/registry.log" 2>&1 &
    echo $! >"$REGISTRY_PID"
    wait_for "docker-registry (see $ENGINE_DIR/registry.log)" registry_ok 30
}

signal_pidfile() { # name pidfile: ask it to stop (SIGTERM)
    if pid_alive "$2"; then
        log "stopping $1 (pid $(cat "$2"))"
        kill "$(cat "$2")" 2>/dev/null || true
    fi
}

wait_pidfile() { # pidfile: wait up to 10 s for it to end, then SIGKILL
    if [[ -s "$1" ]]; then
        local pid i
        pid="$(cat "$1")"
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

case "${1:-up}" in
up)
    ensure_packages
    write_credentials
    write_configs
    start_podman
    start_registry
    log "up: podman $SOCK, registry http://127.0.0.1:$REGISTRY_PORT"
    print_env
    ;;
down)
    # containers started through the service keep running after it stops;
    # both are asked at once, then waited for (each at most 10 s)
    signal_pidfile "podman service" "$PODMAN_PID"
    signal_pidfile "docker-registry" "$REGISTRY_PID"
    wait_pidfile "$PODMAN_PID"
    rm -f "$SOCK"
    wait_pidfile "$REGISTRY_PID"
    ;;
env)
    print_env
    ;;
configs)
    write_configs
    print_env
    ;;
status)
    rc=0
    if podman_ok; then log "podman: ok ($SOCK)"; else log "podman: down"; rc=1; fi
    if registry_ok; then log "registry: ok (127.0.0.1:$REGISTRY_PORT)"; else log "registry: down"; rc=1; fi
    if registry_ok && ! registry_closed; then log "registry: answers anonymous requests (expected 401)"; rc=1; fi
    exit $rc
    ;;
*)
    echo "usage: $0 [up|down|env|configs|status]" >&2
    exit 2
    ;;
esac
