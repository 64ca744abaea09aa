"""The scheduler over a real SQLite store and the real RegistryClient (its cache included)
reading tests/fake_registry on loopback, with the shared instant builder and a driven clock."""
from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bot.config import Settings
from bot.events import EventBus
from bot.github.client import GitHubApp, RetryPolicy
from bot.metrics import Metrics
from bot.model import BuildOutcome, BuildRequest, BuildState, Phase, ProgressEvent
from bot.registry import RegistryClient
from bot.build_rules import Action, plan_submit, verify_outcome
from bot.scheduler import RETRY_SECONDS, Scheduler
from bot.services import Services
from bot.store import Database
from bot.store.builds import BuildStore
from bot.store.deliveries import DeliveryStore
from bot.store.github_state import GitHubState
from bot.store.schema import open_store
from tests.fake_builders import InstantBuilder
from tests.fake_clock import ManualClock
from tests.fake_github import Fault, settings_for
from tests.fake_registry import FakeRegistry

SHA1 = "1" * 40
SHA2 = "2" * 40
SHA3 = "3" * 40


def req(sha: str = SHA1, *, branch: str | None = "main", pr: int | None = None, repo: str = "repo") -> BuildRequest:
    return BuildRequest(owner="octo", repo=repo, sha=sha, clone_url=f"http://127.0.0.1:1/octo/{repo}.git",
                        branch=None if pr else branch, pr_number=pr, default_branch="main")


class Harness:
    def __init__(self, services: Services, events: list, registry: FakeRegistry, clock: ManualClock) -> None:
        self.services = services
        self.events = events
        self.registry = registry  # the registry double: push, faults, recorded requests
        self.images: RegistryClient = services.images  # type: ignore[assignment]
        self.builder: InstantBuilder = services.builder  # type: ignore[assignment]
        self.scheduler: Scheduler = services.scheduler  # type: ignore[assignment]
        self.clock = clock

    async def wait_state(self, build_id: str, state: BuildState, timeout: float = 10) -> None:
        async def _w() -> None:
            while (await self.services.builds.get(build_id)).state != state:
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_w(), timeout)

    async def wait_event(self, build_id: str, phase: Phase, text: str = "", timeout: float = 10) -> None:
        """Until the bus carried ``phase`` with ``text`` in its message for ``build_id`` (the store
        is written before the event is published: wait for this to read ``phases``)."""
        async def _w() -> None:
            while not any(r.id == build_id and e.phase == phase and text in e.message for r, e in self.events):
                await asyncio.sleep(0.01)
        await asyncio.wait_for(_w(), timeout)

    def phases(self, build_id: str) -> list[str]:
        return [e.phase.value for r, e in self.events if r.id == build_id]

    async def close(self, *, db: bool = True) -> None:
        await self.scheduler.stop()
        await self.images.close()
        await self.services.session.close()
        if db:
            await self.services.db.close()


async def make_harness(tmp_path, registry: tuple[FakeRegistry, str], *, max_builds: int = 8,
                       db: Database | None = None, hold: bool = False, builder=None,
                       clock: ManualClock | None = None, **settings_kw) -> Harness:
    """``registry`` is what ``fake_registry_factory()`` gives: the served fake and its URL."""
    fake, url = registry
    clock = clock or ManualClock()
    settings = Settings(data_dir=tmp_path, max_concurrent_builds=max_builds, image_prefix="test/", **settings_kw)
    db = db or await open_store(settings.db_path)
    session = aiohttp.ClientSession()
    services = Services(settings=settings, db=db, session=session, deliveries=DeliveryStore(db),
                        builds=BuildStore(db), gh_state=GitHubState(db), bus=EventBus())
    services.metrics = Metrics()
    # the real client: "missing" is remembered for 15 s (on the driven clock), retries are quick
    services.images = RegistryClient(session, url, attempts=2, backoff=0.01, clock=clock.time)
    if builder is None:
        builder = InstantBuilder(fake)
        builder.hold = hold
    services.builder = builder
    services.scheduler = Scheduler(services, clock=clock)
    events: list = []

    async def listener(record, event):
        events.append((record, event))

    services.bus.add_listener(listener)
    await services.scheduler.start()
    return Harness(services, events, fake, clock)


