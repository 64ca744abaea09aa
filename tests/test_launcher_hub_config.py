"""launcher/jupyterhub_config.py, loaded the way JupyterHub loads it (traitlets' config loader)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LOADER = r"""
import json, sys
from traitlets.config.loader import PyFileConfigLoader
cfg = PyFileConfigLoader("jupyterhub_config.py", path=sys.argv[1]).load_config()
jh = cfg.JupyterHub
print(json.dumps({
    "bind_url": jh.bind_url, "spawner_class": jh.spawner_class, "named": jh.allow_named_servers,
    "auth": jh.authenticator_class, "services": jh.services, "roles": jh.load_roles,
    "prefix": cfg.BinderSpawnerMixin.image_prefix, "cmd": cfg.DockerSpawner.cmd, "args": cfg.DockerSpawner.args,
    "client_kwargs": cfg.DockerSpawner.client_kwargs if "client_kwargs" in cfg.DockerSpawner else None,
    "db_url": jh.db_url, "cors": cfg.BinderSpawnerMixin.get("cors_allow_origin"),
}))
"""


def load(tmp_path, **env):
    base = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path / "data")}
    base.update(env)
    out = subprocess.run([sys.executable, "-c", LOADER, str(ROOT / "launcher")], env=base, cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_local_hub_config(tmp_path):
    cfg = load(tmp_path, IMAGE_PREFIX="bp/", REGISTRY_URL="http://127.0.0.1:5000", PORT="8090",
               GITHUB_APP_ID="123", GITHUB_WEBHOOK_SECRET="s3cret", JUPYTERHUB_API_TOKEN="not-forwarded",
               DOCKER_HOST="unix:///run/podman/podman.sock", CULL_TIMEOUT="600",
               PYTHONPATH=str(ROOT))
    assert cfg["bind_url"] == "http://127.0.0.1:8000"
    assert cfg["spawner_class"] == "launcher.local_spawner.HostNetworkBinderSpawner"
    assert cfg["named"] is True and cfg["auth"] == "null"
    assert cfg["prefix"] == "127.0.0.1:5000/bp/"  # the registry host in front, as images are named
    assert cfg["args"] == ["--allow-root"] and cfg["cmd"] == ["jupyterhub-singleuser"]
    assert cfg["client_kwargs"] == {"base_url": "unix:///run/podman/podman.sock"}
    assert cfg["db_url"].startswith("sqlite:///") and str(tmp_path / "data" / "hub") in cfg["db_url"]
    services = {s["name"]: s for s in cfg["services"]}
    bp = services["binder-prebuild"]
    assert bp["command"][-1] == "serve"
    env = bp["environment"]
    assert env["GITHUB_APP_ID"] == "123" and env["PORT"] == "8090" and env["IMAGE_PREFIX"] == "bp/"
    assert env["JUPYTERHUB_URL"] == "http://127.0.0.1:8000"
    assert "JUPYTERHUB_API_TOKEN" not in env  # the Hub hands the service its own token
    culler = services["idle-culler"]["command"]
    assert culler[1:3] == ["-m", "launcher.idle_culler"]  # jupyterhub_idle_culler, stopping on SIGINT
    assert "--timeout=600" in culler and "--cull-users=true" in culler
    roles = {r["name"]: r for r in cfg["roles"]}
    from launcher.spawner import SERVICE_SCOPES

    assert roles["binder-prebuild"]["scopes"] == SERVICE_SCOPES
    assert roles["binder-prebuild"]["services"] == ["binder-prebuild"]
    assert {"list:users", "read:servers", "delete:servers"} <= set(roles["idle-culler"]["scopes"])


def test_cull_timeout_and_bind_url_are_settable(tmp_path):
    cfg = load(tmp_path, CULL_TIMEOUT="30", JUPYTERHUB_BIND_URL="http://127.0.0.1:8765", PYTHONPATH=str(ROOT))
    culler = next(s for s in cfg["services"] if s["name"] == "idle-culler")["command"]
    assert "--timeout=30" in culler
    assert cfg["bind_url"] == "http://127.0.0.1:8765"
    bp = next(s for s in cfg["services"] if s["name"] == "binder-prebuild")
    assert bp["environment"]["JUPYTERHUB_URL"] == "http://127.0.0.1:8765"


def test_cors_origin_reaches_the_service_and_the_spawner(tmp_path):
    cfg = load(tmp_path, CORS_ALLOW_ORIGIN="https://book.example.org", PYTHONPATH=str(ROOT))
    bp = {s["name"]: s for s in cfg["services"]}["binder-prebuild"]
    assert bp["environment"]["CORS_ALLOW_ORIGIN"] == "https://book.example.org"
    assert cfg["cors"] == "https://book.example.org"
    assert load(tmp_path, PYTHONPATH=str(ROOT))["cors"] == ""
