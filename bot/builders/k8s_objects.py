"""Kubernetes objects for build pods, as plain dicts (pure; KubeSpawner objects.py style).

Nothing here talks to the API: the builder submits what these return, the
``build-pod`` command prints it, and tests validate it against the real schema.
Secrets never appear in a pod: a private repository's clone token lives in one
key of the one Secret the service may touch (``CLONE_TOKENS_SECRET``, created by
k8s/ so the Role can name it in ``resourceNames``), which the pod reads through
``secretKeyRef``, and git gets it from a credential helper scoped to the clone
URL's host.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
import string
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import escapism
import yaml

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.model import BuildJob

APP_NAME = "binder-prebuild"
BUILD_COMPONENT = "build"
CLONE_TOKENS_SECRET = "binder-prebuild-clone-tokens"
"""The one Secret the service reads and writes: one key per running private build."""
LABEL_NAME = "app.kubernetes.io/name"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_REPO = "binder-prebuild/repo"
LABEL_SHA = "binder-prebuild/sha"
LABEL_BUILD_ID = "binder-prebuild/build-id"
ANN_REPO = "binder-prebuild/repo"
ANN_SHA = "binder-prebuild/sha"
ANN_IMAGE = "binder-prebuild/image"
ANN_INSTALLATION = "binder-prebuild/installation-id"
ANN_BUILD_ID = "binder-prebuild/build-id"
ANN_TIMEOUT = "binder-prebuild/build-timeout"
BUILD_SELECTOR = f"{LABEL_NAME}={APP_NAME},{LABEL_COMPONENT}={BUILD_COMPONENT}"
CONTAINER_NAME = "builder"
TOKEN_ENV = "BINDER_PREBUILD_GIT_TOKEN"
PUSH_CONFIG_MOUNT = "/root/.docker/config.json"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
_LABEL_SAFE = set(string.ascii_letters + string.digits + "-.")


@dataclasses.dataclass(frozen=True)
class Resources:
    cpu_request: str = "500m"
    cpu_limit: str = "2"
    memory_request: str = "1Gi"
    memory_limit: str = "4Gi"

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.cpu_request, "memory": self.memory_request},
            "limits": {"cpu": self.cpu_limit, "memory": self.memory_limit},
        }


def label_value(text: str) -> str:
    """A valid label value for any text: escaped, at most 63 characters, alphanumeric at both ends.

    Short, already-valid text is kept (escaped); anything else is cut and gets a
    hash of the original, so different inputs keep different values.
    """
    escaped = escapism.escape(text, safe=_LABEL_SAFE, escape_char="_")
    if len(escaped) <= 63 and _LABEL_VALUE.match(escaped):
        return escaped
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    core = escaped[: 63 - 9].strip("-_.")
    return f"{core}-{digest}" if core else digest


def pod_name(build_id: str) -> str:
    """Deterministic from the build id, so a 409 on create means "already building"."""
    name = f"build-{build_id}".lower()
    if len(name) > 63 or not _DNS_LABEL.match(name):
        raise ValueError(f"build id {build_id!r} does not make a valid pod name")
    return name


def clone_token_key(build_id: str) -> str:
    """The build's key in CLONE_TOKENS_SECRET (its pod name: a valid Secret key, unique per build)."""
    return pod_name(build_id)


def build_labels(owner: str, repo: str, sha: str, build_id: str) -> dict[str, str]:
    return {
        LABEL_NAME: APP_NAME,
        LABEL_COMPONENT: BUILD_COMPONENT,
        LABEL_REPO: label_value(f"{owner}/{repo}"),
        LABEL_SHA: label_value(sha[:12].lower()),
        LABEL_BUILD_ID: label_value(build_id),
    }


