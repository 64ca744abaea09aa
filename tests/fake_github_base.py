"""FakeGitHub's building blocks: constants, recorded requests, faults, state, route plumbing.

See tests/fake_github.py for the server and how to extend it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:
    from tests.fake_github import FakeGitHub

DOCS = "https://docs.github.com/rest"

# What app.yml asks for; installations get these unless a test says otherwise.
DEFAULT_PERMISSIONS: dict[str, str] = {
    "metadata": "read",
    "contents": "read",
    "pull_requests": "write",
    "checks": "write",
    "statuses": "write",
    "issues": "write",
}
DEFAULT_EVENTS = ["push", "pull_request", "check_run", "issue_comment", "repository"]

CHECK_STATUSES = {"queued", "in_progress", "completed", "waiting", "requested", "pending"}
CHECK_CONCLUSIONS = {
    "action_required", "cancelled", "failure", "neutral", "success", "skipped", "stale", "timed_out",
}
STATUS_STATES = {"error", "failure", "pending", "success"}
REACTIONS = {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}
MAX_TEXT = 65535
_LEVEL = {"none": 0, "read": 1, "write": 2, "admin": 3}


# ---------------------------------------------------------------------------
# keys and settings helpers
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def test_private_key(name: str = "default") -> str:
    """An RSA private key (PEM, PKCS#1 like GitHub's downloads), generated once per name per process."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def public_key_of(private_pem: str) -> Any:
    return serialization.load_pem_private_key(private_pem.encode(), password=None).public_key()


def settings_for(fake: "FakeGitHub", data_dir: Path, **overrides: Any) -> Any:
    """Settings whose App identity and GITHUB_API_URL point at ``fake``."""
    from bot.config import Settings

    values: dict[str, Any] = dict(
        github_app_id=str(fake.app_id),
        github_private_key=fake.private_key,
        github_webhook_secret=fake.webhook_secret,
        github_api_url=fake.url,
        data_dir=Path(data_dir),
    )
    values.update(overrides)
    return Settings(**values)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha(*parts: Any) -> str:
    return hashlib.sha1("\0".join(str(p) for p in parts).encode()).hexdigest()


# ---------------------------------------------------------------------------
# recorded requests and faults
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Recorded:
    """One request FakeGitHub received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    json: Any
    raw: bytes
    route: str | None = None  # matched template, e.g. "/repos/{owner}/{repo}/check-runs"
    status: int | None = None
    fault: "Fault | None" = None
    at: float = dataclasses.field(default_factory=time.time)  # when it arrived (wall clock, for ordering)

    @property
    def auth(self) -> str | None:
        return self.headers.get("authorization")


@dataclasses.dataclass(frozen=True)
class Fault:
    """A canned answer served instead of (or, with ``passthrough``, before) the real one."""

    status: int = 500
    body: Any = dataclasses.field(default_factory=lambda: {"message": "Server Error"})
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    passthrough: bool = False  # after ``delay``, answer normally (pure latency)
    disconnect: bool = False  # drop the connection without an answer
    held: Any = None  # an asyncio.Event: answer only once the test sets it (latency without a clock)

    @classmethod
    def server_error(cls, status: int = 502, delay: float = 0.0) -> "Fault":
        return cls(status=status, body={"message": "Server Error"}, delay=delay)

    @classmethod
    def unauthorized(cls) -> "Fault":
        return cls(status=401, body={"message": "Bad credentials", "documentation_url": DOCS})

    @classmethod
    def not_found(cls) -> "Fault":
        return cls(status=404, body={"message": "Not Found", "documentation_url": DOCS})

    @classmethod
    def secondary_rate_limit(cls, retry_after: int = 1, status: int = 403) -> "Fault":
        """GitHub's secondary (abuse) limit: 403 or 429 with Retry-After."""
        return cls(
            status=status,
            headers={"Retry-After": str(retry_after)},
            body={
                "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                "documentation_url": f"{DOCS}/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
            },
        )

    @classmethod
    def primary_rate_limit(cls, reset_in: float = 1.0, status: int = 403) -> "Fault":
        """The hourly quota is used up: x-ratelimit-remaining 0 until x-ratelimit-reset (epoch seconds)."""
        reset = int(time.time() + reset_in + 0.999)
        return cls(
            status=status,
            headers={
                "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0", "x-ratelimit-used": "5000",
                "x-ratelimit-reset": str(reset), "x-ratelimit-resource": "core",
            },
            body={"message": "API rate limit exceeded for installation ID 1.", "documentation_url": DOCS},
        )

    @classmethod
    def latency(cls, seconds: float) -> "Fault":
        return cls(delay=seconds, passthrough=True)

    @classmethod
    def held_until(cls, event: Any) -> "Fault":
        """The request waits until ``event`` (an ``asyncio.Event``) is set, then is answered normally."""
        return cls(held=event, passthrough=True)

    @classmethod
    def connection_drop(cls) -> "Fault":
        return cls(disconnect=True)


# ---------------------------------------------------------------------------
# state
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class FakeCommit:
    sha: str
    message: str
    files: dict[str, bytes]
    parents: list[str]
    author: str = "octocat"


@dataclasses.dataclass
class FakeRepo:
    owner: str
    name: str
    id: int
    private: bool = False
    default_branch: str = "main"
    owner_type: str = "User"
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    commits: dict[str, FakeCommit] = dataclasses.field(default_factory=dict)
    collaborators: dict[str, str] = dataclasses.field(default_factory=dict)  # login -> admin/write/read
    pulls: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    clone_url: str | None = None  # default: {web}/{owner}/{name}.git

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"

    def resolve(self, ref: str) -> str | None:
        """A branch, tag, full or abbreviated (>= 7) sha, or ``HEAD`` (the default branch) -> the commit sha."""
        if ref == "HEAD":
            return self.branches.get(self.default_branch)
        for prefix in ("refs/heads/", "heads/"):
            if ref.startswith(prefix) and ref[len(prefix):] in self.branches:
                return self.branches[ref[len(prefix):]]
        for prefix in ("refs/tags/", "tags/"):
            if ref.startswith(prefix) and ref[len(prefix):] in self.tags:
                return self.tags[ref[len(prefix):]]
        if ref in self.branches:
            return self.branches[ref]
        if ref in self.tags:
            return self.tags[ref]
        if ref in self.commits:
            return ref
        if len(ref) >= 7:
            hits = [s for s in self.commits if s.startswith(ref.lower())]
            if len(hits) == 1:
                return hits[0]
        return None


@dataclasses.dataclass
class FakeInstallation:
    id: int
    account: str
    account_type: str = "User"
    repos: set[str] = dataclasses.field(default_factory=set)  # full names
    repository_selection: str = "selected"
    suspended: bool = False
    permissions: dict[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))
    events: list[str] = dataclasses.field(default_factory=lambda: list(DEFAULT_EVENTS))


