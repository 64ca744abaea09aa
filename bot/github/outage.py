"""Is a failure GitHub's (or another dependency's) being down or rate limited, or the work's own?

Pure: an exception and the current time in, a verdict out. The dispatcher and the
feedback workers use it so that an outage or a used-up quota only *delays* work
(wait for the reset, or back off) and only a failure of the work itself counts
towards giving up.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import enum
import http
from collections.abc import Mapping
import aiohttp
import gidgethub


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


class FailureKind(str, enum.Enum):
    RATE_LIMITED = "rate_limited"  # wait until the reset, then try again
    UNAVAILABLE = "unavailable"  # a dependency is down: back off and try again
    CONTENT = "content"  # the work itself fails: counts towards giving up


@dataclasses.dataclass(frozen=True)
class Verdict:
    kind: FailureKind
    until: float | None = None  # RATE_LIMITED: not before this time (epoch seconds), when known

    @property
    def transient(self) -> bool:
        return self.kind is not FailureKind.CONTENT


def _header_wait(headers: Mapping[str, str], now: float) -> float | None:
    low = {k.lower(): v for k, v in (headers or {}).items()}
    retry_after = low.get("retry-after")
    if retry_after:
        try:
            return now + max(0.0, float(retry_after))
        except ValueError:
            try:
                return email.utils.parsedate_to_datetime(retry_after).timestamp()
            except (TypeError, ValueError):
                pass
    if low.get("x-ratelimit-remaining") == "0" and low.get("x-ratelimit-reset"):
        try:
            return float(low["x-ratelimit-reset"]) + 1.0
        except ValueError:
            pass
    return None


_UNAVAILABLE_TYPES: tuple[type[BaseException], ...] = (
    aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, ConnectionError, gidgethub.GitHubBroken,
)


def classify(exc: BaseException, now: float) -> Verdict:
    """Sort a failure: rate limited (with its reset), a dependency down, or the work's own fault."""
    if isinstance(exc, RateLimited):
        return Verdict(FailureKind.RATE_LIMITED, exc.until)
    if isinstance(exc, gidgethub.BadRequest):
        status = int(exc.status_code)
        message = str(exc).lower()
        if isinstance(exc, gidgethub.RateLimitExceeded) or status == 429 or (
                status == 403 and "rate limit" in message):
            until = _header_wait(exc.headers, now)
            if until is None and getattr(exc, "rate_limit", None) is not None:
                until = exc.rate_limit.reset_datetime.timestamp() + 1.0
            return Verdict(FailureKind.RATE_LIMITED, until)
        if status in (401, 408):  # credentials GitHub lost track of, or its own timeout
            return Verdict(FailureKind.UNAVAILABLE)
        return Verdict(FailureKind.CONTENT)
    if isinstance(exc, _UNAVAILABLE_TYPES) or _named_unavailable(exc):
        return Verdict(FailureKind.UNAVAILABLE)
    return Verdict(FailureKind.CONTENT)


def _named_unavailable(exc: BaseException) -> bool:
    """Errors of our own layers that mean "a dependency is not there" (no import cycle: by name)."""
    names = {c.__name__ for c in type(exc).__mro__}
    return bool(names & {"GitHubUnreachable", "GitHubUnavailable", "DependencyUnavailable"})


def retry_time(verdict: Verdict, transient_failures: int, now: float, *, base: float, cap: float,
               jitter: float = 0.1, rand: float = 0.0) -> float:
    """When to try a transiently failed piece of work again.

    Rate limited with a known reset: just after the reset. Otherwise exponential
    backoff from ``base``, capped at ``cap`` (so a long outage is probed at least
    every ``cap`` seconds, never given up).
    """
    backoff = min(cap, base * 2 ** max(0, transient_failures - 1)) * (1 + jitter * rand)
    if verdict.kind is FailureKind.RATE_LIMITED and verdict.until is not None:
        return max(verdict.until, now + min(backoff, 1.0))
    return now + backoff


def describe(verdict: Verdict, now: float) -> str:
    """One phrase for logs and the store."""
    if verdict.kind is FailureKind.RATE_LIMITED:
        if verdict.until is not None:
            return f"rate limited by GitHub for {max(0.0, verdict.until - now):.0f} s"
        return "rate limited by GitHub"
    if verdict.kind is FailureKind.UNAVAILABLE:
        return "a dependency is unavailable"
    return "failed"
