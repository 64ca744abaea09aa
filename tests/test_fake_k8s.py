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


def _daemonset(images=("reg/x:1",)) -> dict:
    from bot.builders.k8s_prepull_objects import make_prepull_daemonset

    return make_prepull_daemonset(namespace="jhub", images=list(images), pause_image="registry.k8s.io/pause:3.10")


@pytest.mark.parametrize("mutate", [
    lambda d: None,
    lambda d: d["spec"]["template"]["spec"]["initContainers"][0].update(bogus=1),
    lambda d: d["spec"].pop("selector"),
    lambda d: d["spec"]["updateStrategy"].update(type=5),
])
def test_the_fake_judges_daemonsets_like_kubernetes_validate(mutate):
    ds = _daemonset()
    mutate(ds)
    assert (validate(ds, "DaemonSet") == []) == library_verdict(ds)


async def test_daemonsets_on_the_wire_create_get_replace_patch_and_the_api_servers_checks(fake_k8s):
    """apps/v1 DaemonSets: what the image puller uses, with the checks the API server makes."""
    base = f"{fake_k8s.url}/apis/apps/v1/namespaces/jhub/daemonsets"
    ds = _daemonset()
    name = ds["metadata"]["name"]
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{base}/{name}") as r:
            assert r.status == 404 and (await r.json())["reason"] == "NotFound"
        async with s.post(base, json=ds) as r:
            assert r.status == 201
            created = await r.json()
        assert created["metadata"]["generation"] == 1 and created["status"]["desiredNumberScheduled"] == 3
        async with s.post(base, json=ds) as r:
            assert r.status == 409 and (await r.json())["reason"] == "AlreadyExists"
        # replace in place, with the version read: the generation counts the spec change
        new = _daemonset(["reg/x:1", "reg/y:2"])
        new["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
        async with s.put(f"{base}/{name}", json=new) as r:
            assert r.status == 200
            replaced = await r.json()
        assert replaced["metadata"]["uid"] == created["metadata"]["uid"]
        assert replaced["metadata"]["generation"] == 2
        async with s.put(f"{base}/{name}", json=new) as r:  # that version is gone now
            assert r.status == 409 and (await r.json())["reason"] == "Conflict"
        # the selector must select the template and cannot change
        bad = _daemonset()
        bad["spec"]["template"]["metadata"]["labels"] = {"other": "x"}
        async with s.post(base, json=dict(bad, metadata=dict(bad["metadata"], name="other"))) as r:
            assert r.status == 422 and "selector" in (await r.json())["message"]
        moved = _daemonset()
        moved["spec"]["selector"]["matchLabels"]["extra"] = "x"
        moved["spec"]["template"]["metadata"]["labels"]["extra"] = "x"
        async with s.put(f"{base}/{name}", json=moved) as r:
            assert r.status == 422 and "immutable" in (await r.json())["message"]
        # a schema error is a 422 too; a name that is not the URL's a 400
        broken = _daemonset()
        broken["spec"]["template"]["spec"]["initContainers"][0]["bogus"] = 1
        async with s.put(f"{base}/{name}", json=broken) as r:
            assert r.status == 422
        async with s.put(f"{base}/someone-else", json=_daemonset()) as r:
            assert r.status == 400
        # merge patch, as kubectl patch --type=merge sends it
        async with s.patch(f"{base}/{name}", data=json.dumps({"metadata": {"labels": {"team": "a"}}}),
                           headers={"Content-Type": "application/merge-patch+json"}) as r:
            assert r.status == 200
            patched = await r.json()
        assert patched["metadata"]["labels"]["team"] == "a" and patched["metadata"]["generation"] == 2
        async with s.get(base) as r:
            assert [d["metadata"]["name"] for d in (await r.json())["items"]] == [name]
        async with s.delete(f"{base}/{name}") as r:
            assert r.status == 200
    assert fake_k8s.daemonset(name, "jhub") is None
    assert fake_k8s.invalid  # the refused ones were recorded
