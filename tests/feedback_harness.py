"""The whole App with GitHub faked: signed deliveries in through the real webhook route,
GitHub API calls out to FakeGitHub, builds run by tests/fake_builders.InstantBuilder,
which pushes to tests/fake_registry.FakeRegistry, read by the real RegistryClient.

Used by tests/test_feedback_*.py through the ``prebuild_bot`` fixture (tests/fixtures/feedback.py).
``create_app`` is the real factory; only ``make_builder`` is replaced and the image
lookup pointed at the registry double, as a test of the webhook → decision → scheduler
→ feedback path needs no engine.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bot.app
from bot.appkeys import SERVICES
from bot.github.client import RetryPolicy
from bot.model import BuildState
from bot.registry import RegistryClient
from bot.services import Services
from tests import payloads
from tests.fake_builders import InstantBuilder
from tests.fake_github import FakeGitHub, FakeInstallation
from tests.fake_registry import FakeRegistry

REPO = "binder-examples/requirements"
FORK = "jdoe-contrib/requirements"
PUBLIC_URL = "http://binder.test"
FAST_RETRIES = RetryPolicy(backoff=0.01, max_backoff=0.05, jitter=0.0, timeout=10.0)


@dataclasses.dataclass
class Bot:
    fake: FakeGitHub
    client: Any  # aiohttp TestClient
    services: Services
    builder: InstantBuilder
    images: FakeRegistry  # what the builder pushes to and the service's RegistryClient reads
    inst: FakeInstallation
    data_dir: Path

    @property
    def settings(self):
        return self.services.settings

    @property
    def reporter(self):
        assert self.services.feedback is not None
        return self.services.feedback

    def github_now(self) -> str:
        """GitHub's clock for the payloads made here: a minute later at each call (event order)."""
        self._clock = getattr(self, "_clock", 0) + 1
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_728_000_000 + 60 * self._clock))

    # sending ------------------------------------------------------------------
    async def send(self, event: str, body: dict[str, Any], delivery_id: str | None = None) -> str:
        delivery_id = delivery_id or str(uuid.uuid4())
        self._sent = getattr(self, "_sent", 0) + 1  # GitHub's bodies differ per event: no accidental replay
        headers, raw = payloads.signed(event, payloads.vary(body, self._sent),
                                       self.settings.github_webhook_secret, delivery_id=delivery_id)
        resp = await self.client.post("/webhooks/github", data=raw, headers=headers)
        assert resp.status in (200, 202), (resp.status, await resp.text())
        return delivery_id

    # payloads about the fake repository ------------------------------------------
    def commit(self, message: str = "Update", files: dict[str, str] | None = None, *, branch: str | None = "add-altair",
               repo: str = REPO) -> str:
        if branch is not None and branch not in self.fake.repo(repo).branches:
            self.fake.repo(repo).branches[branch] = self.fake.repo(repo).branches["main"]
        return self.fake.add_commit(repo, files or {"requirements.txt": f"numpy # {uuid.uuid4().hex[:6]}\n"},
                                    branch=branch, message=message)

    def push(self, sha: str, branch: str = "add-altair", message: str | None = None) -> dict[str, Any]:
        body = payloads.rewrite(payloads.load("push.branch"), sha=sha, installation_id=self.inst.id)
        body["ref"] = f"refs/heads/{branch}"
        body["head_commit"]["message"] = message or self.fake.repo(REPO).commits[sha].message
        return body

    def pr(self, action: str, sha: str, number: int = 7, *, fork: bool = False) -> dict[str, Any]:
        name = "pull_request.opened.fork" if fork else "pull_request.opened"
        body = payloads.rewrite(payloads.load(name), sha=sha, installation_id=self.inst.id)
        body["action"] = action
        body["number"] = body["pull_request"]["number"] = number
        body["pull_request"]["base"]["sha"] = self.fake.repo(REPO).branches["main"]
        body["pull_request"]["updated_at"] = self.github_now()  # when GitHub saw this head
        if action == "closed":
            body["pull_request"]["state"] = "closed"
        # what GET /pulls/{n} answers (commands and re-runs ask)
        self.fake.add_pull(REPO, number, head_sha=sha, head_ref=body["pull_request"]["head"]["ref"],
                           head_repo=FORK if fork else None,
                           state="closed" if action == "closed" else "open")
        return body

    def user_comment(self, body: str, login: str, number: int = 7, *, user_type: str = "User") -> dict[str, Any]:
        """An issue_comment.created payload for a comment that also exists in FakeGitHub (for reactions)."""
        cid = self.fake.next_id()
        user = self.fake._user(login, user_type)
        self.fake.comments[cid] = {"id": cid, "body": body, "user": user, "_repo": REPO, "_issue": number}
        payload = payloads.rewrite(payloads.load("issue_comment.created"), installation_id=self.inst.id)
        payload["comment"].update({"id": cid, "body": body, "user": {**payload["comment"]["user"], **user},
                                   "created_at": self.github_now()})
        payload["issue"]["number"] = number
        payload["sender"] = {**payload["sender"], **user}
        return payload

    def rerequest(self, sha: str, *, name: str = "Binder", app_id: int | None = None) -> dict[str, Any]:
        body = payloads.rewrite(payloads.load("check_run.rerequested"), sha=sha, installation_id=self.inst.id)
        body["check_run"]["name"] = name
        body["check_run"]["app"]["id"] = app_id or self.fake.app_id
        return body

    def reactions(self, payload: dict[str, Any]) -> list[str]:
        return [r["content"] for r in self.fake.reactions if r["_comment"] == payload["comment"]["id"]]

    def replies(self, number: int = 7) -> list[str]:
        return [c["body"] for c in self.fake.comments_on(REPO, number)
                if c["user"]["type"] == "Bot" and not c["body"].startswith("<!-- binder-prebuild -->")]

    # waiting --------------------------------------------------------------------
    async def settle(self, timeout: float = 30.0) -> None:
        """Until every delivery is processed, no build is active and all feedback is sent."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        stable = 0
        while True:
            depth = await self.services.deliveries.depth()
            active = await self.services.builds.in_state(BuildState.QUEUED, BuildState.RUNNING)
            idle = not depth and not active and not self.services.scheduler.running_jobs()
            if idle:
                await self.reporter.drain()
                stable += 1
                if stable >= 3:
                    return
            else:
                stable = 0
            if loop.time() > deadline:
                raise AssertionError(f"not settled: {depth} deliveries, {len(active)} active builds")
            await asyncio.sleep(0.02)

    async def until(self, predicate: Callable[[], Any], timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if loop.time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.02)

    # looking ----------------------------------------------------------------------
    def runs(self, sha: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.fake.check_runs_for(REPO, sha) if r["name"] == "Binder"]

    def run(self, sha: str) -> dict[str, Any]:
        runs = self.runs(sha)
        assert len(runs) == 1, f"{len(runs)} check runs on {sha[:7]}: {[r['conclusion'] for r in runs]}"
        return runs[0]

    def comments(self, number: int = 7) -> list[dict[str, Any]]:
        return [c for c in self.fake.comments_on(REPO, number)
                if c["body"].startswith("<!-- binder-prebuild -->") and c["user"]["type"] == "Bot"]

    def comment(self, number: int = 7) -> dict[str, Any]:
        found = self.comments(number)
        assert len(found) == 1, f"{len(found)} bot comments on #{number}"
        return found[0]

    def comment_edits(self, number: int = 7) -> int:
        ids = {c["id"] for c in self.comments(number)}
        return len([r for r in self.fake.calls("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}")
                    if r.path.rsplit("/", 1)[-1].isdigit() and int(r.path.rsplit("/", 1)[-1]) in ids
                    and r.status == 200])


async def start_bot(fake: FakeGitHub, settings_factory: Callable[..., Any], aiohttp_client: Any, monkeypatch: Any,
                    *, registry: tuple[FakeRegistry, str], data_dir: Path, inst: FakeInstallation | None = None,
                    builder: InstantBuilder | None = None, recovery: Any = None, **overrides: Any) -> Bot:
    images, registry_url = registry
    builder = builder if builder is not None else InstantBuilder(images)
    if inst is None:
        fake.add_repo(FORK)
        inst = fake.add_installation([REPO])
        fake.repo(REPO).collaborators.update({"octo-maintainer": "write", "drive-by": "read"})
    values = dict(public_url=PUBLIC_URL, data_dir=data_dir)
    values.update(overrides)
    settings = settings_factory(**values)
    if recovery is None:  # other features' tests: no background redelivery/reconcile requests to GitHub
        from bot.recovery.service import Timing
        recovery = Timing(start_delay=1e6, prune_every=1e6)
    app = bot.app.create_app(settings, builder=lambda services: builder, images=lambda services: RegistryClient(
        services.session, registry_url, attempts=2, backoff=0.01), recovery=recovery)
    client = await aiohttp_client(app)
    services = app[SERVICES]
    assert services.github is not None
    services.github.policy = FAST_RETRIES
    dispatcher = services.dispatcher
    if dispatcher is not None:  # a failed delivery comes back quickly, as it would after its backoff
        dispatcher.backoff_base, dispatcher.backoff_cap = 0.05, 0.2
    return Bot(fake, client, services, builder, images, inst, data_dir)