@pytest.fixture
async def h(tmp_path, registry_double):
    harness = await make_harness(tmp_path, registry_double)
    yield harness
    await harness.close()


async def test_build_runs_and_is_confirmed_in_registry(h):
    rec = await h.scheduler.submit(req())
    assert rec.state == BuildState.QUEUED
    await h.wait_state(rec.id, BuildState.BUILT)
    await h.wait_event(rec.id, Phase.BUILT)
    assert h.phases(rec.id) == ["waiting", "fetching", "building", "building", "building", "building",
                                "pushing", "built"]
    assert h.registry.has(rec.image)
    done = await h.services.builds.get(rec.id)
    assert done.log_tail[-2:] == ("Successfully built", f"pushing {rec.image}")


async def test_a_build_faster_than_the_missing_cache_is_still_confirmed(h):
    """The submit's lookup is a 404 the client remembers for 15 s; a build that pushes
    within that time must be checked against the registry itself, not that memory."""
    rec = await h.scheduler.submit(req())
    assert rec.state == BuildState.QUEUED  # the registry said 404 (and the client remembers it)
    await h.wait_state(rec.id, BuildState.BUILT)
    got = await h.services.builds.get(rec.id)
    assert got.reason is None and not got.from_cache
    assert h.registry.has(rec.image)
    assert await h.images.exists(rec.image) is True


async def test_image_already_in_registry_is_ready_without_building(h):
    image = h.scheduler.image_for("octo", "repo", SHA1)
    h.registry.push(image)
    rec = await h.scheduler.submit(req())
    assert rec.state == BuildState.BUILT and rec.from_cache
    assert h.builder.jobs == []
    assert h.phases(rec.id) == ["built"]


async def test_same_sha_via_branch_and_pr_is_built_once(h):
    h.builder.hold = True
    a = await h.scheduler.submit(req(branch="main"))
    await h.builder.wait_running(1)
    b = await h.scheduler.submit(req(pr=7))
    assert b.id != a.id and b.job_id == a.job_id
    again = await h.scheduler.submit(req(branch="main"))
    assert again.id == a.id
    h.builder.release()
    await h.wait_state(a.id, BuildState.BUILT)
    await h.wait_state(b.id, BuildState.BUILT)
    assert len(h.builder.jobs) == 1
    await h.wait_event(b.id, Phase.BUILT)  # the follower hears "built" too


async def test_concurrency_cap_and_arrival_order(tmp_path, registry_double):
    h = await make_harness(tmp_path, registry_double, max_builds=2)
    try:
        h.builder.hold = True
        recs = [await h.scheduler.submit(req(sha=str(i) * 40, repo=f"r{i}")) for i in range(1, 6)]
        await h.builder.wait_running(2)
        await asyncio.sleep(0.2)
        assert len(h.builder.running) == 2
        assert [j.request.repo for j in h.builder.jobs] == ["r1", "r2"]
        h.builder.release()
        h.builder.hold = False
        for r in recs:
            await h.wait_state(r.id, BuildState.BUILT)
        assert [j.request.repo for j in h.builder.jobs] == ["r1", "r2", "r3", "r4", "r5"]
    finally:
        await h.close()


async def test_newer_sha_supersedes_running_and_queued(tmp_path, registry_double):
    h = await make_harness(tmp_path, registry_double, max_builds=1)
    try:
        h.builder.hold = True
        first = await h.scheduler.submit(req(SHA1, pr=3))
        await h.builder.wait_running(1)
        other = await h.scheduler.submit(req(SHA2, repo="other"))  # queued behind the cap
        second = await h.scheduler.submit(req(SHA3, pr=3))
        got = await h.services.builds.get(first.id)
        assert got.state == BuildState.CANCELLED and got.superseded_by == second.id
        assert first.job_id in h.builder.cancelled
        assert h.phases(first.id)[-1] == "cancelled"
        h.builder.hold = False
        h.builder.release()
        await h.wait_state(second.id, BuildState.BUILT)
        await h.wait_state(other.id, BuildState.BUILT)
        assert (await h.services.builds.get(first.id)).state == BuildState.CANCELLED
    finally:
        await h.close()