def _check_arg(what: str, value: str) -> str:
    """Values placed in repo2docker's argv must not be read as options."""
    if not value or value.startswith("-") or any(c in value for c in "\n\r\0"):
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def repo2docker_args(
    *, sha: str, image: str, repo_url: str, cache_from: str | None = None, subdir: str | None = None,
) -> list[str]:
    """repo2docker's command line (the image's entrypoint runs it); the repository URL is last."""
    if not _SHA.match(sha or ""):
        raise ValueError(f"not a commit sha: {sha!r}")
    args = [
        "jupyter-repo2docker",
        "--ref", sha,
        "--image-name", _check_arg("image name", image),
        "--no-run",
        "--push",
        "--json-logs",
        "--user-id", "1000",
        "--user-name", "jovyan",
    ]
    if cache_from:
        args += ["--cache-from", _check_arg("cache-from image", cache_from)]
    if subdir:
        args += ["--subdir", _check_arg("subdir", subdir.strip("/"))]
    args.append(_check_arg("repository URL", repo_url))
    return args


def _credential_env(repo_url: str, token_key: str) -> list[dict[str, Any]]:
    """git reads the token from the environment, for the clone URL's origin only.

    The helper is git configuration (``GIT_CONFIG_*``, git >= 2.31), so nothing
    depends on the image's entrypoint; the token itself comes from the Secret.
    """
    parts = urlsplit(repo_url)
    origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}" if parts.scheme and parts.netloc else repo_url
    helper = (
        '!f() { test "$1" = get || return 0; echo username=x-access-token; '
        f'echo "password=${TOKEN_ENV}"; }}; f'
    )
    return [
        {"name": TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": CLONE_TOKENS_SECRET, "key": token_key}}},
        {"name": "GIT_CONFIG_COUNT", "value": "1"},
        {"name": "GIT_CONFIG_KEY_0", "value": f"credential.{origin}.helper"},
        {"name": "GIT_CONFIG_VALUE_0", "value": helper},
    ]


def make_build_pod(
    *,
    name: str,
    namespace: str,
    owner: str,
    repo: str,
    sha: str,
    image: str,
    repo_url: str,
    build_id: str,
    builder_image: str,
    build_timeout: int = 3600,
    installation_id: int | None = None,
    cache_from: str | None = None,
    subdir: str | None = None,
    build_socket: str = "/var/run/docker.sock",
    resources: Resources | None = None,
    clone_token_key: str | None = None,
    push_secret: str | None = None,
) -> dict[str, Any]:
    """The repo2docker build pod for one image.

    ``build_socket`` is the container engine: a host path to a Docker (or DinD,
    or Podman) socket, mounted at the same path, or a ``tcp://`` address.
    ``clone_token_key`` is the key of CLONE_TOKENS_SECRET holding a clone token (private repos);
    ``push_secret`` a Secret with a docker ``config.json`` for the push.
    """
    if build_timeout <= 0:
        raise ValueError("build_timeout must be positive")
    args = repo2docker_args(sha=sha, image=image, repo_url=repo_url, cache_from=cache_from, subdir=subdir)
    env: list[dict[str, Any]] = [{"name": "GIT_TERMINAL_PROMPT", "value": "0"}]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    if "://" in build_socket and not build_socket.startswith("unix://"):
        env.append({"name": "DOCKER_HOST", "value": build_socket})
    else:
        path = build_socket.removeprefix("unix://")
        if not path.startswith("/"):
            raise ValueError(f"build socket must be an absolute path or a URL: {build_socket!r}")
        env.append({"name": "DOCKER_HOST", "value": f"unix://{path}"})
        volumes.append({"name": "engine-socket", "hostPath": {"path": path, "type": "Socket"}})
        mounts.append({"name": "engine-socket", "mountPath": path})
    if clone_token_key:
        env += _credential_env(repo_url, clone_token_key)
    if push_secret:
        volumes.append({"name": "push-config", "secret": {
            "secretName": push_secret, "items": [{"key": "config.json", "path": "config.json"}]}})
        mounts.append({"name": "push-config", "mountPath": PUSH_CONFIG_MOUNT, "subPath": "config.json",
                       "readOnly": True})

    annotations = {
        ANN_REPO: f"{owner}/{repo}",
        ANN_SHA: sha,
        ANN_IMAGE: image,
        ANN_BUILD_ID: build_id,
        ANN_TIMEOUT: str(build_timeout),
    }
    if installation_id is not None:
        annotations[ANN_INSTALLATION] = str(installation_id)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": builder_image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": env,
        "resources": (resources or Resources()).as_dict(),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if mounts:
        container["volumeMounts"] = mounts
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "activeDeadlineSeconds": int(build_timeout),
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 30,
        "containers": [container],
    }
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": build_labels(owner, repo, sha, build_id),
            "annotations": annotations,
        },
        "spec": spec,
    }


