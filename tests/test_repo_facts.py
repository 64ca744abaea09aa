"""Repository facts (visibility, URLs) from webhooks, kept so a click needs no GitHub call.

Pure reading of every payload GitHub sends with a repository, the fail-closed rule for late
snapshots, what each ``repository`` action does, the store, and the webhook path end to end.
"""
from __future__ import annotations

import asyncio

import pytest

from bot.github.repositories import Change, repository_change
from bot.store.repo_facts import RepoFacts, RepoFactsStore, facts_from_repository, merged_visibility
from tests import payloads
from tests.feedback_harness import REPO


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("name", [n for n in payloads.names() if "repository" in payloads.load(n)])
def test_every_payload_with_a_repository_gives_its_facts(name):
    body = payloads.load(name)
    facts = facts_from_repository(body["repository"])
    assert facts is not None and facts.full_name == body["repository"]["full_name"]
    assert facts.private is body["repository"]["private"]
    assert facts.clone_url == body["repository"]["clone_url"] and facts.complete
    assert facts.default_branch == "main"


def test_installation_lists_give_visibility_without_urls():
    for name, key in (("installation.created", "repositories"),
                      ("installation_repositories.added", "repositories_added")):
        for short in payloads.load(name)[key]:
            facts = facts_from_repository(short)
            assert facts == RepoFacts(short["full_name"], short["private"]) and not facts.complete


@pytest.mark.parametrize("bad", [None, "octo/demo", {}, {"full_name": "octo/demo"},
                                 {"full_name": "octo/demo", "private": "false"},
                                 {"full_name": "demo", "private": False}, {"full_name": 7, "private": False},
                                 {"full_name": "a/b/c", "private": True}])
def test_a_repository_object_that_says_nothing_clear_gives_no_facts(bad):
    assert facts_from_repository(bad) is None


def test_fail_closed_rule_for_snapshots():
    # (stored, incoming, authoritative) -> (private kept, confirmed)
    assert merged_visibility(None, False, authoritative=False) == (False, True)
    assert merged_visibility(False, True, authoritative=False) == (True, True)  # more private: at once
    assert merged_visibility(True, False, authoritative=False) == (True, False)  # a late snapshot: revalidate
    assert merged_visibility(True, False, authoritative=True) == (False, True)  # GitHub now, or publicized
    assert merged_visibility(True, True, authoritative=False) == (True, True)
    assert merged_visibility(False, False, authoritative=False) == (False, True)


def test_what_each_repository_action_does():
    def change(action):
        return repository_change(payloads.load(f"repository.{action}"))

    assert change("privatized").change is Change.AUTHORITATIVE and change("privatized").facts.private is True
    assert change("publicized").change is Change.AUTHORITATIVE and change("publicized").facts.private is False
    gone = change("deleted")
    assert gone.change is Change.GONE and gone.facts is None and gone.old_name == REPO
    renamed = change("renamed")
    assert renamed.change is Change.MOVED and renamed.old_name == "binder-examples/requirements-old"
    assert renamed.facts.full_name == REPO
    moved = change("transferred")
    assert moved.change is Change.MOVED and moved.old_name == "octo-maintainer/requirements"
    assert change("edited").change is Change.RECORD
    # what cannot be read is ignored, never an error
    assert repository_change({"action": "privatized"}) is None
    body = payloads.load("repository.renamed")
    del body["changes"]
    assert repository_change(body).change is Change.RECORD
    body = payloads.load("repository.transferred")
    body["changes"] = {"owner": {"from": "nobody"}}
    assert repository_change(body).change is Change.RECORD


async def test_store_keeps_urls_names_any_case_and_forgets(make_services):
    services = await make_services()
    clock = Clock()
    store = RepoFactsStore(services.db, clock=clock)
    await store.record(RepoFacts("Octo/Demo", False, "https://github.com/Octo/Demo.git", None, "main"),
                       authoritative=False)
    clock.now += 5
    await store.record(RepoFacts("octo/demo", False), authoritative=False)  # an installation list: no URLs
    known = await store.lookup("OCTO/demo")
    assert known.facts.clone_url == "https://github.com/Octo/Demo.git" and known.facts.default_branch == "main"
    assert known.age == 0
    await store.record(RepoFacts("octo/demo", True), authoritative=False)
    assert (await store.lookup("octo/demo")).facts.private is True
    await store.record(RepoFacts("octo/demo", False), authoritative=False)  # late: kept private, stale
    known = await store.lookup("octo/demo")
    assert known.facts.private is True and known.age == clock.now
    await store.forget("OCTO/DEMO")
    assert await store.lookup("octo/demo") is None


async def test_repository_webhooks_reach_the_store(prebuild_bot):
    bot = await prebuild_bot()
    store = RepoFactsStore(bot.services.db)
    await bot.send("push", bot.push(bot.commit(branch="x"), branch="x"))
    await bot.settle()
    assert (await store.lookup(REPO)).facts.private is False
    body = payloads.rewrite(payloads.load("repository.privatized"), installation_id=bot.inst.id)
    await bot.send("repository", body)
    await bot.settle()
    assert (await store.lookup(REPO)).facts.private is True
    await bot.send("repository", payloads.rewrite(payloads.load("repository.deleted"), installation_id=bot.inst.id))
    await bot.settle()
    assert await store.lookup(REPO) is None


async def test_one_background_reread_per_key_and_none_right_after_one_ended():
    from launcher.revalidate import Revalidations

    clock = Clock()
    runs: list[str] = []
    gate = asyncio.Event()

    async def reread(key: str) -> None:
        runs.append(key)
        await gate.wait()

    again = Revalidations(cooldown=60, clock=clock)
    for _ in range(3):  # a burst of clicks on one old record
        again.start("a", lambda: reread("a"), name="a")
    again.start("b", lambda: reread("b"), name="b")
    gate.set()
    await again.settle()
    assert sorted(runs) == ["a", "b"]
    again.start("a", lambda: reread("a"), name="a")  # a click that read the record before the re-read ended
    await again.settle()
    assert sorted(runs) == ["a", "b"]
    clock.now += 61
    again.start("a", lambda: reread("a"), name="a")
    await again.settle()
    assert sorted(runs) == ["a", "a", "b"]
