"""``binder-prebuild up``: the whole product on one machine, on loopback.

Starts the local engine (Podman API socket + a registry, via
scripts/local-engine.sh) and JupyterHub with configurable-http-proxy, which runs
binder-prebuild as a Hub-managed service (so the Hub hands it its API URL and
token), DockerSpawner on the engine, and the idle culler. Without a container
engine it says so and how to get one, and still serves the setup and status pages.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _engine_env(env: dict[str, str]) -> tuple[dict[str, str] | None, str]:
    """Start the local engine; return its environment, or None and why not."""
    script = ROOT / "scripts" / "local-engine.sh"
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
    proc = subprocess.Popen(cmd, env=env, cwd=str(ROOT))

    def _forward(signum: int, _frame: object) -> None:
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, _forward)
    signal.signal(signal.SIGINT, _forward)
    return proc.wait()
