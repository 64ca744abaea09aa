"""JupyterHub for the embedded stack (one machine): ``jupyterhub -f launcher/jupyterhub_config.py``.

* binder-prebuild runs as a Hub-managed service (``binder-prebuild serve``), so the
  Hub hands it JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN; its role has only
  the scopes it needs (launcher.spawner.SERVICE_SCOPES).
* Servers are containers on the local engine (DockerSpawner through DOCKER_HOST,
  e.g. Podman's Docker-compatible socket), on the host network, one loopback
  port each, started only from images under the image prefix.
* Named servers are enabled; jupyterhub-idle-culler stops servers idle for
  CULL_TIMEOUT seconds (default 600) and removes the temporary users.
* Nobody logs in: users are created by the launcher (``null`` authenticator).

Environment (all optional): JUPYTERHUB_BIND_URL (http://127.0.0.1:8000),
JUPYTERHUB_HUB_PORT (8081), JUPYTERHUB_PROXY_API_PORT (8001), HUB_DATA_DIR
($DATA_DIR/hub), CULL_TIMEOUT (600), CULL_EVERY (60), BINDER_PREBUILD_COMMAND
("binder-prebuild serve"), SINGLEUSER_CMD ("jupyterhub-singleuser"), plus
binder-prebuild's own settings (PORT, PUBLIC_URL, IMAGE_PREFIX, REGISTRY_URL, ...),
which are passed on to the service.
"""
import os
import shlex
import shutil
import sys
from pathlib import Path

from launcher.spawner import SERVICE_SCOPES, prefix_from_env

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)

env = os.environ
bind_url = env.get("JUPYTERHUB_BIND_URL", "http://127.0.0.1:8000")
data_dir = Path(env.get("HUB_DATA_DIR") or Path(env.get("DATA_DIR", "./data")) / "hub").resolve()
data_dir.mkdir(parents=True, exist_ok=True)

c.JupyterHub.bind_url = bind_url
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env.get("JUPYTERHUB_HUB_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env.get('JUPYTERHUB_PROXY_API_PORT', '8001')}"
c.JupyterHub.db_url = f"sqlite:///{data_dir / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(data_dir / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(data_dir / "jupyterhub-proxy.pid")
c.JupyterHub.authenticator_class = "null"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.cleanup_servers = True

# -- servers: containers from our images only -------------------------------------------
c.JupyterHub.spawner_class = "launcher.local_spawner.HostNetworkBinderSpawner"
c.BinderSpawnerMixin.image_prefix = prefix_from_env()
# the origin binder-prebuild's launch API allows (CORS_ALLOW_ORIGIN) may also use the servers it starts
c.BinderSpawnerMixin.cors_allow_origin = env.get("CORS_ALLOW_ORIGIN", "")
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "ifnotpresent"
c.DockerSpawner.cmd = shlex.split(env.get("SINGLEUSER_CMD", "jupyterhub-singleuser"))
c.DockerSpawner.args = ["--allow-root"]  # the local engine runs the image's processes as root
if env.get("DOCKER_HOST"):
    c.DockerSpawner.client_kwargs = {"base_url": env["DOCKER_HOST"]}
c.Spawner.start_timeout = int(env.get("SPAWN_TIMEOUT", "300"))
c.Spawner.http_timeout = 120

# -- services: binder-prebuild and the idle culler ---------------------------------------
# settings binder-prebuild reads, plus what the local engine needs; never the Hub's own token
_FORWARD_PREFIXES = ("GITHUB_", "REGISTRY_", "IMAGE_", "BUILD", "KUBE_", "REPO2DOCKER_", "CONTAINER",
                     "DOCKER_", "LAUNCH_", "MAX_", "BINDER_PREBUILD_")
_FORWARD = {"PUBLIC_URL", "CORS_ALLOW_ORIGIN", "DATA_DIR", "HOST", "PORT", "PATH", "HOME", "LANG", "XDG_RUNTIME_DIR",
            "CONTAINERS_CONF", "CONTAINERS_REGISTRIES_CONF", "ENGINE_DIR", "PYTHONPATH"}
service_env = {
    k: v for k, v in env.items()
    if (k in _FORWARD or k.startswith(_FORWARD_PREFIXES)) and not k.startswith("JUPYTERHUB_")
}
service_env["JUPYTERHUB_URL"] = env.get("JUPYTERHUB_URL", bind_url)

command = shlex.split(env.get("BINDER_PREBUILD_COMMAND", "binder-prebuild serve"))
if command and not shutil.which(command[0]):
    # not on PATH: the script next to this Python (same venv), else the module itself
    beside = Path(sys.executable).parent / command[0]
    command = [str(beside), *command[1:]] if beside.exists() else \
        [sys.executable, "-c", "from bot.cli import main; main()", *command[1:]]

cull_timeout = int(env.get("CULL_TIMEOUT", "600"))
c.JupyterHub.services = [
    {"name": "binder-prebuild", "command": command, "environment": service_env},
    {
        "name": "idle-culler",
        # launcher.idle_culler: the culler, ending at once on the Hub's SIGINT (see there)
        "command": [sys.executable, "-m", "launcher.idle_culler", f"--timeout={cull_timeout}",
                    f"--cull-every={env.get('CULL_EVERY', '60')}",
                    # jupyterhub-idle-culler 2 (traitlets) needs a value for its flags; 1.x accepts it too
                    "--cull-users=true", "--remove-named-servers=true"],
    },
]
c.JupyterHub.load_roles = [
    {"name": "binder-prebuild", "scopes": SERVICE_SCOPES, "services": ["binder-prebuild"]},
    {
        "name": "idle-culler",
        # list and read servers and activity, stop servers; delete the temporary users (--cull-users)
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers", "admin:users"],
        "services": ["idle-culler"],
    },
]

print(f"binder-prebuild hub config: hub at {bind_url}, images under {prefix_from_env()!r}, "
      f"idle servers culled after {cull_timeout} s", file=sys.stderr)
