"""Anonymous requests cannot spend GitHub quota or the build queue (issue 11, items 3, 4, 5).

* every GitHub call caused by a web request passes a per-client limit first, answers are
  cached (not-found ones briefly too), and an installation's calls are bounded per hour;
* a made-up sha builds nothing: it must exist in the repository first, and a check run is
  only written for a sha GitHub knows (a 422 is not retried);
* the per-client limits key on the forwarded address only behind configured trusted proxies.
"""
from __future__ import annotations

import ipaddress

import pytest

from bot.model import BuildRequest, Trigger
from launcher.client_ip import client_address, parse_trusted
from tests.feedback_harness import REPO
from tests.fake_clock import ManualClock
from tests.real_hub import free_port, parse_sse

REPO_PATHS = r"/repos/.*"
CHECK_RUNS = "/repos/{owner}/{repo}/check-runs"
MADE_UP = "1234567890abcdef" * 2 + "12345678"


async def start(launcher, clock=None, **settings):
    settings.setdefault("max_servers", -1)
    settings.setdefault("max_servers_per_repo", -1)
    opts = {"clock": clock.time} if clock is not None else {}
    return await launcher(hub_api_url=f"http://127.0.0.1:{free_port()}/hub/api", attach_options=opts, **settings)


async def stream_status(ln, path: str, headers: dict | None = None) -> int:
    """The status a launch stream refused with (a failed event's status_code), or 200 when it launched."""
    resp = await ln.client.get(path, headers=headers or {})
    events = parse_sse(await resp.text())
    refusal = events[0] if events and events[0]["phase"] == "failed" and "status_code" in events[0] else None
    return int(refusal["status_code"]) if refusal else resp.status


def github_calls(ln) -> int:
    return len(ln.fake.calls("GET", REPO_PATHS))


# --- item 3: quota ---------------------------------------------------------------------------

async def test_one_client_makes_at_most_its_limit_of_github_calls(launcher):
    ln = await start(launcher, launch_github_calls_per_minute=10)
    await ln.install("octo/demo")
    statuses = []
    for i in range(60):  # distinct refs: no cache can answer them
        statuses.append(await stream_status(ln, f"/api/events/gh/octo/demo/nope-{i}"))
        badge = await ln.client.get(f"/badge/gh/octo/demo/also-nope-{i}.svg")
        assert badge.status == 200
    assert github_calls(ln) <= 10  # 120 requests, at most 10 GitHub calls
    assert statuses.count(429) >= 50
    refused = await ln.client.get("/api/events/gh/octo/demo/nope-x")
    (event,) = parse_sse(await refused.text())
    assert event["status_code"] == 429 and int(refused.headers["Retry-After"]) >= 1 and event["retryAfter"] >= 1
    assert "Too many lookups" in event["message"]


async def test_answers_are_cached_not_found_ones_too(launcher):
    clock = ManualClock()
    ln = await start(launcher, clock=clock, launch_github_calls_per_minute=1000)
    await ln.install("octo/demo")
    for _ in range(60):
        assert await stream_status(ln, "/api/events/gh/octo/demo/no-such-branch") == 404
        assert ">unknown<" in await (await ln.client.get("/badge/gh/octo/demo/no-such-branch.svg")).text()
    commits = ln.fake.calls("GET", "/repos/{owner}/{repo}/commits/{ref:.+}")
    assert len(commits) == 1 and commits[0].status in (404, 422)
    assert ln.fake.calls("GET", "/repos/{owner}/{repo}") == []  # visibility: the installation event's facts
    await clock.advance(31)  # "not found" is remembered briefly: the branch may be pushed any moment
    ln.fake.add_commit("octo/demo", {"x": "1"}, branch="no-such-branch")
    assert (await ln.client.get("/badge/gh/octo/demo/no-such-branch.svg")).status == 200
    assert len(ln.fake.calls("GET", "/repos/{owner}/{repo}/commits/{ref:.+}")) == 2