async def test_cancel_key_for_closed_pr(h):
    h.builder.hold = True
    rec = await h.scheduler.submit(req(pr=9))
    await h.builder.wait_running(1)
    cancelled = await h.scheduler.cancel_key(rec.supersede_key, "pull request closed")
    assert [r.id for r in cancelled] == [rec.id]
    got = await h.services.builds.get(rec.id)
    assert got.state == BuildState.CANCELLED and got.reason == "pull request closed"
    assert h.builder.running == {}


async def test_success_without_image_in_registry_is_a_failure(h):
    h.builder.push = False
    rec = await h.scheduler.submit(req())
    await h.wait_state(rec.id, BuildState.FAILED)
    got = await h.services.builds.get(rec.id)
    assert "not in the registry" in got.reason
    assert "built" not in h.phases(rec.id)


async def test_builder_failure_keeps_reason_and_log(h):
    h.builder.fail_with = "pip install failed"
    rec = await h.scheduler.submit(req())
    await h.wait_state(rec.id, BuildState.FAILED)
    got = await h.services.builds.get(rec.id)
    assert got.reason == "pip install failed"
    assert "Successfully built" in got.log_tail


async def test_registry_down_waits_instead_of_building(h):
    """A build held back by a registry that is down starts when the retry delay has
    passed on the clock, not earlier (even when the scheduler is woken meanwhile), and
    without anything but time passing."""
    h.registry.down = True
    rec = await h.scheduler.submit(req())
    await h.wait_event(rec.id, Phase.WAITING, "registry is not answering")
    assert h.builder.jobs == []
    assert (await h.services.builds.get(rec.id)).state == BuildState.QUEUED
    h.registry.down = False
    # another build wakes the scheduler and runs to its end: the held-back one is not due yet
    other = await h.scheduler.submit(req(SHA2, repo="other"))
    await h.wait_state(other.id, BuildState.BUILT)
    await h.clock.advance(RETRY_SECONDS - 1)
    assert [j.request.repo for j in h.builder.jobs] == ["other"]
    assert (await h.services.builds.get(rec.id)).state == BuildState.QUEUED
    await h.clock.advance(1)  # the delay is over: time alone starts it
    await h.wait_state(rec.id, BuildState.BUILT)
    assert [j.request.repo for j in h.builder.jobs] == ["other", "repo"]


async def test_rebuild_builds_even_when_image_exists(h):
    image = h.scheduler.image_for("octo", "repo", SHA1)
    h.registry.push(image)
    rec = await h.scheduler.submit(req(), rebuild=True)
    assert rec.state == BuildState.QUEUED
    await h.wait_state(rec.id, BuildState.BUILT)
    assert len(h.builder.jobs) == 1


async def test_restart_reattaches_running_build_once(tmp_path, registry_double):
    h = await make_harness(tmp_path, registry_double)
    h.builder.hold = True
    rec = await h.scheduler.submit(req())
    await h.builder.wait_running(1)
    await h.close(db=False)  # the process goes away; the build record stays running
    assert (await h.services.builds.get(rec.id)).state == BuildState.RUNNING
    db = h.services.db
    h2 = await make_harness(tmp_path, registry_double, db=db, hold=True)
    try:
        await h2.builder.wait_running(1)
        assert [j.build_id for j in h2.builder.jobs] == [rec.job_id]
        h2.builder.release()
        await h2.wait_state(rec.id, BuildState.BUILT)
        assert len(h2.builder.jobs) == 1
    finally:
        await h2.close()


