"""Issue 14 item 3: the puller DaemonSet follows builds and launches, on the fake Kubernetes API.

Real builds go through the scheduler (the shared instant builder pushing to the
registry double) into the real SQLite store; the puller reads the store and
writes its DaemonSet through the one Kubernetes wrapper to tests/fake_k8s, which
validates every DaemonSet against the real schema and enforces k8s/'s Role.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from bot.builders import k8s_prepull_objects as pobjs
from bot.model import BuildState
from bot.prepull import Prepuller, SyncAction
from tests.test_scheduler import make_harness, req

ROOT = Path(__file__).resolve().parent.parent
NS = "jhub"
DAY = 86400.0


def prepull_rules() -> list[dict]:
    return yaml.safe_load((ROOT / "k8s" / "base" / "role-prepull.yaml").read_text())["rules"]


@pytest.fixture
async def env(tmp_path, registry_double, fake_k8s):
    fake_k8s.rules = prepull_rules()  # as deployed: only what role-prepull.yaml grants
    h = await make_harness(tmp_path, registry_double, prepull_namespace=NS, prepull_max_images=3)
    await h.services.gh_state.upsert_installation(1, "octo")
    await h.services.gh_state.add_repos(1, [("octo/a", False), ("octo/b", False), ("octo/c", False)])
    made: list[Prepuller] = []
    clock = h.clock.time  # the scheduler's driven clock: build times, launch times, the launch window

    async def make(**kw) -> Prepuller:
        p = Prepuller(h.services, configuration=fake_k8s.configuration(), debounce=0, clock=clock, **kw)
        await p.start()
        p.api.sleep = _no_sleep  # the wrapper's backoff: recorded, not slept
        made.append(p)
        return p

    yield h, fake_k8s, make, clock
    for p in made:
        await p.close()
    await h.close()


SLEPT: list[float] = []


async def _no_sleep(seconds: float) -> None:
    SLEPT.append(seconds)


def pulled(fake) -> list[str] | None:
    ds = fake.daemonset(pobjs.PREPULL_NAME, NS)
    return None if ds is None else pobjs.images_of(ds)


async def build(h, sha: str, repo: str, **kw):
    """One build through the scheduler, finished a minute (on its driven clock) after the one before."""
    await h.clock.advance(60)
    rec = await h.scheduler.submit(req(sha, repo=repo, **kw))
    await h.wait_state(rec.id, BuildState.BUILT)
    return rec


def writes(fake) -> list[str]:
    return [m for m, path in fake.requests if "/daemonsets" in path and m in ("POST", "PUT", "PATCH", "DELETE")]


async def test_the_daemonset_follows_default_branch_builds_and_launches(env):
    h, fake, make, clock = env
    p = await make()
    await p.wait_synced(1)
    assert pulled(fake) == []  # created at start, nothing to pull yet
    uid = fake.daemonset(pobjs.PREPULL_NAME, NS)["metadata"]["uid"]

    a1 = await build(h, "1" * 40, "a")
    await fake.wait_for(lambda: pulled(fake) == [a1.image])

    pr = await build(h, "5" * 40, "a", pr=7)  # a pull request's image is not pre-pulled ...
    assert await p.sync_once() is SyncAction.NONE and pulled(fake) == [a1.image]

    a2 = await build(h, "2" * 40, "a")  # ... a newer default-branch build replaces the repo's older image
    await fake.wait_for(lambda: pulled(fake) == [a2.image])

    await h.services.bus.launched("octo", "a", pr.image)  # ... unless someone launched it today
    await fake.wait_for(lambda: pulled(fake) == [pr.image, a2.image])

    b = await build(h, "3" * 40, "b")
    c = await build(h, "4" * 40, "c")
    # the cap (3): most launched first, then the newest default-branch images; a's is dropped
    await fake.wait_for(lambda: pulled(fake) == [pr.image, c.image, b.image])

    await h.clock.advance(DAY + 1)  # the launch is more than a day old: the PR image goes, a's comes back
    p.poke()
    await fake.wait_for(lambda: pulled(fake) == [c.image, b.image, a2.image])

    ds = fake.daemonset(pobjs.PREPULL_NAME, NS)
    assert ds["metadata"]["uid"] == uid  # updated in place, never deleted and made again
    assert writes(fake)[0] == "POST" and set(writes(fake)[1:]) == {"PUT"}
    assert ds["metadata"]["generation"] == len(writes(fake))
    assert not fake.invalid  # every DaemonSet was valid for the real schema
    assert await p.health() == (True, f"3 images kept on the user nodes (namespace {NS})")


async def test_a_launch_counts_more_than_a_newer_build(env):
    h, fake, make, clock = env
    p = await make()
    a = await build(h, "1" * 40, "a")
    b = await build(h, "2" * 40, "b")  # newer
    await fake.wait_for(lambda: pulled(fake) == [b.image, a.image])
    await h.services.bus.launched("octo", "a", a.image)
    await fake.wait_for(lambda: pulled(fake) == [a.image, b.image])
    assert p.images == [a.image, b.image]


async def test_uninstalled_repositories_are_not_pulled(env):
    h, fake, make, clock = env
    p = await make()
    a = await build(h, "1" * 40, "a")
    await build(h, "2" * 40, "elsewhere")  # not in any installation
    await fake.wait_for(lambda: pulled(fake) == [a.image])
    await h.services.gh_state.remove_repos(1, ["octo/a"])
    p.poke()
    await fake.wait_for(lambda: pulled(fake) == [])


async def test_nothing_is_written_when_the_list_is_unchanged_even_after_a_restart(env):
    h, fake, make, clock = env
    p = await make()
    a = await build(h, "1" * 40, "a")
    await fake.wait_for(lambda: pulled(fake) == [a.image])
    await p.close()
    before = len(writes(fake))
    again = await make()  # a restart: the list comes from the store, the DaemonSet is already right
    await again.wait_synced(1)
    assert len(writes(fake)) == before and pulled(fake) == [a.image]


async def test_a_daemonset_deleted_by_hand_is_made_again(env):
    h, fake, make, clock = env
    p = await make()
    a = await build(h, "1" * 40, "a")
    await fake.wait_for(lambda: pulled(fake) == [a.image])
    fake._remove("DaemonSet", NS, pobjs.PREPULL_NAME)
    assert await p.sync_once() is SyncAction.CREATE
    assert pulled(fake) == [a.image]


async def test_a_burst_of_events_is_one_update(env):
    h, fake, make, clock = env
    gate, debouncing = asyncio.Event(), asyncio.Event()

    async def sleep(seconds: float) -> None:  # the debounce, driven by the test
        assert seconds == 5.0
        debouncing.set()
        await gate.wait()

    p = await make()
    await p.close()  # (the fixture's puller with no debounce) replaced by one that debounces
    p = Prepuller(h.services, configuration=fake.configuration(), debounce=5.0, sleep=sleep, clock=clock)
    await p.start()
    await p.wait_synced(1)  # at start: at once, no debounce
    images = [f"reg/octo-2da-abc123:{i:040x}" for i in range(3)]
    await h.services.bus.launched("octo", "a", images[0])
    await asyncio.wait_for(debouncing.wait(), 10)  # the loop waits out the debounce before it writes
    for image in images[1:]:
        await h.services.bus.launched("octo", "a", image)
    gate.set()
    await p.wait_synced(2)
    assert sorted(pulled(fake)) == sorted(images)
    assert writes(fake) == ["POST", "PUT"]  # the first puller's create, then one update for three launches
    await p.close()


async def test_a_conflicting_write_is_read_again_and_retried(env):
    h, fake, make, clock = env
    p = await make()
    await p.wait_synced(1)
    fake.fail_next("PUT", r"/daemonsets/", 409, reason="Conflict",
                   message="the object has been modified; please apply your changes to the latest version")
    a = await build(h, "1" * 40, "a")
    await fake.wait_for(lambda: pulled(fake) == [a.image])
    assert writes(fake).count("PUT") == 2 and p.last_error is None


async def test_a_stale_resource_version_is_a_conflict_in_the_fake(env):
    """The fake's optimistic concurrency, which the puller relies on (a PUT carries the version it read)."""
    h, fake, make, clock = env
    p = await make()
    await p.wait_synced(1)
    current = await p.api.get_daemonset(pobjs.PREPULL_NAME)
    body = pobjs.prepull_daemonset_for(h.services.settings, ["reg/x:1"])
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    await p.api.replace_daemonset(pobjs.PREPULL_NAME, body)
    from bot.builders.k8s_api import KubeConflict

    with pytest.raises(KubeConflict):  # the same version again: someone (we) changed it since
        await p.api.replace_daemonset(pobjs.PREPULL_NAME, body)
    bad = pobjs.prepull_daemonset_for(h.services.settings, ["reg/x:1"])
    bad["spec"]["selector"]["matchLabels"]["extra"] = "x"
    from bot.builders.k8s_api import KubeError

    with pytest.raises(KubeError) as e:
        await p.api.replace_daemonset(pobjs.PREPULL_NAME, bad)
    assert e.value.status == 422 and "selector" in e.value.message


