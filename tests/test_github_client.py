"""The App identity and the one retrying GitHub client, against FakeGitHub."""
from __future__ import annotations

import asyncio
import time

import aiohttp
import gidgethub
import jwt
import pytest

from bot.github.client import GitHubApp, GitHubUnreachable, RetryPolicy, rate_limit_wait
from bot.github.identity import AppIdentity, make_jwt, parse_expires_at
from bot.metrics import Metrics
from tests.fake_github import FakeGitHub, Fault, settings_for

FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05, timeout=2.0)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make_app(session, fake_github, tmp_path, sleeps):
    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def make(policy: RetryPolicy = FAST, clock: Clock | None = None, metrics: Metrics | None = None,
             fake: FakeGitHub | None = None) -> GitHubApp:
        fake = fake or fake_github
        settings = settings_for(fake, tmp_path)
        identity = AppIdentity(settings.github_app_id, settings.github_private_key, clock=clock or time.time)
        return GitHubApp(session, settings, metrics, policy=policy, identity=identity, sleep=record_sleep)

    return make


# --- JWT ---------------------------------------------------------------------------

def test_jwt_claims(github_key):
    now = 1_700_000_000
    token = make_jwt("4242", github_key, now=now)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    from tests.fake_github import public_key_of

    claims = jwt.decode(token, public_key_of(github_key), algorithms=["RS256"], options={"verify_exp": False})
    assert claims["iss"] == "4242"
    assert claims["iat"] == now - 60
    assert now < claims["exp"] <= now + 600


def test_the_private_key_is_parsed_once_not_for_every_jwt(github_key, monkeypatch):
    """Parsing the PEM checks the RSA key (~30 ms of the loop's CPU); signing with the parsed key is cheap."""
    from bot.github import identity
    from tests.fake_github import public_key_of

    parsed = []
    real = identity.load_signing_key
    monkeypatch.setattr(identity, "load_signing_key", lambda pem: parsed.append(pem) or real(pem))
    clock = Clock()
    ident = AppIdentity("1", github_key, clock=clock)
    tokens = []
    for _ in range(3):
        tokens.append(ident.jwt())
        clock.now += identity.JWT_REUSE
    ident.drop_jwt()
    tokens.append(ident.jwt())
    tokens.append(ident.fresh_jwt())  # a token request's JWT: the same parsed key
    assert len(set(tokens[:4])) == 4 and len(parsed) == 1
    for t in tokens:
        jwt.decode(t, public_key_of(github_key), algorithms=["RS256"],
                   options={"verify_exp": False, "verify_iat": False})


async def test_the_key_is_parsed_at_startup_in_a_thread_not_on_the_first_request(github_key, monkeypatch):
    import threading

    from bot.github import identity

    threads = []
    real = identity.load_signing_key
    monkeypatch.setattr(identity, "load_signing_key", lambda pem: threads.append(threading.current_thread()) or real(pem))
    ident = AppIdentity("1", github_key)
    await ident.prepare()
    ident.jwt()
    ident.fresh_jwt()
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    broken = AppIdentity("1", "not a key")
    await broken.prepare()  # logged, not raised: the first use fails as before
    with pytest.raises(ValueError):
        broken.jwt()


def test_jwt_is_reused_briefly_then_renewed(github_key):
    clock = Clock()
    ident = AppIdentity("1", github_key, clock=clock)
    first = ident.jwt()
    clock.now += 60
    assert ident.jwt() == first
    clock.now += 300
    renewed = ident.jwt()
    assert renewed != first
    claims = jwt.decode(renewed, options={"verify_signature": False})
    assert claims["exp"] - clock.now <= 600 and claims["iat"] <= clock.now - 60


def test_identity_repr_hides_the_key(github_key):
    assert "PRIVATE" not in repr(AppIdentity("1", github_key))


def test_parse_expires_at():
    assert parse_expires_at("2016-07-11T22:14:10Z") == 1468275250.0
    assert parse_expires_at("garbage") is None


# --- token caching ------------------------------------------------------------------

