"""Never miss a push: what GitHub could not deliver while the service was down is recovered.

(a) pushes and a pull request sent while the service is stopped fail at GitHub; on
start the service asks GitHub to redeliver them (deliveries API) and every commit gets
its check run, the PR one comment, nothing twice;
(b) a repository whose events GitHub never recorded: reconcile alone builds its
branch heads and open PR heads; an unchanged repository then costs only 304s;
removed repositories are forgotten.
"""
from __future__ import annotations

import socket
import time

from bot.recovery.service import Timing
from tests.feedback_harness import FORK, REPO, Bot

FAST = Timing(start_delay=0.1, reconcile_delay=0.2, recheck=0.3, redeliver_pace=0.0, retry_base=0.2,
              retry_cap=1.0, prune_every=1e6)
NO_RECONCILE = Timing(start_delay=0.1, reconcile_delay=1e6, recheck=0.3, redeliver_pace=0.0, retry_base=0.2,
                      retry_cap=1.0, prune_every=1e6)


def closed_port_url() -> str:
    """A loopback URL nothing listens on: the service is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/webhooks/github"


def bot_runs(fake, sha: str, repo: str = REPO) -> list[dict]:
    return [r for r in fake.check_runs_for(repo, sha) if r["name"] == "Binder"]


async def send_while_down(fake, inst) -> tuple[dict[str, str], list[str]]:
    """Two pushes (two branches) and a PR opened (its own branch), all failing at GitHub."""
    fake.add_repo(FORK)
    offline = Bot(fake, None, None, None, None, inst, None)  # payload helpers only
    shas = {"main": offline.commit("Fix the docs", branch="main"),
            "add-altair": offline.commit("Add altair", branch="add-altair"),
            "pr": offline.commit("Try seaborn", branch="try-seaborn")}
    fake.hook_url = closed_port_url()
    guids = []
    for event, body in (("push", offline.push(shas["main"], branch="main")),
                        ("push", offline.push(shas["add-altair"], branch="add-altair")),
                        ("pull_request", offline.pr("opened", shas["pr"]))):
        if event == "pull_request":
            body["pull_request"]["head"]["ref"] = "try-seaborn"
            fake.repo(REPO).pulls[7]["head"]["ref"] = "try-seaborn"
        entry = await fake.send_webhook(event, body)
        assert entry["status_code"] == 0 and entry["status"] == "failed to connect to host"
        guids.append(entry["guid"])
    return shas, guids


async def test_a_pushes_and_a_pr_sent_while_down_are_redelivered_built_and_reported_once(fake_github,
                                                                                      prebuild_bot):
    fake = fake_github
    inst = fake.add_installation([REPO])
    shas, guids = await send_while_down(fake, inst)

    started = time.monotonic()
    bot = await prebuild_bot(inst=inst, recovery=FAST)
    fake.hook_url = str(bot.client.make_url("/webhooks/github"))
    await bot.until(lambda: all(bot_runs(fake, s) and bot_runs(fake, s)[-1]["status"] == "completed"
                                for s in shas.values()) and bot.comments(), timeout=30)
    restart_to_last_run = time.monotonic() - started
    await bot.settle()
    await fake.drain_hooks()

    # every delivery GitHub could not deliver was asked for again and came back with its GUID
    for guid in guids:
        attempts = fake.deliveries_of(guid)
        assert [a["redelivery"] for a in attempts][:2] == [False, True], attempts
        assert attempts[-1]["status"] == "OK"
        assert (await bot.services.deliveries.get(guid))["state"] == "done"
    assert len(fake.calls("POST", "/app/hook/deliveries/{delivery_id}/attempts")) == 3
    # each commit: one Binder check run, successful; the PR: exactly one comment; each sha built once
    for name, sha in shas.items():
        runs = bot_runs(fake, sha)
        assert len(runs) == 1, (name, runs)
        assert runs[0]["conclusion"] == "success"
    assert len(bot.comments(7)) == 1
    # the store knows it never made a run for these new commits: none were listed before creating
    assert fake.calls("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs") == []
    built = [j.request.sha for j in bot.builder.jobs]
    assert sorted(built) == sorted(shas.values())
    # a later round finds nothing more to ask for
    recovery = bot.services.recovery
    from bot.recovery.redeliver import redeliver_round
    again = await redeliver_round(bot.services.github, bot.services.deliveries, recovery.checkpoints, pace=0)
    assert again.requested == 0
    print(f"\nrestart to the last missed commit's check run: {restart_to_last_run:.2f} s")


async def test_a_redelivery_round_is_bounded_and_resumes_without_asking_twice(fake_github, prebuild_bot):
    fake = fake_github
    inst = fake.add_installation([REPO])
    shas, guids = await send_while_down(fake, inst)
    bot = await prebuild_bot(inst=inst)  # loops idle: rounds driven by hand
    fake.hook_url = closed_port_url()  # redeliveries fail too: nothing reaches the store yet
    from bot.recovery.redeliver import CHECKPOINT, redeliver_round
    from bot.store.checkpoints import Checkpoints

    cp = Checkpoints(bot.services.db)

    async def redeliver_round_(limit: int):
        return await redeliver_round(bot.services.github, bot.services.deliveries, cp, limit=limit, pace=0,
                                     metrics=bot.services.metrics)

    first = await redeliver_round_(2)
    assert first.requested == 2 and not first.complete
    assert await cp.get(CHECKPOINT) is None  # cut short: the checkpoint stays
    await fake.drain_hooks()
    # a "restart": a new round (same store) asks for the third, and again for the two whose redelivery failed
    second = await redeliver_round_(10)
    assert second.requested == 3 and second.complete
    asked = [r.path.split("/")[-2] for r in fake.calls("POST", "/app/hook/deliveries/{delivery_id}/attempts")]
    assert len(asked) == len(set(asked)) == 5  # never the same attempt twice
    await fake.drain_hooks()
    fake.hook_url = str(bot.client.make_url("/webhooks/github"))
    third = await redeliver_round_(10)
    assert third.requested == 3
    await fake.drain_hooks()
    await bot.settle()
    assert [(await bot.services.deliveries.get(g))["state"] for g in guids] == ["done"] * 3
    final = await redeliver_round_(10)
    assert final.requested == 0 and final.complete and await cp.get(CHECKPOINT) is not None
    m = bot.services.metrics.registry
    assert m.get_sample_value("binder_prebuild_redelivery_requests_total", {"outcome": "accepted"}) == 8


async def test_b_reconcile_alone_builds_heads_github_never_told_us_about(fake_github, prebuild_bot):
    fake = fake_github
    quiet = "octo/quiet"
    fake.add_repo(quiet)
    main = fake.repo(quiet).branches["main"]
    feature = fake.add_commit(quiet, {"requirements.txt": "numpy\n"}, branch="feature", message="Feature")
    pr_head = fake.add_commit(quiet, {"requirements.txt": "pandas\n"}, branch="pr-head", message="PR work")
    fake.add_pull(quiet, 3, head_sha=pr_head, head_ref="pr-head")
    fake.add_pull(quiet, 4, head_sha=feature, head_ref="feature", state="closed")
    inst = fake.add_installation([quiet])
    bot = await prebuild_bot(inst=inst, recovery=FAST)
    await bot.until(lambda: all(bot_runs(fake, s, quiet) for s in (main, feature, pr_head))
                    and fake.comments_on(quiet, 3), timeout=30)
    await bot.settle()
    assert fake.hook_deliveries == []  # nothing was ever sent: reconcile alone
    for sha in (main, feature, pr_head):
        runs = bot_runs(fake, sha, quiet)
        assert len(runs) == 1 and runs[0]["conclusion"] == "success", runs
    assert len([c for c in fake.comments_on(quiet, 3) if c["body"].startswith("<!-- binder-prebuild -->")]) == 1
    assert fake.comments_on(quiet, 4) == []  # a closed PR is not reconciled
    assert sorted(j.request.sha for j in bot.builder.jobs) == sorted({main, feature, pr_head})
    # the heads it saw are where the launcher resolves refs from, as if pushes had told us
    from bot.store.heads import HeadStore
    heads = HeadStore(bot.services.db)
    assert (await heads.lookup(quiet, "feature")).sha == feature
    assert (await heads.lookup(quiet, "HEAD")).sha == main

    # nothing changed: the next round costs conditional lists only (304), builds nothing
    recovery = bot.services.recovery
    before = len(fake.requests)
    result = await recovery.reconciler.round()
    repo_calls = [r for r in fake.requests[before:] if r.path.startswith(f"/repos/{quiet}/")]
    assert result.submitted == 0 and result.unchanged == 1
    assert repo_calls and all(r.status == 304 for r in repo_calls), [(r.path, r.status) for r in repo_calls]

    # one branch moves: only that head is submitted
    moved = fake.add_commit(quiet, {"requirements.txt": "numpy==2\n"}, branch="feature", message="Bump")
    result = await recovery.reconciler.round()
    assert result.submitted == 1
    await bot.settle()
    assert len(bot_runs(fake, moved, quiet)) == 1

    # the repository is removed from the installation: it is forgotten
    inst.repos.clear()
    await recovery.reconciler.round()
    assert await bot.services.gh_state.repos(inst.id) == []
    assert await recovery.checkpoints.heads(quiet) == {}


async def test_b_reconcile_skips_heads_the_store_already_knows(fake_github, prebuild_bot):
    """Heads handled through webhooks are not submitted again, and the config's branches are honoured."""
    fake = fake_github
    quiet = "octo/picky"
    fake.add_repo(quiet, files={".github/binder.yml": "branches: [main]\n", "README.md": "x"})
    other = fake.add_commit(quiet, {"a.txt": "1"}, branch="other", message="Other")
    inst = fake.add_installation([quiet])
    bot = await prebuild_bot(inst=inst)
    recovery = bot.services.recovery
    result = await recovery.reconciler.round()
    await bot.settle()
    assert result.submitted == 1  # main only: `other` is not in the config's branches
    assert bot_runs(fake, other, quiet) == []
    assert len(bot.builder.jobs) == 1
    again = await recovery.reconciler.round()
    assert again.submitted == 0 and len(bot.builder.jobs) == 1


async def test_a_reconcile_round_is_spread_over_the_interval(fake_github, prebuild_bot):
    from bot.recovery.reconcile import pace

    assert pace(4, 1800 * 0.8) == 360.0 and pace(1, 100) == 0.0 and pace(10, 0) == 0.0
    names = [f"octo/s{i}" for i in range(4)]
    for n in names:
        fake_github.add_repo(n)
    inst = fake_github.add_installation(names)
    bot = await prebuild_bot(inst=inst)
    reconciler = bot.services.recovery.reconciler
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    reconciler.sleep = record
    result = await reconciler.round(spread=12.0)
    assert result.repositories == 4 and waits == [3.0, 3.0, 3.0]  # between repositories, not after the last