async def test_busy_and_down_api_are_retried_through_the_one_wrapper(env):
    h, fake, make, clock = env
    p = await make()
    await p.wait_synced(1)
    SLEPT.clear()
    fake.fail_next("GET", r"/daemonsets/", 429, times=1, retry_after=7)
    fake.fail_next("PUT", r"/daemonsets/", 503, times=2)
    a = await build(h, "1" * 40, "a")
    await fake.wait_for(lambda: pulled(fake) == [a.image])
    assert SLEPT[0] == 7  # Retry-After is honoured
    assert len(SLEPT) == 3 and p.last_error is None


async def test_a_missing_permission_is_reported_and_retried(env):
    h, fake, make, clock = env
    fake.rules = [r for r in prepull_rules() if "update" not in r["verbs"]] + [
        {"apiGroups": ["apps"], "resources": ["daemonsets"], "resourceNames": [pobjs.PREPULL_NAME],
         "verbs": ["get"]}]
    p = await make(retry=0.05)
    await p.wait_synced(1)  # created: create and get are granted
    a = await build(h, "1" * 40, "a")
    await fake.wait_for(lambda: p.last_error is not None)
    ok, detail = await p.health()
    assert not ok and "403" in detail and "daemonsets" in detail
    fake.rules = prepull_rules()  # the operator fixes the Role: the next retry succeeds
    await fake.wait_for(lambda: pulled(fake) == [a.image])
    assert (await p.health())[0]


