"""Issue 14 item 3, the pure parts: which images to pre-pull, the DaemonSet that pulls them, the settings."""
from __future__ import annotations

import kubernetes_validate
import pytest

from bot.builders import k8s_prepull_objects as pobjs
from bot.config import ConfigError, Settings, load_settings
from bot.prepull import SyncAction, choose_images, plan_sync
from bot.store.prepull_state import BuiltImage, LaunchedImage

K8S_VERSION = "1.30"
PAUSE = "registry.k8s.io/pause:3.10"
Z2JH_TOLERATIONS = ({"key": "hub.jupyter.org/dedicated", "operator": "Equal", "value": "user",
                     "effect": "NoSchedule"},)


def img(name: str, sha: str = "a") -> str:
    return f"registry.example.org/binder-prebuild/{name}:{sha * 40}"


# -- the DaemonSet -------------------------------------------------------------------
@pytest.mark.parametrize("images", [[], [img("o-2dr-123456")], [img(f"r{i}") for i in range(20)]])
def test_the_daemonset_is_valid_kubernetes(images):
    ds = pobjs.make_prepull_daemonset(namespace="jhub", images=images, pause_image=PAUSE,
                                      node_selector={"hub.jupyter.org/node-purpose": "user"},
                                      tolerations=Z2JH_TOLERATIONS, pull_secrets=["regcred"])
    kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    assert ds["metadata"]["namespace"] == "jhub" and ds["metadata"]["name"] == pobjs.PREPULL_NAME


def test_each_image_is_an_init_container_that_only_pulls_and_a_pause_container_keeps_the_pod():
    images = [img("one"), img("two"), img("three")]
    ds = pobjs.make_prepull_daemonset(namespace="jhub", images=images, pause_image=PAUSE)
    pod = ds["spec"]["template"]["spec"]
    assert [c["image"] for c in pod["initContainers"]] == images  # in priority order
    assert pobjs.images_of(ds) == images
    for c in pod["initContainers"]:
        assert c["command"] == ["/bin/sh", "-c", "true"]  # runs nothing of the repository's
        assert c["imagePullPolicy"] == "IfNotPresent"
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert len({c["name"] for c in pod["initContainers"]}) == 3
    (pause,) = pod["containers"]
    assert pause["image"] == PAUSE
    assert pod["automountServiceAccountToken"] is False
    # the selector selects the template, and the pods are labelled as ours (not builds, not servers)
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"] == labels
    assert labels["app.kubernetes.io/component"] == "prepull"


def test_an_unchanged_image_keeps_its_container_name_when_the_list_changes():
    a = pobjs.make_prepull_daemonset(namespace="n", images=[img("one"), img("two")], pause_image=PAUSE)
    b = pobjs.make_prepull_daemonset(namespace="n", images=[img("zero"), img("two")], pause_image=PAUSE)
    names_a = {c["image"]: c["name"] for c in a["spec"]["template"]["spec"]["initContainers"]}
    names_b = {c["image"]: c["name"] for c in b["spec"]["template"]["spec"]["initContainers"]}
    assert names_a[img("two")] == names_b[img("two")]


def test_node_selector_tolerations_and_pull_secrets_are_the_user_pods_settings():
    settings = load_settings({"BUILDER": "kubernetes", "PREPULL_NAMESPACE": "jhub",
                              "PREPULL_NODE_SELECTOR": "hub.jupyter.org/node-purpose=user, disk=ssd",
                              "PREPULL_TOLERATIONS": '[{"key": "hub.jupyter.org/dedicated", "operator": "Equal",'
                                                     ' "value": "user", "effect": "NoSchedule"}]',
                              "PREPULL_PULL_SECRETS": "regcred", "PREPULL_PAUSE_IMAGE": "mirror/pause:3.10",
                              "PREPULL_MAX_IMAGES": "5", "DATA_DIR": "/nonexistent"})
    assert settings.prepull_enabled and settings.prepull_max_images == 5
    ds = pobjs.prepull_daemonset_for(settings, [img("x")])
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"hub.jupyter.org/node-purpose": "user", "disk": "ssd"}
    assert pod["tolerations"] == list(Z2JH_TOLERATIONS)
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["containers"][0]["image"] == "mirror/pause:3.10"
    assert ds["metadata"]["namespace"] == "jhub"
    kubernetes_validate.validate(ds, K8S_VERSION, strict=True)
    as_json = load_settings({"PREPULL_NODE_SELECTOR": '{"a": "b"}', "DATA_DIR": "/nonexistent"})
    assert as_json.prepull_node_selector == (("a", "b"),)