def test_plan_submit_is_pure():
    r = req()
    assert plan_submit(r, "img:1", [], [], True, False).action is Action.READY
    assert plan_submit(r, "img:1", [], [], True, True).action is Action.QUEUE
    assert plan_submit(r, "img:1", [], [], None, False).action is Action.QUEUE
    assert plan_submit(r, "img:1", [], [], False, False).action is Action.QUEUE


def test_verify_outcome():
    assert verify_outcome(BuildOutcome(Phase.BUILT), True) == (BuildState.BUILT, "")
    assert verify_outcome(BuildOutcome(Phase.BUILT), False)[0] == BuildState.FAILED
    assert verify_outcome(BuildOutcome(Phase.BUILT), None)[0] == BuildState.FAILED
    assert verify_outcome(BuildOutcome(Phase.FAILED, "boom"), True) == (BuildState.FAILED, "boom")


def private_req(fake_github, sha: str = SHA2) -> BuildRequest:
    """A private repository in an installation that also holds another one."""
    fake_github.add_repo("octo/secret", private=True)
    fake_github.add_repo("octo/other", private=True)
    inst = fake_github.add_installation(["octo/secret", "octo/other"])
    return BuildRequest(owner="octo", repo="secret", sha=sha, clone_url="http://127.0.0.1:1/octo/secret.git",
                        branch="main", installation_id=inst.id, private=True)


def github_app(h: Harness, fake_github, tmp_path) -> GitHubApp:
    """The real App client against FakeGitHub; one try per request, so an injected 5xx is a failure."""
    return GitHubApp(h.services.session, settings_for(fake_github, tmp_path / "gh"),
                     policy=RetryPolicy(attempts=1, backoff=0.0))


async def test_clone_token_is_scoped_to_the_repository_with_contents_read(h, fake_github, tmp_path):
    h.services.github = github_app(h, fake_github, tmp_path)
    rec = await h.scheduler.submit(private_req(fake_github))
    await h.wait_state(rec.id, BuildState.BUILT)
    token = fake_github.tokens[h.builder.jobs[0].clone_token]
    assert token.repositories == {"secret"}  # not "octo/other", nor every repository of the installation
    assert token.permissions == {"contents": "read", "metadata": "read"}
    body = fake_github.token_requests()[-1].json
    assert body == {"repositories": ["secret"], "permissions": {"contents": "read"}}


async def test_private_repo_token_failure_waits_and_retries(h, fake_github, tmp_path):
    """GitHub down when the clone token is asked for: the build waits (and says why), and
    is tried again once the retry delay has passed on the clock."""
    h.services.github = github_app(h, fake_github, tmp_path)
    fake_github.inject("POST", "/app/installations/{installation_id}/access_tokens", Fault.server_error(502))
    rec = await h.scheduler.submit(private_req(fake_github))
    await h.wait_event(rec.id, Phase.WAITING, "token")
    got = await h.services.builds.get(rec.id)
    assert got.state == BuildState.QUEUED and h.builder.jobs == []
    assert fake_github.pending_faults() == 0 and len(fake_github.token_requests()) == 1
    await h.clock.advance(RETRY_SECONDS - 1)
    assert len(fake_github.token_requests()) == 1 and h.builder.jobs == []
    await h.clock.advance(1)
    await h.wait_state(rec.id, BuildState.BUILT)
    assert fake_github.tokens[h.builder.jobs[0].clone_token].repositories == {"secret"}


