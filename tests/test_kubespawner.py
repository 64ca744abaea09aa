"""BinderSpawnerMixin in front of the real KubeSpawner (jupyterhub-kubespawner), as Z2JH runs it.

No cluster is needed for the pod KubeSpawner would create: ``get_pod_manifest()`` builds it from
the launch's ``user_options`` (after the mixin took the image and the token from them). The
KubeSpawner's API client points at the shared fake Kubernetes API (tests/fake_k8s.py) through a
kubeconfig, as it would point at a cluster; the Pod is checked against the Kubernetes schema.
"""
from __future__ import annotations

import pytest
from kubernetes_asyncio.client import ApiClient
from tornado.web import HTTPError

from launcher.spawner import BinderSpawnerMixin, origin_args
from tests.fake_k8s_validation import validate

PREFIX = "registry.example.org/binder-prebuild/"
IMAGE = PREFIX + "octo-2ddemo-3d037c:" + "a" * 40
TOKEN = "Tok3n-" + "x" * 40
OPTIONS = {
    "image": IMAGE, "token": TOKEN, "repo_url": "https://github.com/octo/demo", "ref": "a" * 40,
    "binder_ref_url": "https://github.com/octo/demo/tree/" + "a" * 40,
    "binder_launch_host": "https://binder-prebuild.example.org/",
    "binder_request": "v2/gh/octo/demo/main", "binder_persistent_request": "v2/gh/octo/demo/" + "a" * 40,
}


@pytest.fixture
async def spawner_class(fake_k8s, tmp_path, monkeypatch):
    from kubespawner import KubeSpawner

    from kubernetes_asyncio.config import kube_config

    # KUBECONFIG is read when kubernetes_asyncio is imported: point its default at the fake
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", fake_k8s.kubeconfig(tmp_path / "kubeconfig"))

    class BinderKubeSpawner(BinderSpawnerMixin, KubeSpawner):
        """What k8s/jupyterhub-values.yaml's extraConfig defines."""

    def make(**config):
        # _mock: KubeSpawner's own stand-ins for the Hub and user objects it is normally given
        return BinderKubeSpawner(_mock=True, k8s_api_host=fake_k8s.url, image_prefix=PREFIX,
                                 cmd=["jupyterhub-singleuser"], **config)

    return make


def env_of(pod: dict) -> dict[str, str]:
    container = pod["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


async def test_pod_manifest_for_a_launch(spawner_class):
    spawner = spawner_class(cors_allow_origin="https://book.example.org")
    spawner.user_options = dict(OPTIONS)
    spawner.apply_binder_options()
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())

    assert validate(pod, "Pod") == []
    container = pod["spec"]["containers"][0]
    assert container["image"] == IMAGE
    env = env_of(pod)
    assert env["JUPYTERHUB_ALLOW_TOKEN_IN_URL"] == "1"  # the token in the ready URL is accepted
    assert env["JUPYTERHUB_API_TOKEN"] == TOKEN  # the launch token is the server's token
    assert env["BINDER_REPO_URL"] == OPTIONS["repo_url"]
    assert env["BINDER_REF_URL"] == OPTIONS["binder_ref_url"]
    assert env["BINDER_LAUNCH_HOST"] == OPTIONS["binder_launch_host"]
    assert env["BINDER_REQUEST"] == OPTIONS["binder_request"]
    assert env["BINDER_PERSISTENT_REQUEST"] == OPTIONS["binder_persistent_request"]
    args = container["args"]
    assert args[0] == "jupyterhub-singleuser"
    assert "--ServerApp.allow_origin=https://book.example.org" in args
    # the token is never an argument or an annotation (those are visible to anyone who can list pods)
    assert not any(TOKEN in a for a in args)
    assert TOKEN not in str(pod["metadata"].get("annotations") or {})


async def test_cors_origin_defaults_from_the_hub_environment(spawner_class, monkeypatch):
    monkeypatch.setenv("CORS_ALLOW_ORIGIN", "*")
    spawner = spawner_class()
    assert spawner.cors_allow_origin == "*"
    spawner.user_options = dict(OPTIONS)
    spawner.apply_binder_options()
    pod = ApiClient().sanitize_for_serialization(await spawner.get_pod_manifest())
    args = pod["spec"]["containers"][0]["args"]
    assert "--ServerApp.allow_origin=*" in args and "--ServerApp.allow_origin_pat=.*" in args
    monkeypatch.delenv("CORS_ALLOW_ORIGIN")
    plain = spawner_class()
    plain.user_options = dict(OPTIONS)
    plain.apply_binder_options()
    pod = ApiClient().sanitize_for_serialization(await plain.get_pod_manifest())
    assert not any("allow_origin" in a for a in pod["spec"]["containers"][0]["args"])


@pytest.mark.parametrize("image", ["docker.io/library/python:3.12", PREFIX + "../evil:1",
                                   "evil.example/" + PREFIX + "x:1"])
async def test_a_foreign_image_is_refused_before_any_pod(spawner_class, fake_k8s, image):
    spawner = spawner_class()
    spawner.user_options = dict(OPTIONS, image=image)
    with pytest.raises(HTTPError) as e:
        await spawner.start()
    assert e.value.status_code == 400 and "not allowed" in e.value.log_message
    assert not [r for r in fake_k8s.requests if r[0] != "GET"]  # nothing was created


def test_origin_args():
    assert origin_args("") == []
    assert origin_args("https://a.example") == ["--ServerApp.allow_origin=https://a.example"]
    assert origin_args("*") == ["--ServerApp.allow_origin=*", "--ServerApp.allow_origin_pat=.*"]