async def test_an_installation_has_an_hourly_budget_many_clients_cannot_exceed(launcher):
    clock = ManualClock()
    ln = await start(launcher, clock=clock, launch_github_calls_per_minute=1000, launch_github_calls_per_hour=15,
                     trusted_proxies=("127.0.0.1",))
    await ln.install("octo/demo")
    other = await ln.install("solo/other")
    assert other != await ln.services.gh_state.installation_for("octo/demo")
    for i in range(60):  # sixty visitors behind the ingress, one request each
        await ln.client.get(f"/badge/gh/octo/demo/b-{i}.svg", headers={"X-Forwarded-For": f"198.51.100.{i}"})
    assert github_calls(ln) == 15
    # another installation's budget is its own
    before = github_calls(ln)
    await ln.client.get("/badge/gh/solo/other/main.svg", headers={"X-Forwarded-For": "203.0.113.1"})
    assert github_calls(ln) > before
    # an hour later the budget is back
    before = github_calls(ln)
    await ln.client.get("/badge/gh/octo/demo/b-late.svg", headers={"X-Forwarded-For": "198.51.100.200"})
    assert github_calls(ln) == before
    await clock.advance(3601)
    await ln.client.get("/badge/gh/octo/demo/b-later.svg", headers={"X-Forwarded-For": "198.51.100.201"})
    assert github_calls(ln) > before


# --- item 4: made-up shas --------------------------------------------------------------------

async def test_a_made_up_sha_builds_nothing_and_is_asked_once(launcher):
    ln = await start(launcher)
    await ln.install("octo/demo")
    for _ in range(3):
        status, _, events = await ln.events(f"/api/events/gh/octo/demo/{MADE_UP}")
        assert events[-1]["phase"] == "failed" and "has no commit" in events[-1]["message"]
        ln.client.session.cookie_jar.clear()
    assert ln.builder.jobs == []
    assert await ln.services.builds.latest_for_sha("octo", "demo", MADE_UP) is None
    asked = ln.fake.calls("GET", f"/repos/octo/demo/commits/{MADE_UP}")
    assert len(asked) == 1 and asked[0].status == 422  # GitHub's answer for an unknown sha, cached


async def test_a_real_sha_that_was_never_built_is_checked_then_built(launcher):
    ln = await start(launcher)
    await ln.install("octo/demo")
    sha = ln.fake.add_commit("octo/demo", {"new": "1"}, branch="main")
    status, _, events = await ln.events(f"/api/events/gh/octo/demo/{sha}")
    assert "built" in [e["phase"] for e in events]
    assert len(ln.builder.jobs) == 1
    assert len(ln.fake.calls("GET", f"/repos/octo/demo/commits/{sha}")) == 1


async def test_the_whole_service_writes_no_check_run_for_a_made_up_sha(prebuild_bot):
    bot = await prebuild_bot(jupyterhub_api_url=f"http://127.0.0.1:{free_port()}/hub/api",
                             jupyterhub_api_token="x" * 32, max_servers=-1, max_servers_per_repo=-1)
    await bot.services.gh_state.upsert_installation(bot.inst.id, bot.inst.account)
    await bot.services.gh_state.add_repos(bot.inst.id, [(REPO, False)])
    resp = await bot.client.get(f"/api/events/gh/{REPO}/{MADE_UP}")
    text = await resp.text()
    assert '"phase":"failed"' in text and "has no commit" in text
    await bot.settle()
    assert bot.builder.jobs == []
    assert bot.fake.calls("POST", CHECK_RUNS) == []


async def test_a_422_on_a_check_run_is_not_retried(prebuild_bot):
    bot = await prebuild_bot()
    bot.reporter.retry_base = 0.01
    owner, repo = REPO.split("/")
    # a sha GitHub does not know (e.g. force-pushed away before the build reported)
    await bot.services.scheduler.submit(BuildRequest(
        owner=owner, repo=repo, sha=MADE_UP, clone_url=f"{bot.fake.web_url}/{REPO}.git",
        installation_id=bot.inst.id, branch="gone", trigger=Trigger.PUSH))
    await bot.settle()
    posts = bot.fake.calls("POST", CHECK_RUNS)
    assert [p.status for p in posts] == [422]  # one refused create: no retries, no later phases


# --- item 5: trusted proxies -----------------------------------------------------------------

TRUSTED = parse_trusted(["10.0.0.0/8", "127.0.0.1", "fd00::/8"])


