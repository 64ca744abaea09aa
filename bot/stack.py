"""``binder-prebuild up``: the whole product on one machine, on loopback.

Starts the local engine (Podman API socket + a registry, via
scripts/local-engine.sh) and JupyterHub with configurable-http-proxy, which runs
binder-prebuild as a Hub-managed service (so the Hub hands it its API URL and
token), DockerSpawner on the engine, and the idle culler. Without a container
engine it says so and how to get one, and still serves the setup and status pages.

Stopping (Ctrl-C, SIGTERM, or ``./dev stop`` from another terminal): the Hub stops
its services and servers, then ``up`` stops the engine if it started it, or says
that it keeps running and how to stop it (``./dev stop``) if it was running before.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SCRIPT = ROOT / "scripts" / "local-engine.sh"
PID_FILE = "stack.pid"  # in DATA_DIR: the running ``up``, for ``./dev stop``


def engine_running(env: dict[str, str]) -> bool:
    """The local engine (Podman service and registry) answers."""
    return SCRIPT.exists() and subprocess.run(["bash", str(SCRIPT), "status"], env=env,
                                              capture_output=True).returncode == 0


def _engine_down(env: dict[str, str]) -> str:
    """Stop the Podman service and the registry (those local-engine.sh started); what it said."""
    out = subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True)
    return out.stderr.strip()


def _engine_env(env: dict[str, str]) -> tuple[dict[str, str] | None, str]:
    """Start the local engine; return its environment, or None and why not."""
    script = SCRIPT
    if not script.exists():
        return None, f"{script} not found (run from a checkout of binder-prebuild)"
    up = subprocess.run(["bash", str(script), "up"], env=env, capture_output=True, text=True)
    if up.returncode != 0:
        return None, (up.stderr.strip().splitlines() or ["local-engine.sh up failed"])[-1]
    out = subprocess.run(["bash", str(script), "env"], env=env, capture_output=True, text=True, check=True)
    found: dict[str, str] = {}
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            k, _, v = line[len("export "):].partition("=")
            found[k.strip()] = v.strip().strip("'\"")
    return found, "podman socket and registry up"


def _with_engine(env: dict[str, str], engine: dict[str, str]) -> None:
    """The engine's settings, except a REGISTRY_URL the user set (even empty: no registry, local images)."""
    own_registry = "REGISTRY_URL" in env
    for key, value in engine.items():
        if own_registry and key in ("REGISTRY_URL", "DOCKER_CONFIG", "REGISTRY_AUTH_FILE"):
            continue  # the user's registry, with the user's credentials
        env[key] = value


