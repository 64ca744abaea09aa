"""The build pod and clone Secret as data: args, labels, annotations, secrets kept out."""
from __future__ import annotations

import json
import re

import kubernetes_validate
import pytest
import yaml

from bot.builders import k8s_objects as objs
from bot.config import Settings
from bot.model import BuildJob, BuildRequest
from bot.store.builds import build_id

SHA = "0123456789abcdef0123456789abcdef01234567"
IMAGE = "registry.example.org/binder-prebuild/owner-2drepo-abcdef:" + SHA
TOKEN = "ghs_ThisIsASecretInstallationToken123"
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def job(**kw) -> BuildJob:
    req = BuildRequest(
        owner=kw.pop("owner", "owner"), repo=kw.pop("repo", "repo"), sha=kw.pop("sha", SHA),
        clone_url=kw.pop("clone_url", "https://ghe.example.com/owner/repo.git"),
        installation_id=kw.pop("installation_id", 4242), private=kw.pop("private", False),
        subdir=kw.pop("subdir", None))
    return BuildJob(build_id=build_id(req.owner, req.repo, req.sha, 1), request=req, image=kw.pop("image", IMAGE),
                    cache_from=kw.pop("cache_from", None), clone_token=kw.pop("clone_token", None))


def settings(**kw) -> Settings:
    return Settings(builder="kubernetes", kube_namespace="builds", **kw)


def validate(obj: dict) -> None:
    kubernetes_validate.validate(obj, "1.30", strict=True)


def container(pod: dict) -> dict:
    (c,) = pod["spec"]["containers"]
    return c


def env(pod: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(pod)["env"]}


def test_args_are_repo2docker_flags_with_the_clone_url_last():
    pod = objs.build_pod_for_job(job(), settings())
    assert container(pod)["args"] == [
        "jupyter-repo2docker", "--ref", SHA, "--image-name", IMAGE, "--no-run", "--push", "--json-logs",
        "--user-id", "1000", "--user-name", "jovyan", "https://ghe.example.com/owner/repo.git",
    ]
    assert container(pod)["image"] == Settings().repo2docker_image
    assert re.fullmatch(r"quay\.io/jupyterhub/repo2docker:\d{4}\.\d{2}\.\d+", Settings().repo2docker_image)
    validate(pod)


def test_cache_from_and_subdir_come_before_the_url():
    cache = "registry.example.org/binder-prebuild/owner-2drepo-abcdef:" + "f" * 40
    pod = objs.build_pod_for_job(job(cache_from=cache, subdir="/binder/env/"), settings())
    args = container(pod)["args"]
    assert args[-5:] == ["--cache-from", cache, "--subdir", "binder/env", "https://ghe.example.com/owner/repo.git"]
    validate(pod)


def test_labels_annotations_name_and_limits():
    j = job()
    pod = objs.build_pod_for_job(j, settings(build_timeout=900, build_cpu_limit="3", build_memory_limit="6Gi"))
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["name"] == f"build-{j.build_id}" == objs.pod_name(j.build_id)
    assert meta["namespace"] == "builds"
    assert meta["labels"]["app.kubernetes.io/name"] == "binder-prebuild"
    assert meta["labels"]["app.kubernetes.io/component"] == "build"
    assert meta["labels"][objs.LABEL_SHA] == SHA[:12]
    assert meta["labels"][objs.LABEL_REPO] == "owner_2Frepo"
    assert meta["annotations"] == {
        objs.ANN_REPO: "owner/repo", objs.ANN_SHA: SHA, objs.ANN_IMAGE: IMAGE, objs.ANN_BUILD_ID: j.build_id,
        objs.ANN_TIMEOUT: "900", objs.ANN_INSTALLATION: "4242",
    }
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["restartPolicy"] == "Never"
    assert spec["automountServiceAccountToken"] is False
    assert container(pod)["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "3", "memory": "6Gi"}}
    assert container(pod)["securityContext"]["allowPrivilegeEscalation"] is False
    validate(pod)


def test_the_same_build_id_gives_the_same_pod():
    assert objs.build_pod_for_job(job(), settings()) == objs.build_pod_for_job(job(), settings())
    assert objs.pod_name(build_id("a", "b", SHA, 1)) != objs.pod_name(build_id("a", "b", SHA, 2))


@pytest.mark.parametrize("owner,repo", [
    ("binder-examples", "requirements"),
    ("Some-Org", "Repo_With.Dots_and_UNDERSCORES"),
    ("o", ".github"),
    ("a-very-long-organisation-name-that-goes-on", "and-an-even-longer-repository-name-too-long-for-labels"),
    ("x", "trailing-"),
])
def test_label_values_are_always_valid(owner, repo):
    pod = objs.build_pod_for_job(job(owner=owner, repo=repo), settings())
    for key, value in pod["metadata"]["labels"].items():
        assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)
    assert pod["metadata"]["annotations"][objs.ANN_REPO] == f"{owner}/{repo}"
    validate(pod)


