"""What a GitHub failure means for whoever asked: wait and try again, or stop.

One pure classification shared by every caller that decides between "retry" and
"give up" (the scheduler for a build's clone token, the dispatcher for a
delivery): GitHub being down or rate limiting us passes, an uninstalled App, a
suspended installation or a repository that is gone does not, and anything else
is retried a bounded number of times.
"""
from __future__ import annotations

import asyncio
import dataclasses
import enum

import aiohttp
import gidgethub

from bot.github.client import GitHubUnreachable


class ErrorKind(str, enum.Enum):
    TRANSIENT = "transient"  # GitHub down, unreachable, rate limited: wait and retry, without a cap
    PERMANENT = "permanent"  # uninstalled, suspended, repository gone or not granted: stop
    UNKNOWN = "unknown"  # anything else: retry a bounded number of times, then stop and say so


@dataclasses.dataclass(frozen=True)
class Classified:
    kind: ErrorKind
    reason: str  # one sentence for a check run or a log line; no secrets, no request URLs


def _status(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def _message(exc: BaseException) -> str:
    return " ".join(str(a) for a in getattr(exc, "args", ()) if a).lower()


def classify_github_error(exc: BaseException, *, asking_for_token: bool = False) -> Classified:
    """Map an exception raised while talking to GitHub to TRANSIENT, PERMANENT or UNKNOWN.

    ``asking_for_token``: the failed call was ``POST /app/installations/{id}/access_tokens``,
    where a 404 means the App was uninstalled and a 422 that the repository is no longer
    part of the installation (GitHub's documented answers).
    """
    if isinstance(exc, (GitHubUnreachable, aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)):
        return Classified(ErrorKind.TRANSIENT, "GitHub could not be reached")
    if isinstance(exc, gidgethub.RateLimitExceeded):
        return Classified(ErrorKind.TRANSIENT, "GitHub's rate limit is used up")
    status = _status(exc)
    if status is None:
        return Classified(ErrorKind.UNKNOWN, f"{type(exc).__name__}: {exc}"[:300])
    message = _message(exc)
    if status >= 500:
        return Classified(ErrorKind.TRANSIENT, f"GitHub answered {status} (it is having trouble)")
    if status in (403, 429) and "rate limit" in message:
        return Classified(ErrorKind.TRANSIENT, "GitHub's rate limit is used up")
    if status == 403 and "suspended" in message:
        return Classified(ErrorKind.PERMANENT, "the App's installation is suspended")
    if status == 404:
        if asking_for_token:
            return Classified(ErrorKind.PERMANENT, "the App is no longer installed on this account")
        return Classified(ErrorKind.PERMANENT, "GitHub says it is not there (the repository is gone, or the App "
                          "lost access to it)")
    if status == 410:
        return Classified(ErrorKind.PERMANENT, "GitHub says it is gone")
    if status == 422 and asking_for_token:
        return Classified(ErrorKind.PERMANENT, "the repository is gone, or no longer part of the App's "
                          "installation, or the installation lacks the permission")
    if status == 403:
        return Classified(ErrorKind.PERMANENT, "the App is not allowed to do this (a permission is missing)")
    return Classified(ErrorKind.UNKNOWN, f"GitHub answered {status}")