async def test_one_token_request_per_installation_while_valid(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    b = fake_github.add_installation(["other/b"])
    app = make_app()
    gh = app.installation_client(a.id)
    assert fake_github.requests == []  # the token is fetched lazily
    await gh.getitem("/repos/octo/a")
    await app.installation_client(a.id).getitem("/repos/octo/a")
    await asyncio.gather(*(app.installation_client(a.id).getitem("/repos/octo/a") for _ in range(10)))
    assert len(fake_github.token_requests(a.id)) == 1
    await app.installation_client(b.id).getitem("/repos/other/b")
    assert len(fake_github.token_requests(b.id)) == 1
    assert len(fake_github.token_requests()) == 2


async def test_concurrent_first_requests_share_one_token_request(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("POST", "/app/installations/{installation_id}/access_tokens", Fault.latency(0.2))
    app = make_app()
    await asyncio.gather(*(app.installation_client(a.id).getitem("/repos/octo/a") for _ in range(5)))
    assert len(fake_github.token_requests(a.id)) == 1


async def test_new_token_after_expiry(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    clock = Clock()
    app = make_app(clock=clock)
    await app.installation_client(a.id).getitem("/repos/octo/a")
    clock.now += 50 * 60  # the token has 10 minutes left: still used
    await app.installation_client(a.id).getitem("/repos/octo/a")
    assert len(fake_github.token_requests(a.id)) == 1
    clock.now += 6 * 60  # within the margin before expires_at: renewed
    await app.installation_client(a.id).getitem("/repos/octo/a")
    assert len(fake_github.token_requests(a.id)) == 2


async def test_short_lived_tokens_follow_expires_at(fake_github, make_app):
    fake_github.token_ttl = 400  # expires_at 400 s ahead: under the 5-minute margin after 100 s
    a = fake_github.add_installation(["octo/a"])
    clock = Clock()
    app = make_app(clock=clock)
    await app.installation_client(a.id).getitem("/repos/octo/a")
    clock.now += 50
    await app.installation_client(a.id).getitem("/repos/octo/a")
    assert len(fake_github.token_requests(a.id)) == 1
    clock.now += 60
    await app.installation_client(a.id).getitem("/repos/octo/a")
    assert len(fake_github.token_requests(a.id)) == 2


async def test_401_drops_the_token_and_retries_once(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    app = make_app()
    await app.installation_client(a.id).getitem("/repos/octo/a")
    fake_github.expire_tokens()  # GitHub revoked it; our cache still thinks it is good
    repo = await app.installation_client(a.id).getitem("/repos/octo/a")
    assert repo["full_name"] == "octo/a"
    assert len(fake_github.token_requests(a.id)) == 2
    assert [c.status for c in fake_github.calls("GET", "/repos/octo/a")] == [200, 401, 200]


async def test_a_second_401_is_raised(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", Fault.unauthorized(), Fault.unauthorized())
    app = make_app()
    with pytest.raises(gidgethub.BadRequest) as e:
        await app.installation_client(a.id).getitem("/repos/octo/a")
    assert e.value.status_code == 401
    assert len(fake_github.calls("GET", "/repos/octo/a")) == 2
    assert len(fake_github.token_requests(a.id)) == 2


async def test_scoped_token_is_cached_apart(fake_github, make_app):
    a = fake_github.add_installation(["octo/a", "octo/b"])
    app = make_app()
    scoped = await app.installation_token(a.id, ["octo/a"], {"contents": "read"})
    again = await app.installation_token(a.id, ["octo/a"], {"contents": "read"})
    plain = await app.installation_token(a.id)
    assert scoped == again and scoped != plain
    reqs = fake_github.token_requests(a.id)
    assert len(reqs) == 2
    assert reqs[0].json == {"repositories": ["a"], "permissions": {"contents": "read"}}
    assert reqs[1].json is None  # gidgethub.apps sends an empty body
    assert fake_github.tokens[scoped].repositories == {"a"}


async def test_jwt_auth_for_app_routes(fake_github, make_app):
    app = make_app()
    info = await app.app_info()
    assert info["id"] == fake_github.app_id
    assert fake_github.calls("GET", "/app")[0].auth.startswith("bearer ")


# --- retries --------------------------------------------------------------------------

async def test_5xx_is_retried_with_backoff(fake_github, make_app, sleeps):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", Fault.server_error(502), Fault.server_error(503),
                       Fault.server_error(500))
    metrics = Metrics()
    app = make_app(metrics=metrics)
    repo = await app.installation_client(a.id).getitem("/repos/octo/a")
    assert repo["name"] == "a"
    assert [c.status for c in fake_github.calls("GET", "/repos/octo/a")] == [502, 503, 500, 200]
    assert len(sleeps) == 3 and sleeps[0] < sleeps[1] < sleeps[2]
    assert metrics.registry.get_sample_value("binder_prebuild_github_requests_total", {"status": "502"}) == 1
    assert metrics.registry.get_sample_value("binder_prebuild_github_requests_total", {"status": "200"}) == 1
    assert metrics.registry.get_sample_value("binder_prebuild_github_requests_total", {"status": "201"}) == 1


async def test_5xx_gives_up_after_the_bounded_attempts(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", *[Fault.server_error(502)] * 10)
    with pytest.raises(gidgethub.GitHubBroken):
        await make_app().installation_client(a.id).getitem("/repos/octo/a")
    assert len(fake_github.calls("GET", "/repos/octo/a")) == FAST.attempts


async def test_token_request_is_retried_too(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("POST", "/app/installations/{installation_id}/access_tokens", Fault.server_error(502))
    await make_app().installation_client(a.id).getitem("/repos/octo/a")
    assert [r.status for r in fake_github.token_requests(a.id)] == [502, 201]


@pytest.mark.parametrize("status", [403, 429])
async def test_secondary_rate_limit_waits_retry_after(fake_github, make_app, sleeps, status):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", Fault.secondary_rate_limit(retry_after=7, status=status))
    await make_app().installation_client(a.id).getitem("/repos/octo/a")
    assert sleeps == [pytest.approx(7, abs=0.5)]
    assert [c.status for c in fake_github.calls("GET", "/repos/octo/a")] == [status, 200]


async def test_primary_rate_limit_waits_until_reset(fake_github, make_app, sleeps):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", Fault.primary_rate_limit(reset_in=30))
    app = make_app()
    await app.installation_client(a.id).getitem("/repos/octo/a")
    assert len(sleeps) == 1 and 29 <= sleeps[0] <= 33
    # the wait is shared: another client of the same installation waits too instead of hitting the limit
    sleeps.clear()
    await app.installation_client(a.id).getitem("/repos/octo/a")
    assert len(sleeps) == 1 and sleeps[0] > 25


async def test_a_long_rate_limit_fails_at_once(fake_github, make_app, sleeps):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", Fault.primary_rate_limit(reset_in=3600))
    with pytest.raises(gidgethub.RateLimitExceeded):
        await make_app().installation_client(a.id).getitem("/repos/octo/a")
    assert sleeps == []
    assert len(fake_github.calls("GET", "/repos/octo/a")) == 1


async def test_nothing_is_sent_while_the_quota_is_used_up(fake_github, make_app, sleeps):
    """A 200 saying remaining 0 with the reset an hour away: every later request, by any client of
    that installation, is held back (RateLimited with the reset time) instead of being sent."""
    from bot.github.outage import RateLimited

    a = fake_github.add_installation(["octo/a"])
    reset = int(time.time()) + 3600
    fake_github.inject("GET", "/repos/octo/a", Fault(status=200, body={"name": "a"}, headers={
        "x-ratelimit-remaining": "0", "x-ratelimit-limit": "5000", "x-ratelimit-reset": str(reset)}))
    app = make_app()
    await app.installation_client(a.id).getitem("/repos/octo/a")
    sent = len(fake_github.requests)
    for path in ("/repos/octo/a", "/repos/octo/a/commits/main"):
        with pytest.raises(RateLimited) as info:
            await app.installation_client(a.id).getitem(path)
        assert info.value.until >= reset
    assert len(fake_github.requests) == sent and sleeps == []
    # the App's own quota is another one: its requests still go out
    await app.app_client().getitem("/app")
    assert len(fake_github.requests) == sent + 1


async def test_connection_drop_is_retried(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", Fault.connection_drop())
    repo = await make_app().installation_client(a.id).getitem("/repos/octo/a")
    assert repo["name"] == "a"
    assert len(fake_github.calls("GET", "/repos/octo/a")) == 2


async def test_timeout_per_request(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("GET", "/repos/octo/a", Fault.latency(1.0))
    policy = RetryPolicy(attempts=3, backoff=0.01, timeout=0.2)
    repo = await make_app(policy=policy).installation_client(a.id).getitem("/repos/octo/a")
    assert repo["name"] == "a"
    assert len(fake_github.calls("GET", "/repos/octo/a")) == 2


async def test_unreachable_github_raises_a_github_exception(make_app, session, tmp_path):
    fake = FakeGitHub()
    await fake.start()
    await fake.close()  # nothing listens there any more
    app = make_app(fake=fake, policy=RetryPolicy(attempts=2, backoff=0.01, timeout=1))
    with pytest.raises(GitHubUnreachable):
        await app.app_client().getitem("/app")


async def test_enterprise_server_base_url_with_a_path(github_key, make_app):
    fake = FakeGitHub(private_key=github_key, path_prefix="/api/v3")
    await fake.start()
    try:
        inst = fake.add_installation(["corp/tool"])
        app = make_app(fake=fake)
        assert app.base_url.endswith("/api/v3")
        repo = await app.installation_client(inst.id).getitem("/repos/corp/tool")
        assert repo["full_name"] == "corp/tool"
        assert all(r.status in (200, 201) for r in fake.requests)
    finally:
        await fake.close()


# --- pure decisions -----------------------------------------------------------------

def test_rate_limit_wait_rules():
    now = 1000.0
    assert rate_limit_wait(500, {}, b"", now) is None
    assert rate_limit_wait(404, {"retry-after": "5"}, b"", now) is None
    assert rate_limit_wait(403, {"retry-after": "5"}, b"", now) == 5
    assert rate_limit_wait(403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1010"}, b"", now) == 11
    assert rate_limit_wait(403, {}, b'{"message": "You have exceeded a secondary rate limit"}', now) == 60
    assert rate_limit_wait(403, {}, b'{"message": "Resource not accessible by integration"}', now) is None
    assert rate_limit_wait(429, {}, b"", now, secondary_default=30) == 30


async def test_etag_cache_makes_gets_conditional(fake_github, make_app):
    """With gidgethub's cache, a repeated GET carries If-None-Match and a 304 serves the cached data."""
    from aiohttp import web

    from tests.fake_github import json_response

    async def etagged(request, params, ctx):
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return json_response({"value": 1}, headers={"ETag": '"v1"'})

    fake_github.add_route("GET", "/repos/{owner}/{repo}/etagged", etagged, perm=(("metadata", "read"),))
    a = fake_github.add_installation(["octo/a"])
    cache: dict = {}
    app = make_app()
    first = await app.installation_client(a.id, cache=cache).getitem("/repos/octo/a/etagged")
    second = await app.installation_client(a.id, cache=cache).getitem("/repos/octo/a/etagged")
    assert first == second == {"value": 1}
    calls = fake_github.calls("GET", "/repos/octo/a/etagged")
    assert [c.status for c in calls] == [200, 304]
    assert calls[1].headers["if-none-match"] == '"v1"'


async def test_a_cancelled_token_fetch_does_not_fail_the_waiters(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("POST", "/app/installations/{installation_id}/access_tokens", Fault.latency(0.3))
    app = make_app()
    leader = asyncio.create_task(app.installation_token(a.id))
    await asyncio.sleep(0.05)
    waiter = asyncio.create_task(app.installation_token(a.id))
    await asyncio.sleep(0.05)
    leader.cancel()
    token = await asyncio.wait_for(waiter, 5)
    assert token in fake_github.tokens
    assert leader.cancelled()


async def test_a_failed_token_fetch_fails_every_waiter_then_recovers(fake_github, make_app):
    a = fake_github.add_installation(["octo/a"])
    fake_github.inject("POST", "/app/installations/{installation_id}/access_tokens",
                       Fault(status=404, body={"message": "Not Found"}, delay=0.1))
    app = make_app()
    results = await asyncio.gather(*(app.installation_token(a.id) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, gidgethub.BadRequest) for r in results)
    assert len(fake_github.token_requests(a.id)) == 1
    assert await app.installation_token(a.id) in fake_github.tokens
