"""DockerSpawner + BinderSpawnerMixin for one machine: containers on the host network.

Podman's Docker-compatible API runs the containers (DESIGN.md, "What runs here"):
docker-py refuses port bindings on the host network, so every server gets its
own loopback port, listens on 127.0.0.1 only, and ``get_ip_and_port`` says so.
"""
from __future__ import annotations

from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port
from traitlets import default

from launcher.spawner import BinderSpawnerMixin


class HostNetworkBinderSpawner(BinderSpawnerMixin, DockerSpawner):
    @default("network_name")
    def _default_network(self) -> str:
        return "host"

    @default("use_internal_ip")
    def _default_internal_ip(self) -> bool:
        return True

    @default("ip")
    def _default_ip(self) -> str:
        return "127.0.0.1"

    async def start(self):  # type: ignore[override]
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self) -> tuple[str, int]:
        return "127.0.0.1", self.port