@dataclasses.dataclass
class FakeToken:
    token: str
    installation_id: int
    expires_at: float
    repositories: set[str] | None  # names (no owner) the token is limited to
    permissions: dict[str, str]


@dataclasses.dataclass
class Ctx:
    """What a handler knows about the caller."""

    kind: str  # "jwt", "token" or "anonymous"
    token: FakeToken | None = None
    repo: FakeRepo | None = None


Handler = Callable[[web.Request, dict[str, str], Ctx], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class _Route:
    method: str
    template: str
    regex: re.Pattern[str]
    handler: Handler
    auth: str  # "jwt" | "token" | "public" (token, or none for public repos' GETs) | "none"
    perm: tuple[tuple[str, str], ...]  # any one of these (permission, level) suffices


def route(method: str, template: str, *, auth: str = "token",
          perm: tuple[str, str] | tuple[tuple[str, str], ...] = ()) -> Callable[[Any], Any]:
    """Mark a FakeGitHub method as the handler of ``METHOD template``."""
    if perm and isinstance(perm[0], str):
        perm = (perm,)  # type: ignore[assignment]

    def deco(fn: Any) -> Any:
        fn._fake_route = (method.upper(), template, auth, tuple(perm))
        return fn

    return deco


def _compile(template: str) -> re.Pattern[str]:
    out, pos = "", 0
    for m in re.finditer(r"\{(\w+)(?::([^}]+))?\}", template):
        out += re.escape(template[pos:m.start()])
        out += f"(?P<{m.group(1)}>{m.group(2) or '[^/]+'})"
        pos = m.end()
    out += re.escape(template[pos:])
    return re.compile(f"^{out}$")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(data).encode(), headers=headers or {},
        content_type="application/json", charset="utf-8",
    )


def error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"message": message, "documentation_url": DOCS, "status": str(status), **extra}, status)


RECORD = web.RequestKey("fake_github_record", Recorded)


class Rejected(Exception):
    """A request body GitHub would refuse with 422."""