def make_clone_tokens_secret(namespace: str) -> dict[str, Any]:
    """CLONE_TOKENS_SECRET as k8s/ creates it: empty (k8s/base/secret-clone-tokens.yaml)."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": CLONE_TOKENS_SECRET, "namespace": namespace,
                         "labels": {LABEL_NAME: APP_NAME, LABEL_COMPONENT: "build-credentials"}}}


def add_clone_token(build_id: str, token: str) -> dict[str, Any]:
    """The merge patch that puts one build's token into CLONE_TOKENS_SECRET."""
    return {"stringData": {clone_token_key(build_id): token}}


def remove_clone_tokens(keys: "list[str]") -> dict[str, Any]:
    """The merge patch that removes keys from CLONE_TOKENS_SECRET (null deletes a key)."""
    return {"data": {k: None for k in keys}}


def resources_from_settings(settings: "Settings") -> Resources:
    return Resources(settings.build_cpu_request, settings.build_cpu_limit,
                     settings.build_memory_request, settings.build_memory_limit)


def build_pod_for_job(job: "BuildJob", settings: "Settings", *, with_clone_token: bool | None = None) -> dict[str, Any]:
    """``make_build_pod`` for a BuildJob under these settings."""
    req = job.request
    use_token = bool(job.clone_token) if with_clone_token is None else with_clone_token
    return make_build_pod(
        name=pod_name(job.build_id), namespace=settings.kube_namespace, owner=req.owner, repo=req.repo,
        sha=req.sha, image=job.image, repo_url=req.clone_url, build_id=job.build_id,
        builder_image=settings.repo2docker_image, build_timeout=settings.build_timeout,
        installation_id=req.installation_id, cache_from=job.cache_from, subdir=req.subdir,
        build_socket=settings.build_socket, resources=resources_from_settings(settings),
        clone_token_key=clone_token_key(job.build_id) if use_token else None,
        push_secret=settings.build_push_secret,
    )


def build_pod_yaml(
    settings: "Settings", owner: str, repo: str, sha: str, *, clone_url: str | None = None,
    cache_from: str | None = None, subdir: str | None = None, private: bool = False,
) -> str:
    """The pod ``binder-prebuild build-pod OWNER/REPO SHA`` prints (first attempt's name).

    Given only OWNER/REPO, the clone URL falls back to github.com (DESIGN.md).
    """
    from bot.images import effective_prefix, image_name
    from bot.model import BuildJob, BuildRequest
    from bot.store.builds import build_id

    url = clone_url or f"https://github.com/{owner}/{repo}"
    image = image_name(owner, repo, sha, effective_prefix(settings.image_prefix, settings.registry_url))
    req = BuildRequest(owner=owner, repo=repo, sha=sha, clone_url=url, subdir=subdir, private=private)
    job = BuildJob(build_id=build_id(owner, repo, sha, 1), request=req, image=image, cache_from=cache_from)
    pod = build_pod_for_job(job, settings, with_clone_token=private)
    return yaml.safe_dump(pod, sort_keys=False, default_flow_style=False)
