"""SIGKILL the service in the middle of a burst of pushes and PR updates; afterwards GitHub tells the truth.

The service is the real app in its own process (tests/crash_serve.py: only the build
backend is the shared instant builder, each build taking a moment) talking to FakeGitHub
and pushing to the registry double (tests/fake_registry.py), both in this process. Rounds of commits land
on two branches and on the head branches of two pull requests; each round's webhooks
(push, and opened/synchronize) are sent as GitHub would, a few at a time. Kills land
- between a delivery's durable write and its answer (tests/test_crash.kill_in_window);
- across a build and its GitHub feedback: the process is frozen, and killed when the
  store shows a build running, or finished while its check run still says otherwise;
- at random moments.
Unanswered deliveries are sent again after the next round's (GitHub's redelivery, late:
their heads are no longer the newest).

Afterwards, read from FakeGitHub: every PR has exactly one comment, naming its newest
head as ready; every newest head's check run is a success; no check run anywhere is
left queued or in progress; no delivery is left undone and no build active.
"""
from __future__ import annotations

import asyncio
import random
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from tests import payloads
from tests.fake_github import Fault
from tests.test_crash import SECRET, Service, free_port, kill_in_window, query

REPO = "binder-examples/requirements"
BRANCHES = ["topic-0", "topic-1"]
PRS = {1: "pr-1", 2: "pr-2"}
ROUNDS = 8
MARKER = "<!-- binder-prebuild -->"
ROOT = Path(__file__).resolve().parent.parent
CHECK_PATCH = "/repos/{owner}/{repo}/check-runs/{check_run_id}"
COMMENT_PATCH = "/repos/{owner}/{repo}/issues/comments/{comment_id}"


class Burst:
    """The repository's history in FakeGitHub, the deliveries about it, and what GitHub shows."""

    def __init__(self, fake, inst_id: int) -> None:
        self.fake, self.inst_id = fake, inst_id
        self.heads: dict[str, str] = {}  # branch -> newest sha
        self.deliveries: list[dict] = []  # {"id", "event", "raw", "headers", "answers"}

    def _delivery(self, event: str, body: dict) -> dict:
        headers, raw = payloads.signed(event, body, SECRET, delivery_id=str(uuid.uuid4()))
        d = {"id": headers["X-GitHub-Delivery"], "event": event, "headers": headers, "raw": raw, "answers": []}
        self.deliveries.append(d)
        return d

    def round(self, r: int) -> list[dict]:
        """One commit on every branch (GitHub's state moves first), and the webhooks about them."""
        out = []
        for branch in BRANCHES + list(PRS.values()):
            repo = self.fake.repo(REPO)
            if branch not in repo.branches:
                repo.branches[branch] = repo.branches["main"]
            sha = self.fake.add_commit(REPO, {"requirements.txt": f"numpy # {branch} {r}\n"}, branch=branch,
                                       message=f"{branch} round {r}")
            self.heads[branch] = sha
            push = payloads.rewrite(payloads.load("push.branch"), sha=sha, installation_id=self.inst_id)
            push["ref"] = f"refs/heads/{branch}"
            push["head_commit"]["message"] = f"{branch} round {r}"
            out.append(self._delivery("push", push))
        for number, branch in PRS.items():
            sha = self.heads[branch]
            body = payloads.rewrite(payloads.load("pull_request.opened"), sha=sha, installation_id=self.inst_id)
            body["action"] = "opened" if r == 0 else "synchronize"
            body["number"] = body["pull_request"]["number"] = number
            body["pull_request"]["head"]["ref"] = branch
            body["pull_request"]["base"]["sha"] = self.fake.repo(REPO).branches["main"]
            self.fake.add_pull(REPO, number, head_sha=sha, head_ref=branch)
            out.append(self._delivery("pull_request", body))
        return out

    def unanswered(self) -> list[dict]:
        """What GitHub still has to deliver: no 2xx yet (cut off by a kill, or not sent before it)."""
        return [d for d in self.deliveries if not any(a in (200, 202) for a in d["answers"])]

    def problems(self) -> list[str]:
        """Everything FakeGitHub shows that the newest heads contradict (empty: all true)."""
        out = []
        runs = [r for r in self.fake.check_runs_for(REPO) if r["name"] == "Binder"]
        for r in runs:
            if r["status"] != "completed":
                out.append(f"check run {r['id']} on {r['head_sha'][:7]} left {r['status']}")
        for branch, sha in self.heads.items():
            on_head = sorted((r for r in runs if r["head_sha"] == sha), key=lambda r: r["id"])
            if not on_head:
                out.append(f"no check run on {branch}'s head {sha[:7]}")
            elif (on_head[-1]["status"], on_head[-1]["conclusion"]) != ("completed", "success"):
                out.append(f"{branch}'s head {sha[:7]}: check run {on_head[-1]['status']}/"
                           f"{on_head[-1]['conclusion']} ({on_head[-1]['output'].get('title')})")
        for number, branch in PRS.items():
            ours = [c for c in self.fake.comments_on(REPO, number)
                    if c["body"].startswith(MARKER) and c["user"]["type"] == "Bot"]
            head = self.heads[branch]
            if len(ours) != 1:
                out.append(f"PR #{number}: {len(ours)} bot comments")
            elif head not in ours[0]["body"] or "**Ready**" not in ours[0]["body"]:
                named = [s[:7] for s in self.fake.repo(REPO).commits if s in ours[0]["body"]]
                out.append(f"PR #{number}: comment names {named}, not ready at head {head[:7]}")
        return out


