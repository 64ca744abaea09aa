"""Is a failure GitHub's (or another dependency's) being down or rate limited, or the work's own?

Pure: an exception and the current time in, a verdict out. The dispatcher and the
feedback workers use it so that an outage or a used-up quota only *delays* work
(wait for the reset, or back off) and only a failure of the work itself counts
towards giving up. Built on the shared classification of GitHub failures
(bot.github.errors: transient / permanent / unknown); this adds *when* a rate limit
ends, and the outages of our own layers (no App credentials, a handler that hangs).
"""
from __future__ import annotations

import dataclasses
import email.utils
import enum
from collections.abc import Mapping

import gidgethub

from bot.github.client import RateLimited
from bot.github.errors import ErrorKind, classify_github_error


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


def classify(exc: BaseException, now: float) -> Verdict:
    """Sort a failure: rate limited (with its reset), a dependency down, or the work's own fault."""
    if isinstance(exc, RateLimited):
        return Verdict(FailureKind.RATE_LIMITED, exc.until)
    if _named_unavailable(exc):
        return Verdict(FailureKind.UNAVAILABLE)
    status = int(exc.status_code) if isinstance(exc, gidgethub.HTTPException) else None
    if status == 429:  # Too Many Requests is a rate limit whatever the message says
        return Verdict(FailureKind.RATE_LIMITED, _until(exc, now))
    shared = classify_github_error(exc)
    if shared.kind is not ErrorKind.TRANSIENT:
        return Verdict(FailureKind.CONTENT)  # permanent, or unknown: bounded retries
    if isinstance(exc, gidgethub.RateLimitExceeded) or (status == 403 and "rate limit" in str(exc).lower()):
        return Verdict(FailureKind.RATE_LIMITED, _until(exc, now))
    return Verdict(FailureKind.UNAVAILABLE)


def _until(exc: BaseException, now: float) -> float | None:
    until = _header_wait(getattr(exc, "headers", None) or {}, now)
    rate_limit = getattr(exc, "rate_limit", None)
    if until is None and rate_limit is not None:
        until = rate_limit.reset_datetime.timestamp() + 1.0
    return until


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
