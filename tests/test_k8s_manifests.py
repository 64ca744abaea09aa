"""k8s/ renders with kustomize and every object is valid Kubernetes; so is `build-pod`'s output."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from bot.builders import k8s_objects as objs
from bot.config import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S_VERSION = "1.30"


def kubectl() -> str:
    path = shutil.which("kubectl") or "/usr/bin/kubectl"
    if not Path(path).exists():
        pytest.fail("kubectl is needed to render k8s/ (kubectl kustomize)", pytrace=False)
    return path


def render(path: str) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(ROOT / path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for d in docs:
        out.setdefault(d["kind"], []).append(d)
    return out


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render("k8s")


@pytest.fixture(scope="module")
def dind() -> list[dict]:
    return render("k8s/overlays/dind")


@pytest.mark.parametrize("which", ["base", "dind"])
def test_every_rendered_object_is_valid(which, request):
    docs = request.getfixturevalue(which)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "binder-prebuild", doc["metadata"]["name"]


def test_the_service_objects_are_all_there(base):
    kinds = sorted(d["kind"] for d in base)
    assert kinds == sorted(["Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Service",
                            "PersistentVolumeClaim", "Deployment", "NetworkPolicy", "Secret",
                            "Role", "RoleBinding"])  # the image puller's (role-prepull.yaml)


def test_deployment_is_one_recreated_hardened_replica(base):
    (dep,) = by_kind(base)["Deployment"]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    # probes that an outage of the registry, the Hub or GitHub cannot fail (tests/test_probes.py)
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/health/live"
    # the shutdown budget of `serve` (bot/cli.py) fits the grace period
    from bot.cli import SHUTDOWN_BUDGET
    assert pod["terminationGracePeriodSeconds"] > SHUTDOWN_BUDGET
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    (pvc,) = by_kind(base)["PersistentVolumeClaim"]
    assert volumes[mounts["/data"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    # one writer: a ReadWriteOnce volume is only consistent with Recreate (a rolling update
    # would need the old and the new pod to hold it at once)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    (cm,) = by_kind(base)["ConfigMap"]
    assert cm["data"]["DATA_DIR"] == "/data" and cm["data"]["BUILDER"] == "kubernetes"
    env_from = {next(iter(e)): e[next(iter(e))]["name"] for e in c["envFrom"]}
    assert env_from == {"configMapRef": cm["metadata"]["name"], "secretRef": "binder-prebuild-github"}
    assert pod["serviceAccountName"] == by_kind(base)["ServiceAccount"][0]["metadata"]["name"]
    (svc,) = by_kind(base)["Service"]
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())


def test_settings_in_the_configmap_are_ones_the_app_reads(base):
    from bot.config import _ENV_FIELDS, load_settings

    (cm,) = by_kind(base)["ConfigMap"]
    assert set(cm["data"]) <= set(_ENV_FIELDS)
    settings = load_settings(cm["data"])
    assert settings.builder == "kubernetes" and settings.build_timeout == 3600


def one_named(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in by_kind(docs)[kind] if d["metadata"]["name"] == name]
    return doc


def test_role_grants_exactly_what_the_builder_uses_in_its_namespace(base):
    role = one_named(base, "Role", "binder-prebuild-builds")
    grants = {(r, v, tuple(rule.get("resourceNames") or ()))
              for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    named = (objs.CLONE_TOKENS_SECRET,)
    needed = {
        ("pods", "create", ()), ("pods", "get", ()), ("pods", "list", ()), ("pods", "watch", ()),
        ("pods", "delete", ()), ("pods/log", "get", ()),
        ("secrets", "get", named), ("secrets", "patch", named),  # one named Secret, nothing else
        ("events", "list", ()),
    }
    assert grants == needed
    # the Secret it names is one k8s/ creates
    assert [d["metadata"]["name"] for d in by_kind(base)["Secret"]] == [objs.CLONE_TOKENS_SECRET]
    binding = one_named(base, "RoleBinding", "binder-prebuild-builds")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == "binder-prebuild"
    assert "ClusterRole" not in {d["kind"] for d in base}


def test_build_pods_take_no_ingress(base):
    (np,) = by_kind(base)["NetworkPolicy"]
    selector = np["spec"]["podSelector"]["matchLabels"]
    assert selector == {objs.LABEL_NAME: objs.APP_NAME, objs.LABEL_COMPONENT: objs.BUILD_COMPONENT}
    assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert not np["spec"].get("ingress")
    # the policy selects what the builder labels its pods with, and not the service itself
    pod = yaml.safe_load(objs.build_pod_yaml(Settings(), "o", "r", "a" * 40))
    assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())
    (dep,) = by_kind(base)["Deployment"]
    assert not all(dep["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in selector.items())


def test_dind_overlay_adds_the_daemonset_and_points_builds_at_its_socket(dind):
    kinds = by_kind(dind)
    (ds,) = kinds["DaemonSet"]
    (cm,) = kinds["ConfigMap"]
    socket = cm["data"]["BUILD_SOCKET"]
    assert socket == "/var/run/dind/docker.sock"
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert f"--host=unix://{socket}" in c["args"]
    host_paths = [v["hostPath"]["path"] for v in ds["spec"]["template"]["spec"]["volumes"] if "hostPath" in v]
    assert str(Path(socket).parent) in host_paths
    # and a build pod made with that setting mounts it
    pod = yaml.safe_load(objs.build_pod_yaml(Settings(build_socket=socket), "o", "r", "a" * 40))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert pod["spec"]["volumes"][0]["hostPath"]["path"] == socket


@pytest.mark.parametrize("settings", [
    Settings(),
    Settings(registry_url="https://registry.example.org", build_push_secret="push", build_timeout=600),
    Settings(build_socket="tcp://dind:2375", image_prefix="prebuilt/"),
])
def test_build_pod_yaml_validates(settings):
    for private in (False, True):
        text = objs.build_pod_yaml(settings, "binder-examples", "requirements", "0123456789abcdef" * 2 + "01234567",
                                   private=private)
        kubernetes_validate.validate(yaml.safe_load(text), K8S_VERSION, strict=True)


def test_the_build_pod_command_prints_a_valid_pod(monkeypatch, tmp_path, capsys):
    from bot import cli

    for var in ("BINDER_PREBUILD_CONFIG", "REGISTRY_URL", "IMAGE_PREFIX", "BUILD_SOCKET", "KUBE_NAMESPACE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("REGISTRY_URL", "https://registry.example.org")
    monkeypatch.setenv("KUBE_NAMESPACE", "builds")
    sha = "0123456789abcdef" * 2 + "01234567"
    assert cli.main(["build-pod", "binder-examples/requirements", sha]) == 0
    pod = yaml.safe_load(capsys.readouterr().out)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert pod["metadata"]["namespace"] == "builds"
    assert pod["spec"]["containers"][0]["args"][-1] == "https://github.com/binder-examples/requirements"


def test_the_hubs_ingress_admits_the_service_pods_only_not_build_pods(base):
    """Issue 11 item 14: build pods run repositories' code; they must not reach the Hub's API."""
    values = yaml.safe_load((ROOT / "k8s" / "jupyterhub-values.yaml").read_text())
    (rule,) = values["hub"]["networkPolicy"]["ingress"]
    (peer,) = rule["from"]
    selector = peer["podSelector"]["matchLabels"]
    (dep,) = by_kind(base)["Deployment"]
    service_labels = dep["spec"]["template"]["metadata"]["labels"]
    build_labels = yaml.safe_load(objs.build_pod_yaml(Settings(), "o", "r", "a" * 40))["metadata"]["labels"]
    dind_labels = {objs.LABEL_NAME: objs.APP_NAME, objs.LABEL_COMPONENT: "dind"}

    def selects(labels: dict) -> bool:
        return all(labels.get(k) == v for k, v in selector.items())

    assert selects(service_labels)
    assert not selects(build_labels) and not selects(dind_labels)


def test_the_dind_overlay_keeps_builds_off_the_cloud_metadata_address(dind):
    (ds,) = by_kind(dind)["DaemonSet"]
    policies = [np for np in by_kind(dind)["NetworkPolicy"]
                if all(ds["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in np["spec"]["podSelector"]["matchLabels"].items())]
    (np,) = policies
    assert "Egress" in np["spec"]["policyTypes"] and not np["spec"].get("ingress")
    blocks = [peer["ipBlock"] for rule in np["spec"]["egress"] for peer in rule.get("to", []) if "ipBlock" in peer]
    assert blocks, "egress must be limited to address blocks"
    v4 = [b for b in blocks if ":" not in b["cidr"]]
    assert v4 and all("169.254.169.254/32" in b.get("except", []) for b in v4)
    assert all(b.get("except") for b in blocks)


def test_the_node_socket_caveat_is_documented():
    text = (ROOT / "k8s" / "base" / "networkpolicy-builds.yaml").read_text() + (ROOT / "README.md").read_text()
    assert "outside every pod NetworkPolicy" in text


def test_the_prepull_role_grants_exactly_what_the_image_puller_uses(base):
    """Issue 14 item 3: create the one DaemonSet, then get and update (PUT) it by name; nothing else."""
    from bot.builders import k8s_prepull_objects as pobjs

    role = one_named(base, "Role", "binder-prebuild-prepull")
    grants = {(tuple(rule["apiGroups"]), r, v, tuple(rule.get("resourceNames") or ()))
              for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    mine = (pobjs.PREPULL_NAME,)
    assert grants == {(("apps",), "daemonsets", "create", ()), (("apps",), "daemonsets", "get", mine),
                      (("apps",), "daemonsets", "update", mine)}
    binding = one_named(base, "RoleBinding", "binder-prebuild-prepull")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "binder-prebuild-prepull"}
    (subject,) = binding["subjects"]
    (dep,) = by_kind(base)["Deployment"]
    assert subject["name"] == dep["spec"]["template"]["spec"]["serviceAccountName"]
    assert subject["namespace"] == dep["metadata"]["namespace"]  # also right when applied in another namespace


def test_the_configmap_turns_the_image_puller_on_for_the_hubs_namespace(base):
    from bot.builders import k8s_prepull_objects as pobjs
    from bot.config import load_settings

    (cm,) = by_kind(base)["ConfigMap"]
    settings = load_settings(cm["data"] | {"DATA_DIR": "/nonexistent"})
    assert settings.prepull_enabled and settings.prepull_namespace == "binder-prebuild"
    role = one_named(base, "Role", "binder-prebuild-prepull")
    assert role["metadata"]["namespace"] == settings.prepull_namespace
    ds = pobjs.prepull_daemonset_for(settings, ["registry.example.org/binder-prebuild/x:" + "a" * 40])
    kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    # Zero to JupyterHub's user pods tolerate its dedicated user nodes: so does the puller
    keys = {t["key"] for t in ds["spec"]["template"]["spec"]["tolerations"]}
    assert keys == {"hub.jupyter.org/dedicated", "hub.jupyter.org_dedicated"}
