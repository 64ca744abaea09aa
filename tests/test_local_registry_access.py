"""One machine: the registry of scripts/local-engine.sh is closed to launched user servers.

User servers run on the host network (launcher/local_spawner.py), so they can reach
the registry on loopback: it must refuse anyone without the credentials that only
the builder, the service and the engine hold, and it must refuse deletes.
"""
from __future__ import annotations

import json
import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ZERO_DIGEST = "sha256:" + "0" * 64


def call(url: str, method: str = "GET", authorization: str | None = None) -> int:
    headers = {"Authorization": authorization} if authorization else {}
    req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method in ("POST", "PUT") else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


@pytest.mark.parametrize("method,path", [
    ("GET", "/v2/"),
    ("GET", "/v2/_catalog"),
    ("POST", "/v2/binder-prebuild/evil/blobs/uploads/"),  # the first step of a push
    ("DELETE", f"/v2/binder-prebuild/any/manifests/{ZERO_DIGEST}"),
])
def test_anonymous_requests_are_refused(local_engine, method, path):
    assert call(local_engine.registry_url + path, method) == 401


def test_deletes_are_refused_even_with_credentials(local_engine):
    auth = local_engine.registry_authorization
    assert call(local_engine.registry_url + "/v2/", authorization=auth) == 200
    status = call(f"{local_engine.registry_url}/v2/binder-prebuild/any/manifests/{ZERO_DIGEST}", "DELETE", auth)
    assert status == 405  # storage.delete.enabled: false (with deletes on, this is 404 or 202)


def test_the_credentials_are_files_only_their_owner_reads(local_engine):
    for key in ("DOCKER_CONFIG", "REGISTRY_AUTH_FILE"):
        path = Path(local_engine.env[key])
        path = path / "config.json" if path.is_dir() else path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert local_engine.registry_host in json.loads(path.read_text())["auths"]
    password = (local_engine.engine_dir / "registry-password").read_text().strip()
    assert len(password) >= 32
    assert stat.S_IMODE((local_engine.engine_dir / "registry-password").stat().st_mode) == 0o600
    assert all(password not in value for key, value in local_engine.env.items())  # never an env value


def test_a_container_on_the_host_network_cannot_use_the_registry(local_engine, base_image):
    """What a launched user server is: a container of the engine, on the host network, without the files."""
    probe = (
        "import os, urllib.request, urllib.error\n"
        f"req = urllib.request.Request('{local_engine.registry_url}/v2/_catalog')\n"
        "try:\n    print(urllib.request.urlopen(req, timeout=10).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)\n"
        "print(sorted(k for k in os.environ if 'REGISTRY' in k or 'DOCKER_CONFIG' in k))\n"
    )
    proc = local_engine.podman("run", "--rm", "--network", "host", base_image, "python3", "-c", probe, timeout=300)
    assert proc.returncode == 0, proc.stderr
    status, env_keys = proc.stdout.strip().splitlines()
    assert status == "401" and env_keys == "[]"