def test_a_config_file_gives_tolerations_and_node_selector_as_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("BUILDER: kubernetes\nPREPULL_NAMESPACE: jhub\n"
                    "PREPULL_NODE_SELECTOR: {hub.jupyter.org/node-purpose: user}\n"
                    "PREPULL_TOLERATIONS:\n  - {key: hub.jupyter.org/dedicated, operator: Equal, value: user,"
                    " effect: NoSchedule}\n")
    settings = load_settings({"DATA_DIR": str(tmp_path)}, config_file=str(path))
    assert settings.prepull_node_selector == (("hub.jupyter.org/node-purpose", "user"),)
    assert settings.prepull_tolerations == Z2JH_TOLERATIONS


@pytest.mark.parametrize("env, needle", [
    ({"PREPULL_NAMESPACE": "jhub"}, "nothing to pull"),  # BUILDER=local
    ({"BUILDER": "kubernetes", "PREPULL_TOLERATIONS": "{not json"}, "PREPULL_TOLERATIONS"),
    ({"BUILDER": "kubernetes", "PREPULL_TOLERATIONS": '{"key": "a"}'}, "PREPULL_TOLERATIONS"),
    ({"BUILDER": "kubernetes", "PREPULL_NODE_SELECTOR": "novalue"}, "PREPULL_NODE_SELECTOR"),
    ({"BUILDER": "kubernetes", "PREPULL_MAX_IMAGES": "-1"}, "PREPULL_MAX_IMAGES"),
])
def test_bad_prepull_settings_are_clear_errors(env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_settings(env | {"DATA_DIR": "/nonexistent"})


def test_the_feature_is_off_unless_configured_on_kubernetes():
    assert not Settings(builder="kubernetes").prepull_enabled
    assert not Settings(builder="local", prepull_namespace="x").prepull_enabled
    assert Settings().prepull_max_images == 20


def test_sync_is_planned_from_what_we_submitted_not_from_server_defaults():
    want = pobjs.make_prepull_daemonset(namespace="n", images=[img("a")], pause_image=PAUSE)
    assert plan_sync(None, want) is SyncAction.CREATE
    current = dict(want, status={"numberReady": 3})
    current["spec"] = dict(want["spec"], revisionHistoryLimit=2, minReadySeconds=0)  # defaulted by the server
    assert plan_sync(current, want) is SyncAction.NONE
    other = pobjs.make_prepull_daemonset(namespace="n", images=[img("b")], pause_image=PAUSE)
    assert plan_sync(current, other) is SyncAction.REPLACE
    edited = dict(want, metadata=dict(want["metadata"], annotations={}))  # someone applied their own
    assert plan_sync(edited, want) is SyncAction.REPLACE


# -- which images ------------------------------------------------------------------------
def built(repo: str, sha: str, at: float, owner: str = "org") -> BuiltImage:
    return BuiltImage(owner, repo, img(f"{owner}-{repo}", sha), at)


def test_the_newest_default_branch_image_of_each_installed_repo():
    defaults = [built("a", "1", 100), built("a", "2", 200), built("b", "3", 150), built("gone", "4", 300)]
    chosen = choose_images(defaults, [], installed={"org/a", "org/b"}, limit=20)
    assert chosen == [img("org-a", "2"), img("org-b", "3")]  # newest first; "gone" is not installed


def test_installed_names_match_without_case():
    chosen = choose_images([built("A", "1", 1, owner="Org")], [], installed={"org/a"}, limit=20)
    assert chosen == [img("Org-A", "1")]


def test_launched_images_come_first_most_launched_then_newest():
    defaults = [built("a", "1", 500), built("b", "2", 400)]
    launched = [LaunchedImage(img("pr-image", "9"), 1, 100), LaunchedImage(img("org-b", "2"), 5, 50),
                LaunchedImage(img("old", "8"), 1, 90)]
    chosen = choose_images(defaults, launched, installed={"org/a", "org/b"}, limit=20)
    assert chosen == [img("org-b", "2"), img("pr-image", "9"), img("old", "8"), img("org-a", "1")]


def test_the_cap_keeps_the_most_wanted():
    defaults = [built(f"r{i}", "1", float(i)) for i in range(30)]
    launched = [LaunchedImage(img("hot", "5"), 3, 1.0)]
    chosen = choose_images(defaults, launched, installed={f"org/r{i}" for i in range(30)}, limit=20)
    assert len(chosen) == 20
    assert chosen[0] == img("hot", "5")
    assert chosen[1:] == [img(f"org-r{i}", "1") for i in range(29, 10, -1)]
    assert choose_images(defaults, launched, installed=set(), limit=0) == []