@pytest.mark.parametrize("peer,hops,trusted,expected", [
    ("203.0.113.9", ["1.2.3.4"], (), "203.0.113.9"),  # no trusted proxies: headers are ignored
    ("203.0.113.9", ["1.2.3.4"], TRUSTED, "203.0.113.9"),  # an untrusted peer's header is ignored
    ("10.1.2.3", ["198.51.100.7"], TRUSTED, "198.51.100.7"),
    ("10.1.2.3", ["6.6.6.6", "198.51.100.7"], TRUSTED, "198.51.100.7"),  # a spoofed hop to the left is ignored
    ("10.1.2.3", ["198.51.100.7", "10.9.9.9"], TRUSTED, "198.51.100.7"),  # a chain of trusted proxies
    ("127.0.0.1", ["[2001:db8::1]:4711"], TRUSTED, "2001:db8::1"),
    ("127.0.0.1", ["198.51.100.7:8443"], TRUSTED, "198.51.100.7"),
    ("::ffff:10.1.2.3", ["198.51.100.7"], TRUSTED, "198.51.100.7"),  # IPv4-mapped peer
    ("10.1.2.3", ["10.2.2.2"], TRUSTED, "10.2.2.2"),  # all trusted: the first hop
    ("10.1.2.3", [], TRUSTED, "10.1.2.3"),
    ("10.1.2.3", ["unknown"], TRUSTED, "unknown"),
])
def test_client_address(peer, hops, trusted, expected):
    assert client_address(peer, hops, trusted) == expected


def test_trusted_proxies_setting_is_checked():
    from bot.config import ConfigError, load_settings

    assert load_settings({"TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1"}).trusted_proxies == ("10.0.0.0/8", "127.0.0.1")
    assert load_settings({}).trusted_proxies == ()
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        load_settings({"TRUSTED_PROXIES": "10.0.0.0/8,nonsense"})
    assert parse_trusted(["10.0.0.0/8"]) == (ipaddress.ip_network("10.0.0.0/8"),)


async def launches_allowed(ln, forwarded: list[str | None]) -> list[int]:
    out = []
    for value in forwarded:
        ln.client.session.cookie_jar.clear()  # a new browser each time: a new launch
        headers = {"X-Forwarded-For": value} if value else {}
        out.append(await stream_status(ln, "/api/events/gh/octo/demo/main", headers))
    return out


async def test_without_trusted_proxies_a_forged_header_does_not_escape_the_limit(launcher):
    ln = await start(launcher, launch_rate_per_minute=2)
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    assert await launches_allowed(ln, ["1.1.1.1", "2.2.2.2", "3.3.3.3"]) == [200, 200, 429]


async def test_behind_a_trusted_proxy_each_visitor_has_their_own_limit(launcher):
    ln = await start(launcher, launch_rate_per_minute=2, trusted_proxies=("127.0.0.1",))
    await ln.install("octo/demo")
    await ln.prebuild("octo/demo")
    assert await launches_allowed(ln, ["198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.1"]) \
        == [200, 200, 200, 429]
    # RFC 7239 Forwarded is read the same way
    ln.client.session.cookie_jar.clear()
    assert await stream_status(ln, "/api/events/gh/octo/demo/main", {"Forwarded": 'for="198.51.100.3"'}) == 200


async def test_guard_checks_the_client_first_then_the_installation_budget():
    from launcher.guard import GitHubGuard, QuotaRefused, acting_for

    clock = ManualClock()
    guard = GitHubGuard(2, 3, clock=clock.time)
    with acting_for("198.51.100.1"):
        guard.admit(7)
        guard.admit(7)
        with pytest.raises(QuotaRefused, match="from your address") as e:
            guard.admit(7)
        assert e.value.retry_after == 60
    with acting_for("198.51.100.2"):
        guard.admit(7)  # the third call of installation 7 this hour
        with pytest.raises(QuotaRefused, match="an hour"):
            guard.admit(7)
        guard.admit(8)  # another installation's budget is its own
    await clock.advance(61)
    with acting_for("198.51.100.1"), pytest.raises(QuotaRefused, match="an hour"):
        guard.admit(7)  # the client may again, the installation may not
    await clock.advance(3600)
    with acting_for("198.51.100.1"):
        guard.admit(7)