def main(argv: list[str] | None = None) -> int:
    env = dict(os.environ)
    data_dir = Path(env.get("DATA_DIR", "./data")).resolve()
    env["DATA_DIR"] = str(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = env.setdefault("PORT", "8080")
    env.setdefault("HOST", "127.0.0.1")
    env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    env.setdefault("BUILDER", "local")
    hub_url = env.setdefault("JUPYTERHUB_URL", env.get("JUPYTERHUB_BIND_URL", "http://127.0.0.1:8000"))
    env.setdefault("JUPYTERHUB_BIND_URL", hub_url)
    node_bin = ROOT / ".cache" / "node" / "node_modules" / ".bin"
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), str(node_bin), env.get("PATH", "")])

    engine_before = not env.get("NO_ENGINE") and engine_running(env)
    engine, detail = (None, "skipped (NO_ENGINE=1)") if env.get("NO_ENGINE") else _engine_env(env)
    hub_ok = shutil.which("jupyterhub", path=env["PATH"]) and shutil.which(
        "configurable-http-proxy", path=env["PATH"])
    print("binder-prebuild: starting on loopback", file=sys.stderr)
    if engine is None:
        print(f"  container engine: not available ({detail}).\n"
              "  To build and launch images, install Podman (`apt-get install podman runc docker-registry`)\n"
              "  or run a Docker engine, then start again. Serving the setup and status pages only.",
              file=sys.stderr)
        cmd = [sys.executable, "-m", "bot.cli", "serve"]
    elif not hub_ok:
        print("  JupyterHub or configurable-http-proxy not found: run `./dev install` first.\n"
              "  Serving binder-prebuild without a Hub.", file=sys.stderr)
        _with_engine(env, engine)
        cmd = [sys.executable, "-m", "bot.cli", "serve"]
    else:
        _with_engine(env, engine)
        env.setdefault("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
        config = ROOT / "launcher" / "jupyterhub_config.py"
        cmd = ["jupyterhub", "-f", str(config)]
        registry = env.get("REGISTRY_URL") or "none: images stay in the engine"
        print(f"  container engine: {detail} ({engine.get('DOCKER_HOST')}, registry {registry})", file=sys.stderr)
        print(f"  JupyterHub:       {hub_url}/hub/", file=sys.stderr)
    public = env["PUBLIC_URL"]
    print(f"  setup page:       {public}/   (first run: open the ?token= link the service logs below)",
          file=sys.stderr)
    print(f"  status page:      {public}/   health {public}/health   metrics {public}/metrics", file=sys.stderr)
    print(f"  launch links:     {public}/v2/gh/OWNER/REPO/REF", file=sys.stderr)
    sys.stderr.flush()
    # its own session: a terminal's Ctrl-C reaches only us, and we pass it on once
    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT), start_new_session=True)
    pid_file = data_dir / PID_FILE
    pid_file.write_text(f"{os.getpid()}\n")

    def _forward(signum: int, _frame: object) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    # the terminal closed: the Hub, in its own session, would not hear of it
    signal.signal(signal.SIGHUP, lambda _s, f: _forward(signal.SIGTERM, f))
    try:
        rc = proc.wait()
    finally:
        pid_file.unlink(missing_ok=True)
    if engine is not None:
        print(_on_exit(engine_before, engine, env), file=sys.stderr)
    return rc


def _on_exit(engine_before: bool, engine: dict[str, str], env: dict[str, str]) -> str:
    """Stop the engine this run started; say what keeps running (and how to stop it) otherwise."""
    where = f"Podman service ({engine.get('DOCKER_HOST')}) and registry ({engine.get('REGISTRY_URL')})"
    if engine_before:
        return (f"binder-prebuild: stopped. Still running, as before ./dev serve: the {where}.\n"
                f"  Stop them with: ./dev stop")
    said = _engine_down(env)
    if engine_running(env):
        return (f"binder-prebuild: stopped, but the {where} still answer ({said}).\n"
                f"  Stop them with: ./dev stop")
    return f"binder-prebuild: stopped, with the {where} it started."


def stop(argv: list[str] | None = None) -> int:
    """``./dev stop``: stop a running ``up`` (as Ctrl-C would), then the Podman service and registry."""
    env = dict(os.environ)
    data_dir = Path(env.get("DATA_DIR", "./data")).resolve()
    env["DATA_DIR"] = str(data_dir)
    pid_file = data_dir / PID_FILE
    stopped: list[str] = []
    pid = _stack_pid(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _ in range(600):  # the Hub stops its servers first; bounded at 60 s
            if not _alive(pid):
                break
            time.sleep(0.1)
        stopped.append(f"binder-prebuild up (pid {pid})" if not _alive(pid) else
                       f"nothing: binder-prebuild up (pid {pid}) is still stopping")
    if SCRIPT.exists():
        said = _engine_down(env)
        if said:
            stopped.append(said.replace("local-engine: ", ""))
    print("binder-prebuild stop: " + ("; ".join(stopped) if stopped else "nothing was running"), file=sys.stderr)
    return 0 if not engine_running(env) and (pid is None or not _alive(pid)) else 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stack_pid(pid_file: Path) -> int | None:
    """The pid in DATA_DIR/stack.pid if that process is a running ``binder-prebuild up``."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if "binder-prebuild" in cmdline and " up" in cmdline and _alive(pid) else None
