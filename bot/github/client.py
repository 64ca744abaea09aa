"""The one GitHub request wrapper: a retrying gidgethub client, and the App that hands them out.

Every GitHub request of the service goes through ``GitHubClient._request``:
a timeout per request; backoff on 5xx and connection errors; the primary rate
limit (``x-ratelimit-remaining: 0`` → wait until ``x-ratelimit-reset``) and the
secondary one (403/429 with ``Retry-After``) waited out when the wait is short
(bounded by ``RetryPolicy.max_rate_wait``); a longer one raises ``RateLimited``
(carrying the reset time) so the caller's own retry, e.g. the dispatcher's delay
until the reset, takes over. While an identity's quota is known to be used up, no
request is sent at all until its reset: the client raises ``RateLimited`` at once
instead of spending requests GitHub would refuse. A 401 drops the
cached token or JWT and retries once. Waits are shared per identity (App or
installation) through a ``RateGate``, so one exhausted quota pauses every client
using it instead of each finding out by itself.

Retries repeat POST/PATCH too (as octokit's retry plugin does): a 5xx on a create
may rarely duplicate it; callers that must not duplicate (the PR comment) look for
their marker before creating.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import http
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import gidgethub
import gidgethub.aiohttp
from gidgethub.abc import CACHE_TYPE

from bot.github.identity import AppIdentity, TokenKey, token_key

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.metrics import Metrics

log = logging.getLogger(__name__)

REQUESTER = "binder-prebuild"


Sleep = Callable[[float], Awaitable[None]]


class RateLimited(gidgethub.RateLimitExceeded):
    """GitHub's quota for this identity is used up until ``until`` (epoch seconds).

    Raised by the client *without sending* while the quota is known to be used up
    for longer than it is willing to wait, and after a rate-limited answer with a
    long wait. A ``RateLimitExceeded`` (so a ``BadRequest``) for callers that
    already handle those.
    """

    def __init__(self, until: float, message: str = "rate limited", *, status: int = 403,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(None, message, headers=headers)
        self.status_code = http.HTTPStatus(status)
        self.until = until


class GitHubUnreachable(gidgethub.GitHubException):
    """GitHub did not answer (connection error or timeout) after every retry."""


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries for 5xx and connection errors
    backoff: float = 0.5  # first delay; doubled each time, with jitter
    max_backoff: float = 20.0
    rate_retries: int = 3  # rate-limit waits per request
    max_rate_wait: float = 90.0  # longest rate-limit wait; a longer one fails at once
    secondary_default: float = 60.0  # GitHub: wait at least a minute when no header says how long
    timeout: float = 30.0  # per request
    jitter: float = 0.2

    def delay(self, attempt: int, rand: float) -> float:
        return min(self.max_backoff, self.backoff * 2 ** (attempt - 1)) * (1 + self.jitter * rand)


def rate_limit_wait(status: int, headers: Mapping[str, str], body: bytes, now: float, *,
                    secondary_default: float = 60.0) -> float | None:
    """Seconds to wait before retrying a rate-limited answer, or None if it is not one.

    GitHub's documented order: ``Retry-After`` first; then ``x-ratelimit-remaining: 0``
    → until ``x-ratelimit-reset``; a 403/429 that says "rate limit" without either
    → at least one minute.
    """
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after).timestamp()
                return max(0.0, when - now)
            except (TypeError, ValueError):
                pass
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - now) + 1.0
        except ValueError:
            pass
    if status == 429 or b"rate limit" in body.lower():
        return secondary_default
    return None


def exhausted_until(headers: Mapping[str, str]) -> float | None:
    """When a (successful) answer says the quota is now used up: the reset time."""
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            return float(headers["x-ratelimit-reset"]) + 1.0
        except (KeyError, ValueError):
            return None
    return None


_MANIFEST_CODE = re.compile(r"(/app-manifests/)[^/]+")


def loggable_url(url: str) -> str:
    """The URL for a log line: the one-time manifest code (worth an App's secrets) masked."""
    return _MANIFEST_CODE.sub(r"\1***", url)


class RateGate:
    """A shared "do not call before" time for one identity (the App, or one installation),
    and the quota GitHub last reported for it (``x-ratelimit-remaining`` / ``-reset``)."""

    def __init__(self) -> None:
        self.blocked_until = 0.0
        self.remaining: int | None = None
        self.limit: int | None = None
        self.reset: float | None = None

    def block(self, until: float) -> None:
        self.blocked_until = max(self.blocked_until, until)

    def wait_time(self, now: float) -> float:
        return max(0.0, self.blocked_until - now)

    def observe(self, headers: Mapping[str, str]) -> None:
        """Remember the quota an answer reports (a 304 carries it too, unchanged)."""
        try:
            remaining = headers.get("x-ratelimit-remaining")
            if remaining is not None:
                self.remaining = int(remaining)
            limit = headers.get("x-ratelimit-limit")
            if limit is not None:
                self.limit = int(limit)
            reset = headers.get("x-ratelimit-reset")
            if reset is not None:
                self.reset = float(reset)
        except ValueError:
            pass

    def low(self, reserve: float, now: float) -> float | None:
        """The reset time if fewer than ``reserve`` (a share of the limit, 0..1) requests are left, else None."""
        if self.remaining is None or self.reset is None or self.reset <= now:
            return None
        floor = reserve * (self.limit or 5000)
        return self.reset + 1.0 if self.remaining <= floor else None


class Auth(Protocol):
    """Supplies the Authorization header; told when GitHub answered 401 to it."""

    async def header(self) -> str: ...

    def invalidate(self, header: str) -> None: ...


class JWTAuth:
    def __init__(self, identity: AppIdentity, *, fresh: bool = False) -> None:
        self.identity = identity
        self.fresh = fresh  # a new JWT per request (token requests), not the reused one

    async def header(self) -> str:
        return f"bearer {self.identity.fresh_jwt() if self.fresh else self.identity.jwt()}"

    def invalidate(self, header: str) -> None:
        self.identity.drop_jwt()


class InstallationAuth:
    """An installation token, fetched on the first request and cached by the App."""

    def __init__(self, app: "GitHubApp", key: TokenKey) -> None:
        self.app = app
        self.key = key

    async def header(self) -> str:
        tok = await self.app.identity.token(self.key, self.app._fetch_token)
        return f"token {tok.token}"

    def invalidate(self, header: str) -> None:
        self.app.identity.invalidate(self.key, header.split(" ", 1)[-1])


class GitHubClient(gidgethub.aiohttp.GitHubAPI):
    """gidgethub's aiohttp client with auth, retries, rate-limit waits, timeouts and metrics."""

    def __init__(self, session: aiohttp.ClientSession, *, base_url: str, auth: Auth | None = None,
                 policy: RetryPolicy | None = None, metrics: "Metrics | None" = None,
                 gate: RateGate | None = None, requester: str = REQUESTER, label: str = "anonymous",
                 sleep: Sleep | None = None, cache: CACHE_TYPE | None = None) -> None:
        super().__init__(session, requester, base_url=base_url.rstrip("/"), cache=cache)
        self._sleep = sleep
        self.auth = auth
        self.policy = policy or RetryPolicy()
        self.metrics = metrics
        self.gate = gate or RateGate()
        self.label = label  # who we are, for logs ("app", "installation 123")

    async def sleep(self, seconds: float) -> None:
        await (self._sleep or asyncio.sleep)(seconds)

    def _count(self, status: str) -> None:
        if self.metrics is not None:
            self.metrics.github_requests.labels(status=status).inc()

    async def _send(self, method: str, url: str, headers: Mapping[str, str],
                    body: bytes) -> tuple[int, Mapping[str, str], bytes]:
        timeout = aiohttp.ClientTimeout(total=self.policy.timeout)
        async with self._session.request(method, url, headers=headers, data=body, timeout=timeout) as resp:
            return resp.status, resp.headers, await resp.read()

    async def _request(self, method: str, url: str, headers: Mapping[str, str],
                       body: bytes = b"") -> tuple[int, Mapping[str, str], bytes]:
        p = self.policy
        shown = loggable_url(url)
        headers = dict(headers)
        explicit_auth = "authorization" in headers  # a caller passed jwt= / oauth_token=
        auth_value = None
        if self.auth is not None and not explicit_auth:
            auth_value = await self.auth.header()
            headers["authorization"] = auth_value
        attempt = rate_waits = 0
        reauthed = False
        while True:
            now = time.time()
            wait = self.gate.wait_time(now)
            if wait > p.max_rate_wait:
                # the quota is used up for long: send nothing, let the caller come back after the reset
                if self.metrics is not None:
                    self.metrics.github_held.inc()
                raise RateLimited(now + wait, f"{method} {shown}: GitHub's rate limit for {self.label} "
                                  f"resets in {wait:.0f} s; not sending before then")
            if 0 < wait:
                log.info("github %s: rate limited, waiting %.1fs before %s %s", self.label, wait, method, shown)
                await self.sleep(wait)
            attempt += 1
            try:
                status, rheaders, rbody = await self._send(method, url, headers, body)
            except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                self._count("error")
                if attempt >= p.attempts:
                    raise GitHubUnreachable(f"{method} {shown}: {type(e).__name__}: {e}") from e
                delay = p.delay(attempt, random.random())
                log.warning("github %s: %s %s failed (%s: %s); retry %d in %.1fs",
                            self.label, method, shown, type(e).__name__, e, attempt, delay)
                await self.sleep(delay)
                continue
            self._count(str(status))
            self.gate.observe(rheaders)
            until = exhausted_until(rheaders)
            if until is not None:
                self.gate.block(until)
            if status == 401 and self.auth is not None and not explicit_auth and not reauthed:
                reauthed = True
                log.info("github %s: 401 on %s %s; dropping the cached credential and retrying once",
                         self.label, method, shown)
                assert auth_value is not None
                self.auth.invalidate(auth_value)
                auth_value = await self.auth.header()
                headers["authorization"] = auth_value
                continue
            wait = rate_limit_wait(status, rheaders, rbody, time.time(), secondary_default=p.secondary_default)
            if wait is not None:
                if wait > p.max_rate_wait or rate_waits >= p.rate_retries:
                    log.warning("github %s: rate limited on %s %s for %.0fs; not waiting", self.label,
                                method, shown, wait)
                    self.gate.block(time.time() + wait)  # nobody else sends for this identity meanwhile
                    raise RateLimited(time.time() + wait, f"{method} {shown}: rate limited by GitHub "
                                      f"({status}) for {wait:.0f} s", status=status, headers=rheaders)
                rate_waits += 1
                self.gate.block(time.time() + wait)
                log.warning("github %s: rate limited (%d) on %s %s; waiting %.1fs", self.label, status,
                            method, shown, wait)
                continue  # the gate makes the wait, shared with other clients of this identity
            if status >= 500 and attempt < p.attempts:
                delay = p.delay(attempt, random.random())
                log.warning("github %s: %d on %s %s; retry %d in %.1fs", self.label, status, method, shown,
                            attempt, delay)
                await self.sleep(delay)
                continue
            return status, rheaders, rbody


class GitHubApp:
    """The App: JWT-authenticated and installation clients, installation tokens, all sharing one session."""

    def __init__(self, session: aiohttp.ClientSession, settings: "Settings", metrics: "Metrics | None" = None,
                 *, policy: RetryPolicy | None = None, identity: AppIdentity | None = None,
                 sleep: Sleep | None = None) -> None:
        if not settings.has_app_credentials:
            raise ValueError("GitHubApp needs GITHUB_APP_ID and a private key")
        self.session = session
        self.settings = settings
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self.base_url = settings.github_api_url.rstrip("/")
        self.identity = identity or AppIdentity(str(settings.github_app_id), settings.github_private_key or "")
        self._gates: dict[Any, RateGate] = {}
        self._app_info: dict[str, Any] | None = None
        self._sleep = sleep  # tests record waits instead of sleeping

    def __repr__(self) -> str:
        return f"GitHubApp(app_id={self.identity.app_id!r}, base_url={self.base_url!r})"

    def _gate(self, who: Any) -> RateGate:
        gate = self._gates.get(who)
        if gate is None:
            gate = self._gates[who] = RateGate()
        return gate

    def client(self, auth: Auth | None, label: str, gate_key: Any, cache: CACHE_TYPE | None = None) -> GitHubClient:
        return GitHubClient(self.session, base_url=self.base_url, auth=auth, policy=self.policy,
                            metrics=self.metrics, gate=self._gate(gate_key), label=label,
                            sleep=self._sleep, cache=cache)

    def app_client(self, *, cache: CACHE_TYPE | None = None) -> GitHubClient:
        """Authenticated as the App (JWT): /app, /app/installations, tokens, webhook deliveries."""
        return self.client(JWTAuth(self.identity), "app", "app", cache)

    def gate_of(self, installation_id: int | None) -> RateGate:
        """The rate gate (and last reported quota) of an installation, or of the App for None."""
        return self._gate("app" if installation_id is None else int(installation_id))

    def installation_client(self, installation_id: int, *, cache: CACHE_TYPE | None = None) -> GitHubClient:
        """Authenticated as one installation; its token is fetched on the first request.

        ``cache`` (gidgethub's ETag cache, e.g. a cachetools.LRUCache) makes GETs conditional.
        """
        key = token_key(installation_id)
        return self.client(InstallationAuth(self, key), f"installation {installation_id}", int(installation_id),
                           cache)

    def anonymous_client(self, *, cache: CACHE_TYPE | None = None) -> GitHubClient:
        """No credentials: public repositories only, at GitHub's low anonymous rate."""
        return self.client(None, "anonymous", "anonymous", cache)

    async def installation_token(self, installation_id: int, repositories: list[str] | None = None,
                                 permissions: dict[str, str] | None = None) -> str:
        """An installation token, optionally limited (e.g. one repo, contents:read, for cloning)."""
        key = token_key(installation_id, repositories, permissions)
        return (await self.identity.token(key, self._fetch_token)).token

    def forget_installation(self, installation_id: int) -> None:
        self.identity.forget_installation(installation_id)

    async def _fetch_token(self, key: TokenKey) -> Mapping[str, Any]:
        installation_id, repos, perms = key
        gh = self.client(JWTAuth(self.identity, fresh=True), "app", "app")
        log.info("installation %s: requesting an access token%s", installation_id,
                 f" for {list(repos)}" if repos is not None else "")
        # our own JWT (its key parsed once), not gidgethub.apps' helper, which parses the PEM
        # again for every token: ~30 ms of the loop's CPU each time
        url = f"/app/installations/{installation_id}/access_tokens"
        if repos is None and perms is None:
            return await gh.post(url, data=b"")  # no body, as gidgethub.apps sends it
        body: dict[str, Any] = {}
        if repos is not None:
            body["repositories"] = list(repos)
        if perms is not None:
            body["permissions"] = dict(perms)
        return await gh.post(url, data=body)

    async def app_info(self) -> dict[str, Any]:
        """GET /app (name, slug, html_url), cached for the process."""
        if self._app_info is None:
            self._app_info = await self.app_client().getitem("/app")
        return self._app_info


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a GitHub failure for logs and the store."""
    if isinstance(exc, gidgethub.HTTPException):
        return f"GitHub answered {exc.status_code}: {exc}"
    return f"{type(exc).__name__}: {exc}"