def test_long_label_values_keep_different_inputs_apart():
    a = objs.label_value("org/" + "x" * 80 + "a")
    b = objs.label_value("org/" + "x" * 80 + "b")
    assert a != b and len(a) <= 63 and len(b) <= 63


def test_private_repo_token_is_only_referenced_never_embedded():
    j = job(private=True, clone_token=TOKEN)
    pod = objs.build_pod_for_job(j, settings())
    text = json.dumps(pod)
    assert TOKEN not in text
    e = env(pod)
    assert e[objs.TOKEN_ENV]["valueFrom"]["secretKeyRef"] == {
        "name": objs.CLONE_TOKENS_SECRET, "key": objs.clone_token_key(j.build_id)}
    # the credential helper is scoped to the clone URL's origin and reads the variable
    assert e["GIT_CONFIG_KEY_0"]["value"] == "credential.https://ghe.example.com.helper"
    assert f"${objs.TOKEN_ENV}" in e["GIT_CONFIG_VALUE_0"]["value"]
    assert "$(" not in e["GIT_CONFIG_VALUE_0"]["value"]  # nothing Kubernetes would expand
    assert e["GIT_TERMINAL_PROMPT"]["value"] == "0"
    validate(pod)


def test_public_repo_has_no_credentials():
    pod = objs.build_pod_for_job(job(), settings())
    assert objs.TOKEN_ENV not in env(pod) and "GIT_CONFIG_COUNT" not in env(pod)


def test_clone_tokens_live_in_one_named_secret_one_key_per_build():
    secret = objs.make_clone_tokens_secret("builds")
    assert secret["metadata"]["name"] == objs.CLONE_TOKENS_SECRET and "data" not in secret
    validate(secret)
    assert objs.add_clone_token("x", TOKEN) == {"stringData": {"build-x": TOKEN}}
    assert objs.remove_clone_tokens(["build-x", "build-y"]) == {"data": {"build-x": None, "build-y": None}}


def test_engine_socket_host_path_and_docker_host():
    pod = objs.build_pod_for_job(job(), settings(build_socket="/run/dind/docker.sock"))
    assert env(pod)["DOCKER_HOST"]["value"] == "unix:///run/dind/docker.sock"
    assert pod["spec"]["volumes"][0]["hostPath"] == {"path": "/run/dind/docker.sock", "type": "Socket"}
    assert container(pod)["volumeMounts"][0]["mountPath"] == "/run/dind/docker.sock"
    validate(pod)


def test_engine_over_tcp_mounts_nothing():
    pod = objs.build_pod_for_job(job(), settings(build_socket="tcp://dind.builds.svc:2375"))
    assert env(pod)["DOCKER_HOST"]["value"] == "tcp://dind.builds.svc:2375"
    assert "volumes" not in pod["spec"] and "volumeMounts" not in container(pod)
    validate(pod)


def test_push_credentials_secret_is_mounted_read_only():
    pod = objs.build_pod_for_job(job(), settings(build_push_secret="registry-push"))
    vol = [v for v in pod["spec"]["volumes"] if "secret" in v][0]
    assert vol["secret"]["secretName"] == "registry-push"
    mount = [m for m in container(pod)["volumeMounts"] if m["name"] == vol["name"]][0]
    assert mount["mountPath"] == "/root/.docker/config.json" and mount["readOnly"] is True
    validate(pod)


@pytest.mark.parametrize("field,value", [
    ("sha", "--debug"), ("sha", "main"), ("clone_url", "--editable"), ("subdir", "--run"), ("image", "-x"),
])
def test_values_that_would_be_read_as_options_are_refused(field, value):
    with pytest.raises(ValueError):
        objs.build_pod_for_job(job(**{field: value}), settings())


def test_build_pod_yaml_is_a_valid_pod_with_the_github_fallback_url():
    s = settings(registry_url="https://registry.example.org", build_push_secret="push")
    text = objs.build_pod_yaml(s, "binder-examples", "requirements", SHA)
    pod = yaml.safe_load(text)
    validate(pod)
    assert container(pod)["args"][-1] == "https://github.com/binder-examples/requirements"
    assert container(pod)["args"][4] == ("registry.example.org/binder-prebuild/"
                                         f"binder-2dexamples-2drequirements-55ab5c:{SHA}")
    assert pod["metadata"]["name"] == objs.pod_name(build_id("binder-examples", "requirements", SHA, 1))
