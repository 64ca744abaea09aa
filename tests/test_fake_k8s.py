"""The Kubernetes fake itself: it must judge objects as kubernetes-validate does and speak the wire format."""
from __future__ import annotations

import copy
import json

import aiohttp
import kubernetes_validate
import pytest
import yaml

from bot.builders.k8s_objects import build_pod_yaml
from bot.config import Settings
from tests.fake_k8s import validate

POD = yaml.safe_load(build_pod_yaml(Settings(), "owner", "repo", "a" * 40))


def library_verdict(obj: dict) -> bool:
    try:
        kubernetes_validate.validate(obj, "1.30", strict=True)
        return True
    except kubernetes_validate.ValidationError:
        return False


@pytest.mark.parametrize("mutate", [
    lambda p: None,
    lambda p: p["spec"]["containers"][0].update(bogus=1),
    lambda p: p["spec"].update(restartPolicy=5),
    lambda p: p["spec"].pop("containers"),
    lambda p: p["spec"]["containers"][0]["env"].append({"name": "X", "valueFrom": {"secretKeyRef": {"key": 1}}}),
])
def test_the_fake_judges_schemas_like_kubernetes_validate(mutate):
    pod = copy.deepcopy(POD)
    mutate(pod)
    assert (validate(pod, "Pod") == []) == library_verdict(pod)


def test_the_fake_checks_names_and_labels_like_the_api_server():
    pod = copy.deepcopy(POD)
    pod["metadata"]["labels"]["binder-prebuild/repo"] = "owner/repo"
    pod["metadata"]["name"] = "Build_1"
    errors = validate(pod, "Pod")
    assert len(errors) == 2


async def test_wire_format_conflict_invalid_and_expired_watch(fake_k8s):
    base = f"{fake_k8s.url}/api/v1/namespaces/binder-prebuild/pods"
    async with aiohttp.ClientSession() as s:
        async with s.post(base, json=POD) as r:
            assert r.status == 201
            created = await r.json()
        async with s.post(base, json=POD) as r:
            assert r.status == 409
            body = await r.json()
            assert (body["kind"], body["reason"], body["code"]) == ("Status", "AlreadyExists", 409)
        bad = copy.deepcopy(POD)
        bad["metadata"]["name"] = "other"
        bad["spec"]["containers"][0]["bogus"] = True
        async with s.post(base, json=bad) as r:
            assert r.status == 422 and (await r.json())["reason"] == "Invalid"
        rv = created["metadata"]["resourceVersion"]
        fake_k8s.compact()
        async with s.get(base, params={"watch": "1", "resourceVersion": rv}) as r:
            assert r.status == 200
            event = json.loads(await r.content.readline())
            assert event["type"] == "ERROR" and event["object"]["code"] == 410
        async with s.get(f"{base}/{POD['metadata']['name']}/log") as r:
            assert r.status == 400 and "waiting to start" in (await r.json())["message"]