async def test_a_build_that_outlives_its_timeout_is_stopped_by_the_backstop(tmp_path, registry_double):
    """A builder that never returns (its own timeout broken or lost) is stopped at the
    backstop (``BuildDeadlines.backstop`` after it started), and the build fails saying so."""
    from bot.builders.base import build_deadlines

    h = await make_harness(tmp_path, registry_double, hold=True, build_timeout=600)
    backstop = build_deadlines(h.services.settings).backstop
    assert backstop > 600 + h.services.settings.build_start_timeout  # after the builder's own deadlines
    try:
        rec = await h.scheduler.submit(req())
        await h.builder.wait_running(1)
        await h.clock.advance(backstop - 1)
        assert (await h.services.builds.get(rec.id)).state == BuildState.RUNNING
        assert h.builder.cancelled == [] and h.builder.running
        await h.clock.advance(1)
        await h.wait_state(rec.id, BuildState.FAILED)
        got = await h.services.builds.get(rec.id)
        assert got.reason == "build timed out after 600 s"
        assert h.builder.cancelled == [rec.job_id] and h.builder.running == {}
    finally:
        await h.close()


class CountingReads:
    """Counts the store's reads of a job's active records (the per-event fan-out query)."""

    def __init__(self, db: Database) -> None:
        self.n = 0
        self._fetchall = db.fetchall

        async def fetchall(sql, params=()):
            if "WHERE job_id=?" in sql:
                self.n += 1
            return await self._fetchall(sql, params)

        db.fetchall = fetchall  # type: ignore[method-assign]


async def test_log_lines_fan_out_without_a_store_read_each(tmp_path, registry_double):
    """Every log line reaches each record sharing the job, and a record that joins or
    leaves mid-build is seen at once; the store is read per change, not per line."""
    h = await make_harness(tmp_path, registry_double, hold=True)
    try:
        reads = CountingReads(h.services.db)
        branch = await h.scheduler.submit(req(SHA1))
        await h.builder.wait_held(1)  # its own phases and lines are written: the store is quiet
        emit = h.builder.emits[branch.job_id]

        before = reads.n
        for i in range(200):
            await emit(ProgressEvent(Phase.BUILDING, f"line {i}"))
        assert reads.n - before <= 1  # 200 lines, at most one read (the first after the last write)
        assert sum(1 for r, e in h.events if r.id == branch.id and e.message.startswith("line ")) == 200

        pr = await h.scheduler.submit(req(SHA1, pr=7))  # follows the running job: a write
        assert pr.job_id == branch.job_id
        await emit(ProgressEvent(Phase.BUILDING, "after the PR joined"))
        got = {r.id for r, e in h.events if e.message == "after the PR joined"}
        assert got == {branch.id, pr.id}

        await h.scheduler.cancel_key(pr.supersede_key, "PR closed")  # the PR leaves: a write
        await emit(ProgressEvent(Phase.BUILDING, "after the PR left"))
        got = {r.id for r, e in h.events if e.message == "after the PR left"}
        assert got == {branch.id}

        before = reads.n
        for i in range(100):
            await emit(ProgressEvent(Phase.BUILDING, f"more {i}"))
        assert reads.n - before <= 1
        h.builder.release()
        await h.wait_state(branch.id, BuildState.BUILT)
    finally:
        await h.close()


async def test_image_status_is_decided_by_the_scheduler(h):
    """The launcher and the badge ask here whether a commit's image is there (record, else registry)."""
    status = await h.scheduler.image_status("octo", "repo", SHA1)
    assert status.record is None and status.in_registry is False and not status.built and not status.active
    h.builder.hold = True
    rec = await h.scheduler.submit(req())
    await h.builder.wait_running(1)
    asked = len(h.registry.manifest_requests())
    status = await h.scheduler.image_status("octo", "repo", SHA1)
    assert status.active and not status.built
    assert len(h.registry.manifest_requests()) == asked  # the record says enough
    h.builder.release()
    await h.wait_state(rec.id, BuildState.BUILT)
    asked = len(h.registry.manifest_requests())
    status = await h.scheduler.image_status("octo", "repo", SHA1)
    assert status.built and len(h.registry.manifest_requests()) == asked
    # no record of ours, but the registry has it (e.g. a BinderHub sharing the prefix built it)
    h.registry.push(h.scheduler.image_for("octo", "repo", SHA2))
    status = await h.scheduler.image_status("octo", "repo", SHA2)
    assert status.record is None and status.in_registry is True and status.built