async def send(service: Service, batch: list[dict], *, db: Path, kill_after: int | None = None,
               concurrency: int = 4) -> bool:
    """Send ``batch`` (a few at a time, in order); with ``kill_after``, kill once that many were answered."""
    queue = list(reversed(batch))
    inflight: set[str] = set()
    answered, killed = 0, False

    async def sender(session: aiohttp.ClientSession) -> None:
        nonlocal answered, killed
        while queue and not killed:
            d = queue.pop()
            inflight.add(d["id"])
            try:
                async with session.post(f"{service.url}/webhooks/github", data=d["raw"], headers=d["headers"]) as r:
                    await r.read()
                    d["answers"].append(r.status)
                    answered += 1
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                d["answers"].append(None)
                continue
            finally:
                inflight.discard(d["id"])
            if kill_after is not None and answered >= kill_after and not killed:
                killed = True
                await kill_in_window(service, db, inflight, tries=100)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                     connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        await asyncio.gather(*(sender(s) for _ in range(concurrency)))
    return killed


async def kill_across_feedback(service: Service, db: Path, timeout: float = 20.0) -> str:
    """Kill once the store has a build finished and every delivery done, while its check run still says otherwise.

    GitHub fails the edits meanwhile (the caller injects 502s), so the window is wide;
    the process is frozen while the store is read from outside.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        service.freeze()
        left = query(db, "SELECT COUNT(*) FROM deliveries WHERE state != 'done'")[0][0]
        unsaid = query(
            db, "SELECT COUNT(*) FROM builds b LEFT JOIN check_runs c ON c.full_name = b.owner || '/' || b.repo"
                " AND c.sha = b.sha WHERE b.state IN ('built','failed','cancelled')"
                " AND (c.status IS NULL OR c.status NOT LIKE 'completed%')")[0][0]
        if unsaid and not left:
            service.kill()
            return f"finished but not yet said {unsaid}, deliveries all done"
        service.thaw()
        await asyncio.sleep(0.005)
    service.kill()
    return "timeout"


async def settled(service: Service, db: Path, burst: Burst, timeout: float = 90.0) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    problems = ["not checked"]
    while loop.time() < deadline:
        left = query(db, "SELECT COUNT(*) FROM deliveries WHERE state != 'done'")[0][0]
        active = query(db, "SELECT COUNT(*) FROM builds WHERE state IN ('queued','running')")[0][0]
        problems = burst.problems()
        if not left and not active and not problems:
            return []
        if service.proc is not None and service.proc.poll() is not None:
            return [f"the service exited with {service.proc.returncode}:\n{service.log_tail()}"]
        await asyncio.sleep(0.2)
    return problems + [f"deliveries left {left}, builds active {active}"] + store_rows(db, problems)


def store_rows(db: Path, problems: list[str]) -> list[str]:
    """What the store holds about each sha a problem names (to tell a lost write from a wrong decision)."""
    out = []
    for short in sorted({w for p in problems for w in p.replace("'", " ").split() if len(w) == 7
                         and all(c in "0123456789abcdef" for c in w)}):
        for table, cols in (("builds", "job_id, attempt, state, reason, superseded_by, created_at"),
                            ("check_runs", "check_run_id, status, updated_at"),
                            ("check_run_creates", "started_at")):
            for row in query(db, f"SELECT {cols} FROM {table} WHERE sha LIKE ?", short + "%"):
                out.append(f"store {table} {short}: {tuple(row)}")
    return out


async def test_sigkill_mid_burst_leaves_no_check_run_or_comment_contradicting_the_newest_heads(
        tmp_path, fake_github, registry_double):
    registry, registry_url = registry_double  # in this process: like a registry, it outlives the kills
    rng = random.Random(1515)
    inst = fake_github.add_installation([REPO])
    burst = Burst(fake_github, inst.id)
    data_dir, logs = tmp_path / "data", tmp_path / "logs"
    logs.mkdir()
    db = data_dir / "binder-prebuild.sqlite"
    service = Service(data_dir, free_port(), logs, command=[sys.executable, "-m", "tests.crash_serve"], cwd=ROOT,
                      extra_env={"GITHUB_APP_ID": str(fake_github.app_id), "GITHUB_PRIVATE_KEY": fake_github.private_key,
                                 "GITHUB_API_URL": fake_github.url, "PUBLIC_URL": "http://binder.test",
                                 "CRASH_BUILD_SECONDS": "0.15", "MAX_CONCURRENT_BUILDS": "3",
                                 "REGISTRY_URL": registry_url})
    kills: list[str] = []
    try:
        await service.start()
        for r in range(ROUNDS):
            # this round's webhooks, then GitHub's redelivery of what got no answer before the
            # last kill: late, about heads the branches have moved on from
            late = burst.unanswered()
            batch = burst.round(r) + late
            kind = r % 3 if r < ROUNDS - 2 else ("first-answer", "none")[r - (ROUNDS - 2)]
            if kind == 0:  # a kill while this round's webhooks come in
                if await send(service, batch, db=db, kill_after=rng.randint(1, len(batch) - 1)):
                    kills.append(f"round {r}: mid-delivery")
            elif kind == "first-answer":  # the PR updates of this round arrive only after the next round's
                if await send(service, batch, db=db, kill_after=1, concurrency=1):
                    kills.append(f"round {r}: after the first answer")
            elif kind == "none":
                await send(service, batch, db=db)
            elif kind == 1:  # a kill across a build and its feedback: GitHub failing the edits meanwhile
                for path in (CHECK_PATCH, COMMENT_PATCH):
                    fake_github.inject("PATCH", path, *[Fault.server_error(502) for _ in range(400)])
                await send(service, batch, db=db)
                kills.append(f"round {r}: across feedback ({await kill_across_feedback(service, db)})")
                fake_github.clear_faults()
            else:  # a kill at a random moment while the round is processed
                await send(service, batch, db=db)
                await asyncio.sleep(rng.uniform(0.0, 0.4))
                service.kill()
                kills.append(f"round {r}: at random")
            if service.proc is None or service.proc.poll() is not None:
                await service.start()
        await send(service, burst.unanswered()[::-1], db=db)  # the newest first, the rest late
        problems = await settled(service, db, burst)
    finally:
        code = service.stop()
    print(f"\nkills: {kills}; deliveries sent {len(burst.deliveries)}, "
          f"answered only after a restart {sum(d['answers'][0] != 202 for d in burst.deliveries)}")
    assert len(kills) >= ROUNDS - 2, kills
    assert any("finished but not yet said" in k for k in kills), kills
    assert problems == [], "\n".join(problems) + f"\nkills: {kills}\n{service.log_tail()}"
    assert code == 0, f"the service did not stop cleanly ({code}):\n{service.log_tail()}"
    done = query(db, "SELECT COUNT(*) FROM delivery_attempts WHERE outcome='done'")[0][0]
    stored = query(db, "SELECT COUNT(*) FROM deliveries")[0][0]
    assert done == stored  # and each stored delivery completed exactly once
    assert [d["id"] for d in burst.deliveries if not any(a in (200, 202) for a in d["answers"])] == []
    assert all(registry.has(img) for (img,) in query(db, "SELECT image FROM builds WHERE state='built'"))
