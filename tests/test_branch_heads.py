"""Branch and tag heads from push webhooks: kept in the store, and a launch of a branch reads them
(no GitHub call on the click's path; an old head is revalidated in the background)."""
from __future__ import annotations

import pytest

from bot.store.heads import HeadStore, RefKind, head_from_push
from tests import payloads
from tests.feedback_harness import REPO
from tests.real_hub import free_port

SHA1, SHA2 = "1" * 40, "2" * 40


def commit_calls(ln) -> list[str]:
    return [r.path for r in ln.fake.requests if "/commits/" in r.path]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_head_from_push_payloads():
    body = payloads.load("push.branch")
    pushed = head_from_push(body)
    assert (pushed.full_name, pushed.kind, pushed.name, pushed.sha) == (REPO, RefKind.BRANCH, "main", body["after"])
    assert pushed.default_branch == "main"
    tag = dict(body, ref="refs/tags/v1.0")
    assert head_from_push(tag).kind is RefKind.TAG and head_from_push(tag).name == "v1.0"
    deleted = dict(body, ref="refs/heads/gone", after="0" * 40, deleted=True)
    assert head_from_push(deleted).sha is None
    for bad in (dict(body, ref="refs/notes/x"), dict(body, after="not-a-sha"), {"ref": "refs/heads/x"}, {}):
        assert head_from_push(bad) is None


async def test_head_store_lookup_rules(make_services):
    services = await make_services()
    clock = Clock()
    store = HeadStore(services.db, clock=clock)
    await store.record("Octo/Demo", RefKind.BRANCH, "main", SHA1)
    await store.record("octo/demo", RefKind.TAG, "main", SHA2)  # a tag named like the branch
    await store.record("octo/demo", RefKind.TAG, "v1", SHA2)
    clock.now += 30
    head = await store.lookup("OCTO/demo", "main")
    assert head.sha == SHA1 and head.kind is RefKind.BRANCH and head.age == 30  # the branch wins, as on GitHub
    assert (await store.lookup("octo/demo", "tags/main")).sha == SHA2
    assert (await store.lookup("octo/demo", "refs/heads/main")).sha == SHA1
    assert (await store.lookup("octo/demo", "v1")).kind is RefKind.TAG
    assert await store.lookup("octo/demo", "HEAD") is None  # the default branch is not known yet
    await store.record_default_branch("octo/demo", "main")
    assert (await store.lookup("octo/demo", "HEAD")).sha == SHA1
    assert await store.lookup("octo/demo", "Main") is None  # branch names are case-sensitive
    await store.record("octo/demo", RefKind.BRANCH, "main", None)
    assert (await store.lookup("octo/demo", "main")).kind is RefKind.TAG


async def test_push_webhooks_record_heads_and_a_branch_launch_asks_github_nothing(prebuild_bot):
    bot = await prebuild_bot()
    sha = bot.commit(branch="add-altair")
    await bot.send("push", bot.push(sha, branch="add-altair"))
    tag = bot.push(sha, branch="x")
    tag["ref"] = "refs/tags/v2"
    await bot.send("push", tag)
    await bot.settle()
    store = HeadStore(bot.services.db)
    assert (await store.lookup(REPO, "add-altair")).sha == sha
    assert (await store.lookup(REPO, "v2")).sha == sha
    assert (await store.lookup(REPO, "HEAD")) is None or (await store.default_branch(REPO)) == "main"

    bot.fake.requests.clear()
    for ref in ("add-altair", "v2"):
        resp = await bot.client.get(f"/build/gh/{REPO}/{ref}?build_only=true")
        text = await resp.text()
        assert '"phase":"ready"' in text and bot.services.scheduler.image_for(*REPO.split("/"), sha) in text
    # the ref from the heads, the visibility from the push's repository object: no GitHub call at all
    assert [f"{r.method} {r.path}" for r in bot.fake.requests] == []

    # a deleted branch is forgotten
    gone = bot.push(sha, branch="add-altair")
    gone.update(after="0" * 40, deleted=True)
    await bot.send("push", gone)
    await bot.settle()
    assert await store.lookup(REPO, "add-altair") is None


async def test_an_old_head_is_answered_at_once_and_revalidated_in_the_background(launcher):
    ln = await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api", max_servers=-1,
                        max_servers_per_repo=-1)
    await ln.install("octo/demo")
    repo = ln.fake.repo("octo/demo")
    old = repo.branches["main"]
    await ln.record_heads("octo/demo")
    known = ln.state.resolver.known
    clock = Clock()
    known.store.clock = clock
    await ln.record_heads("octo/demo")
    new = ln.fake.add_commit("octo/demo", {"n": "1"}, branch="main")  # a push whose webhook we missed

    ln.fake.requests.clear()
    status, _, events = await ln.events("/build/gh/octo/demo/main?build_only=true")
    assert events[-1]["imageName"] == ln.image_for("octo/demo", old)  # fresh enough: the recorded head
    assert commit_calls(ln) == []

    clock.now += known.fresh + 1  # the head is old now
    status, _, events = await ln.events("/build/gh/octo/demo/HEAD?build_only=true")
    assert events[-1]["imageName"] == ln.image_for("octo/demo", old)  # answered at once, stale
    await known.settle()
    assert commit_calls(ln) == ["/repos/octo/demo/commits/heads/main"]
    assert (await known.store.lookup("octo/demo", "main")).sha == new  # revalidated behind the click
    status, _, events = await ln.events("/build/gh/octo/demo/main?build_only=true")
    assert events[-1]["imageName"] == ln.image_for("octo/demo", new)

    # a branch GitHub no longer has is forgotten by its revalidation
    await ln.record_heads("octo/demo")
    del repo.branches["main"]
    clock.now += known.fresh + 1
    await ln.events("/build/gh/octo/demo/main?build_only=true")
    await known.settle()
    assert await known.store.lookup("octo/demo", "main") is None
    status, _, events = await ln.events("/build/gh/octo/demo/main?build_only=true")
    assert events[-1]["phase"] == "failed" and "no branch, tag or commit" in events[-1]["message"]


@pytest.mark.parametrize("ref", ["feature", "v9"])
async def test_unknown_refs_still_ask_github(launcher, ref):
    ln = await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api")
    await ln.install("octo/demo")
    sha = ln.fake.add_commit("octo/demo", {"f": "1"}, branch="feature")
    ln.fake.repo("octo/demo").tags["v9"] = sha
    ln.fake.requests.clear()
    status, _, events = await ln.events(f"/build/gh/octo/demo/{ref}?build_only=true")
    assert events[-1]["imageName"] == ln.image_for("octo/demo", sha)
    assert [r.path for r in ln.fake.requests if "/commits/" in r.path] == [f"/repos/octo/demo/commits/{ref}"]
