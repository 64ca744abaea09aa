"""The image-puller DaemonSet, as a plain dict (pure; KubeSpawner objects.py style).

One pod per user node: an init container per image that only runs a no-op
(``/bin/sh -c true``), so the kubelet pulls the image before anyone launches
it, then a pause container that keeps the pod (and so the images, which the
kubelet does not garbage-collect while a pod uses them) in place. The same idea
as Zero to JupyterHub's continuous image puller, for a list that changes with
builds and launches. Nothing here talks to the API; tests validate the result
against the real schema.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bot.builders.k8s_objects import APP_NAME, LABEL_COMPONENT, LABEL_NAME

if TYPE_CHECKING:
    from bot.config import Settings

PREPULL_NAME = "binder-prebuild-prepull"
PREPULL_COMPONENT = "prepull"
ANN_SPEC_HASH = "binder-prebuild/prepull-spec"
"""sha256 of the spec we submitted: the API server adds defaults, so we compare this, not the spec."""
NOOP_COMMAND = ["/bin/sh", "-c", "true"]
NOBODY = 65534

_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": NOBODY,
    "runAsGroup": NOBODY,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pull_container_name(image: str) -> str:
    """A stable, valid container name per image, so an unchanged image keeps its name."""
    return "pull-" + hashlib.sha256(image.encode()).hexdigest()[:16]


def prepull_labels() -> dict[str, str]:
    return {LABEL_NAME: APP_NAME, LABEL_COMPONENT: PREPULL_COMPONENT}


def spec_hash(spec: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def make_prepull_daemonset(
    *,
    namespace: str,
    images: Sequence[str],
    pause_image: str,
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] = (),
    pull_secrets: Sequence[str] = (),
    name: str = PREPULL_NAME,
) -> dict[str, Any]:
    """The puller for ``images`` (in this order: the kubelet pulls init containers' images one by one).

    ``node_selector`` and ``tolerations`` are the user pods' own, so it runs on
    the nodes where servers start; ``pull_secrets`` those of the user pods too.
    """
    if len(set(images)) != len(images):
        raise ValueError("images must be distinct")
    labels = prepull_labels()
    init = [{
        "name": pull_container_name(image),
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(NOOP_COMMAND),
        "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": dict(_SECURITY),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    } for image in images]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsNonRoot": True, "runAsUser": NOBODY, "runAsGroup": NOBODY},
        "containers": [{
            "name": "pause",
            "image": pause_image,
            "imagePullPolicy": "IfNotPresent",
            "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}, "limits": {"memory": "16Mi"}},
            "securityContext": dict(_SECURITY) | {"readOnlyRootFilesystem": True},
        }],
    }
    if init:
        pod["initContainers"] = init
    if node_selector:
        pod["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod["tolerations"] = [dict(t) for t in tolerations]
    if pull_secrets:
        pod["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    spec: dict[str, Any] = {
        "selector": {"matchLabels": dict(labels)},
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}},
        "revisionHistoryLimit": 2,  # every change of the list is a ControllerRevision
        "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(labels),
            "annotations": {ANN_SPEC_HASH: spec_hash(spec)},
        },
        "spec": spec,
    }


def prepull_daemonset_for(settings: "Settings", images: Sequence[str]) -> dict[str, Any]:
    """``make_prepull_daemonset`` under these settings."""
    if not settings.prepull_namespace:
        raise ValueError("PREPULL_NAMESPACE is not set")
    return make_prepull_daemonset(
        namespace=settings.prepull_namespace, images=images, pause_image=settings.prepull_pause_image,
        node_selector=dict(settings.prepull_node_selector), tolerations=settings.prepull_tolerations,
        pull_secrets=settings.prepull_pull_secrets,
    )


def images_of(daemonset: Mapping[str, Any]) -> list[str]:
    """The images a DaemonSet (ours, as read back) pulls, in order."""
    spec = ((daemonset.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [c["image"] for c in spec.get("initContainers") or []]