async def test_the_role_grants_nothing_beyond_the_puller(env):
    h, fake, make, clock = env
    p = await make()
    await p.wait_synced(1)
    from bot.builders.k8s_api import KubeError

    with pytest.raises(KubeError) as e:  # another DaemonSet of the namespace: not ours to read
        await p.api.get_daemonset("kube-proxy")
    assert e.value.status == 403
    with pytest.raises(KubeError) as e:
        await p.api.list_pods("")
    assert e.value.status == 403


@pytest.mark.hub
async def test_a_click_on_the_launch_page_puts_its_image_on_the_list(hub, launcher, fake_k8s):
    """The launcher tells the bus when the Hub starts a server from an image; the puller listens."""
    ln = await launcher(hub=hub, prepull_namespace=NS)
    await ln.install("octo/demo")
    sha, image = await ln.prebuild("octo/demo", "main")  # recorded without a default branch: only the launch counts
    p = Prepuller(ln.services, configuration=fake_k8s.configuration(), debounce=0)
    await p.start()
    try:
        await p.wait_synced(1)
        assert pulled(fake_k8s) == []
        status, body, events_url = await ln.open_page(f"/v2/gh/octo/demo/{sha}")
        assert status == 200, body
        _, _, events = await ln.events(events_url)
        assert events[-1]["phase"] == "ready"
        await fake_k8s.wait_for(lambda: pulled(fake_k8s) == [image])
    finally:
        await p.close()


async def test_the_app_runs_the_puller_when_configured(aiohttp_client, tmp_path, registry_double, fake_k8s,
                                                       monkeypatch):
    """bot/app.py: with BUILDER=kubernetes and PREPULL_NAMESPACE the app starts the loop (it syncs at
    start), reports it on /health and /metrics, and stops it on shutdown."""
    from bot.app import create_app
    from bot.config import Settings
    from bot.registry import RegistryClient
    from tests.fake_builders import InstantBuilder

    fake_registry, url = registry_double
    monkeypatch.setenv("KUBECONFIG", fake_k8s.kubeconfig(tmp_path / "kubeconfig", NS))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    settings = Settings(builder="kubernetes", prepull_namespace=NS, data_dir=tmp_path / "data",
                        registry_url=url, image_prefix="test/")
    app = create_app(settings, builder=lambda s: InstantBuilder(fake_registry),
                     images=lambda s: RegistryClient(s.session, url))
    client = await aiohttp_client(app)
    await fake_k8s.wait_for(lambda: pulled(fake_k8s) == [])
    health = await (await client.get("/health")).json()
    (check,) = [c for c in health["checks"] if c["name"] == "image puller"]
    assert check["ok"] and "0 images" in check["detail"]
    assert "binder_prebuild_prepull_images 0.0" in await (await client.get("/metrics")).text()
    from bot.appkeys import SERVICES

    prepuller = app[SERVICES].prepull
    await client.close()
    assert prepuller.api is None  # closed with the app


async def test_without_the_setting_there_is_no_puller(aiohttp_client, tmp_path, registry_double):
    from bot.app import create_app
    from bot.appkeys import SERVICES
    from bot.config import Settings
    from bot.registry import RegistryClient
    from tests.fake_builders import InstantBuilder

    fake_registry, url = registry_double
    app = create_app(Settings(builder="kubernetes", data_dir=tmp_path / "data", registry_url=url),
                     builder=lambda s: InstantBuilder(fake_registry), images=lambda s: RegistryClient(s.session, url))
    client = await aiohttp_client(app)
    assert app[SERVICES].prepull is None
    await client.close()
