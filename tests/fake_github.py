"""FakeGitHub: the one GitHub REST API double shared by every test in the project.

An aiohttp server speaking GitHub's wire format. It

* records every request (``fake.requests``: method, path, query, headers, JSON body,
  status answered, route template) and offers ``fake.calls(...)`` to filter them;
* authenticates like GitHub: ``/app*`` routes need an App JWT (RS256, signed with
  the App's key, ``iss`` = App id, ``exp`` at most 10 minutes ahead), repository
  routes need an installation token (``token X`` or ``Bearer X``) issued by
  ``POST /app/installations/{id}/access_tokens`` and not yet expired; wrong or
  missing auth gets 401 ``Bad credentials``, a repo outside the token's
  installation 404, a permission the installation lacks 403;
* validates request bodies against GitHub's documented shapes and answers 422
  (recorded in ``fake.rejected``) like GitHub does;
* keeps simple state: installations, tokens, repositories (branches, tags, commits
  with files), check runs, commit statuses, issue comments (paginated with Link
  headers), reactions, collaborator permissions, pull requests, manifest codes;
* injects faults: ``fake.inject("POST", "/app/installations/{installation_id}/access_tokens",
  Fault.server_error(), Fault.unauthorized())`` queues canned answers that are
  served (and consumed) before the real handler runs. A fault key is either the
  route template or the concrete path; the method may be ``"*"``.

Extending it: add a method decorated with ``@route(METHOD, TEMPLATE, auth=..., perm=...)``
in this class (or a subclass), or call ``fake.add_route(...)`` at run time. Handlers
get ``(request, params, ctx)`` and return ``web.Response`` (use ``json_response`` /
``error``). Path templates use ``{name}`` for one segment and ``{name:.*}`` for the rest.

Use it from pytest through the ``fake_github`` fixture (tests/conftest.py), or
standalone: ``fake = FakeGitHub(); await fake.start(); ...; await fake.close()``.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime as dt
import functools
import hashlib
import inspect
import itertools
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

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
DEFAULT_EVENTS = ["push", "pull_request", "check_run", "issue_comment"]

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
        """A branch, tag, full or abbreviated (>= 7) sha -> the commit sha."""
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


# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------

class FakeGitHub:
    """See the module docstring. ``url`` is the API base (GITHUB_API_URL); ``web_url`` the web host."""

    def __init__(self, *, app_id: int = 4242, private_key: str | None = None, app_slug: str = "binder-prebuild-test",
                 token_ttl: float = 3600.0, path_prefix: str = "") -> None:
        self.app_id = app_id
        self.path_prefix = path_prefix.rstrip("/")  # "/api/v3" to look like GitHub Enterprise Server
        self.app_slug = app_slug
        self.private_key = private_key or test_private_key()
        self.public_key = public_key_of(self.private_key)
        self.webhook_secret = "fake-webhook-secret"
        self.token_ttl = token_ttl
        self.url = ""  # the API base (GITHUB_API_URL), set by start()
        self.host_url = ""
        self.requests: list[Recorded] = []
        self.rejected: list[tuple[Recorded, str]] = []
        self.installations: dict[int, FakeInstallation] = {}
        self.tokens: dict[str, FakeToken] = {}
        self.repos: dict[str, FakeRepo] = {}  # key: full name, lower case
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.statuses: list[dict[str, Any]] = []
        self.comments: dict[int, dict[str, Any]] = {}  # id -> comment (+ "_repo", "_issue")
        self.reactions: list[dict[str, Any]] = []
        self.manifest_codes: dict[str, dict[str, Any]] = {}
        self._faults: dict[tuple[str, str], list[Fault]] = {}
        self._ids = itertools.count(1000)
        self._routes: list[_Route] = []
        self._runner: web.AppRunner | None = None
        for _, fn in inspect.getmembers(self, predicate=inspect.ismethod):
            spec = getattr(fn, "_fake_route", None)
            if spec:
                method, template, auth, perm = spec
                self.add_route(method, template, fn, auth=auth, perm=perm)
        self.app = web.Application(middlewares=[self._middleware], client_max_size=30 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)

    # lifecycle ---------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        self.host_url = f"http://{host}:{sock.getsockname()[1]}"
        self.url = self.host_url + self.path_prefix
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def web_url(self) -> str:
        """Where html_url / clone_url point (the fake serves the API only)."""
        return self.host_url

    # extension -----------------------------------------------------------------
    def add_route(self, method: str, template: str, handler: Handler, *, auth: str = "token",
                  perm: tuple[tuple[str, str], ...] = ()) -> None:
        """Register (or override: the newest wins) a route."""
        self._routes.insert(0, _Route(method.upper(), template, _compile(template), handler, auth, tuple(perm)))

    def inject(self, method: str, path: str, *faults: Fault) -> None:
        """Queue ``faults`` for ``METHOD path`` (route template or concrete path); served in order."""
        self._faults.setdefault((method.upper(), path), []).extend(faults)

    def pending_faults(self) -> int:
        return sum(len(q) for q in self._faults.values())

    # state helpers for tests ------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def add_repo(self, full_name: str, *, private: bool = False, files: dict[str, str | bytes] | None = None,
                 default_branch: str = "main", message: str = "Initial commit", owner_type: str = "User",
                 clone_url: str | None = None) -> FakeRepo:
        owner, name = full_name.split("/", 1)
        repo = FakeRepo(owner, name, self.next_id(), private=private, default_branch=default_branch,
                        owner_type=owner_type, clone_url=clone_url)
        self.repos[full_name.lower()] = repo
        self.add_commit(full_name, files or {"README.md": f"# {name}\n"}, branch=default_branch, message=message)
        return repo

    def repo(self, full_name: str) -> FakeRepo:
        return self.repos[full_name.lower()]

    def add_commit(self, full_name: str, files: dict[str, str | bytes], *, branch: str | None = None,
                   message: str = "Update", keep: bool = True) -> str:
        """Commit ``files`` (merged over the branch head's files when ``keep``); moves ``branch``."""
        repo = self.repo(full_name)
        parent = repo.branches.get(branch) if branch else None
        tree: dict[str, bytes] = dict(repo.commits[parent].files) if parent and keep else {}
        tree.update({k: v.encode() if isinstance(v, str) else v for k, v in files.items()})
        sha = _sha(repo.full_name, parent, message, sorted(tree.items()), len(repo.commits))
        repo.commits[sha] = FakeCommit(sha, message, tree, [parent] if parent else [])
        if branch:
            repo.branches[branch] = sha
        return sha

    def add_tag(self, full_name: str, tag: str, sha: str) -> None:
        self.repo(full_name).tags[tag] = sha

    def add_pull(self, full_name: str, number: int, *, head_sha: str, head_ref: str = "feature",
                 head_repo: str | None = None, base_ref: str | None = None, user: str = "contributor",
                 state: str = "open") -> dict[str, Any]:
        repo = self.repo(full_name)
        head = self.repos.get((head_repo or full_name).lower(), repo)
        pr = {
            "url": f"{self.url}/repos/{repo.full_name}/pulls/{number}", "id": self.next_id(), "number": number,
            "state": state, "title": f"PR {number}", "user": self._user(user),
            "html_url": f"{self.web_url}/{repo.full_name}/pull/{number}",
            "head": {"label": f"{head.owner}:{head_ref}", "ref": head_ref, "sha": head_sha,
                     "user": self._user(head.owner), "repo": self._repo_json(head)},
            "base": {"label": f"{repo.owner}:{base_ref or repo.default_branch}", "ref": base_ref or repo.default_branch,
                     "sha": repo.branches.get(base_ref or repo.default_branch), "user": self._user(repo.owner),
                     "repo": self._repo_json(repo)},
        }
        repo.pulls[number] = pr
        return pr

    def add_installation(self, repos: Iterable[str] = (), *, installation_id: int | None = None,
                         account: str | None = None, account_type: str = "User", suspended: bool = False,
                         permissions: dict[str, str] | None = None, create_repos: bool = True) -> FakeInstallation:
        repos = list(repos)
        account = account or (repos[0].split("/")[0] if repos else "octocat")
        inst = FakeInstallation(installation_id or self.next_id(), account, account_type, suspended=suspended)
        if permissions is not None:
            inst.permissions = dict(permissions)
        for full_name in repos:
            if create_repos and full_name.lower() not in self.repos:
                self.add_repo(full_name, owner_type=account_type)
            inst.repos.add(self.repo(full_name).full_name)
        self.installations[inst.id] = inst
        return inst

    def add_manifest_code(self, code: str | None = None, **app: Any) -> tuple[str, dict[str, Any]]:
        """A code as GitHub's redirect would carry; its conversion returns this fake's App (so it works here)."""
        code = code or secrets.token_hex(10)
        data = {
            "id": self.app_id, "slug": self.app_slug, "node_id": "A_kwDOAAAAAA", "name": self.app_slug,
            "owner": self._user("octocat"), "description": "", "external_url": "https://example.org",
            "html_url": f"{self.web_url}/apps/{self.app_slug}", "created_at": _iso(time.time()),
            "updated_at": _iso(time.time()), "permissions": dict(DEFAULT_PERMISSIONS), "events": list(DEFAULT_EVENTS),
            "client_id": "Iv1.8a61f9b3a7aba766", "client_secret": "1726be1638095a19edd134c77bde3aa2ece1e5d8",
            "webhook_secret": self.webhook_secret, "pem": self.private_key,
        }
        data.update(app)
        self.manifest_codes[code] = data
        return code, data

    def expire_tokens(self) -> None:
        """Make every issued installation token invalid now (as if an hour passed)."""
        for t in self.tokens.values():
            t.expires_at = time.time() - 1

    def comments_on(self, full_name: str, number: int) -> list[dict[str, Any]]:
        return [self._public(c) for c in self.comments.values()
                if c["_repo"].lower() == full_name.lower() and c["_issue"] == number]

    def check_runs_for(self, full_name: str, sha: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.check_runs.values()
                if r["_repo"].lower() == full_name.lower() and (sha is None or r["head_sha"] == sha)]

    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, filtered by method and by path (template, concrete path or regex)."""
        out = []
        for r in self.requests:
            if method and r.method != method.upper():
                continue
            if path and not (r.route == path or r.path == path or re.fullmatch(path, r.path)):
                continue
            out.append(r)
        return out

    def token_requests(self, installation_id: int | None = None) -> list[Recorded]:
        path = (f"/app/installations/{installation_id}/access_tokens" if installation_id is not None
                else r"/app/installations/\d+/access_tokens")
        return self.calls("POST", path)

    # JSON shapes -------------------------------------------------------------------
    def _user(self, login: str, type_: str = "User") -> dict[str, Any]:
        uid = int(hashlib.sha1(login.encode()).hexdigest()[:6], 16)
        return {"login": login, "id": uid, "node_id": f"U_{uid}", "type": type_, "site_admin": False,
                "avatar_url": f"{self.web_url}/avatars/{login}", "url": f"{self.url}/users/{login}",
                "html_url": f"{self.web_url}/{login}"}

    def _repo_json(self, repo: FakeRepo) -> dict[str, Any]:
        return {
            "id": repo.id, "node_id": f"R_{repo.id}", "name": repo.name, "full_name": repo.full_name,
            "private": repo.private, "owner": self._user(repo.owner, repo.owner_type),
            "html_url": f"{self.web_url}/{repo.full_name}", "url": f"{self.url}/repos/{repo.full_name}",
            "clone_url": repo.clone_url or f"{self.web_url}/{repo.full_name}.git",
            "git_url": f"git://fake/{repo.full_name}.git", "default_branch": repo.default_branch,
            "visibility": "private" if repo.private else "public", "fork": False, "archived": False,
        }

    def _installation_json(self, inst: FakeInstallation) -> dict[str, Any]:
        return {
            "id": inst.id, "account": self._user(inst.account, inst.account_type),
            "repository_selection": inst.repository_selection,
            "access_tokens_url": f"{self.url}/app/installations/{inst.id}/access_tokens",
            "repositories_url": f"{self.url}/installation/repositories",
            "html_url": f"{self.web_url}/settings/installations/{inst.id}", "app_id": self.app_id,
            "app_slug": self.app_slug, "target_id": self._user(inst.account)["id"], "target_type": inst.account_type,
            "permissions": inst.permissions, "events": inst.events, "created_at": _iso(time.time()),
            "updated_at": _iso(time.time()), "single_file_name": None,
            "suspended_at": _iso(time.time()) if inst.suspended else None,
            "suspended_by": self._user("octocat") if inst.suspended else None,
        }

    @staticmethod
    def _public(obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    # middleware: record, faults, auth --------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = request.path
        if self.path_prefix and path.startswith(self.path_prefix + "/"):
            path = path[len(self.path_prefix):]
        rec = Recorded(request.method, path, dict(request.query),
                       {k.lower(): v for k, v in request.headers.items()}, body, raw)
        self.requests.append(rec)
        request[RECORD] = rec
        resp = await handler(request)
        rec.status = resp.status
        return resp

    def _match(self, method: str, path: str) -> tuple[_Route | None, dict[str, str], bool]:
        path_known = False
        # single-segment templates before greedy ones ({x:.+}), newest first within each group
        for r in sorted(self._routes, key=lambda r: ":." in r.template):
            m = r.regex.match(path)
            if m:
                path_known = True
                if r.method == method:
                    return r, m.groupdict(), True
        return None, {}, path_known

    def _take_fault(self, method: str, path: str, template: str | None) -> Fault | None:
        for key in ((method, path), ("*", path), (method, template), ("*", template)):
            q = self._faults.get(key)  # type: ignore[arg-type]
            if q:
                f = q.pop(0)
                if not q:
                    del self._faults[key]  # type: ignore[arg-type]
                return f
        return None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        rec: Recorded = request[RECORD]
        if self.path_prefix and not request.path.startswith(self.path_prefix + "/"):
            return error(404, "Not Found")  # GHES serves the API under /api/v3 only
        r, params, known = self._match(request.method, rec.path)
        rec.route = r.template if r else None
        fault = self._take_fault(request.method, rec.path, rec.route)
        if fault is not None:
            rec.fault = fault
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.disconnect:
                assert request.transport is not None
                request.transport.close()
                raise asyncio.CancelledError  # aiohttp drops the connection without an answer
            if not fault.passthrough:
                return json_response(fault.body, fault.status, self._rate_headers(fault.headers))
        if r is None:
            return error(404, "Not Found") if not known else error(405, "Method Not Allowed")
        ctx_or_resp = self._authenticate(request, r)
        if isinstance(ctx_or_resp, web.Response):
            return ctx_or_resp
        ctx = ctx_or_resp
        checked = self._check_repo(r, params, ctx, request.method)
        if isinstance(checked, web.Response):
            return checked
        try:
            resp = await r.handler(request, params, ctx)
        except Rejected as e:
            self.rejected.append((rec, str(e)))
            resp = error(422, f"Invalid request.\n\n{e}")
        for k, v in self._rate_headers({}).items():
            resp.headers.setdefault(k, v)
        return resp

    def _rate_headers(self, extra: dict[str, str]) -> dict[str, str]:
        used = len(self.requests)
        base = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": str(max(5000 - used, 1)),
                "x-ratelimit-used": str(used), "x-ratelimit-reset": str(int(time.time()) + 3600),
                "x-ratelimit-resource": "core", "x-github-request-id": secrets.token_hex(8).upper()}
        base.update({k.lower(): v for k, v in extra.items()})
        return base

    def _authenticate(self, request: web.Request, r: _Route) -> Ctx | web.Response:
        header = request.headers.get("Authorization", "")
        scheme, _, cred = header.partition(" ")
        scheme = scheme.lower()
        if r.auth == "none":
            return Ctx("anonymous")
        if r.auth == "jwt":
            if scheme != "bearer" or not cred:
                return error(401, "A JSON web token could not be decoded")
            problem = self._check_jwt(cred.strip())
            return error(401, problem) if problem else Ctx("jwt")
        # token routes
        if not header:
            if r.auth == "public" and request.method == "GET":
                return Ctx("anonymous")
            return error(401, "Requires authentication")
        if scheme not in ("token", "bearer"):
            return error(401, "Bad credentials")
        tok = self.tokens.get(cred.strip())
        if tok is None or tok.expires_at <= time.time():
            return error(401, "Bad credentials")
        inst = self.installations.get(tok.installation_id)
        if inst is None:
            return error(401, "Bad credentials")
        return Ctx("token", token=tok)

    def _check_jwt(self, token: str) -> str | None:
        try:
            claims = jwt.decode(token, self.public_key, algorithms=["RS256"],
                                options={"require": ["iat", "exp", "iss"]}, leeway=30)
        except jwt.ExpiredSignatureError:
            return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"
        except jwt.InvalidTokenError:
            return "A JSON web token could not be decoded"
        now = time.time()
        if str(claims["iss"]) != str(self.app_id):
            return f"'Issuer' claim ('iss') must be an Integer. Integration {claims['iss']} not found"
        if claims["exp"] > now + 600 + 5:
            return "'Expiration time' claim ('exp') is too far in the future"
        if claims["iat"] > now + 5:
            return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
        return None

    def _check_repo(self, r: _Route, params: dict[str, str], ctx: Ctx, method: str) -> None | web.Response:
        if "owner" not in params or "repo" not in params:
            if r.perm and ctx.token and not self._has_perm(ctx.token.permissions, r.perm):
                return error(403, "Resource not accessible by integration")
            return None
        repo = self.repos.get(f"{params['owner']}/{params['repo']}".lower())
        if repo is None:
            return error(404, "Not Found")
        if ctx.kind == "anonymous":
            if repo.private:
                return error(404, "Not Found")
        elif ctx.kind == "token":
            tok = ctx.token
            assert tok is not None
            inst = self.installations[tok.installation_id]
            covered = repo.full_name in inst.repos or inst.repository_selection == "all" and \
                repo.owner.lower() == inst.account.lower()
            if tok.repositories is not None and repo.name not in tok.repositories:
                covered = False
            if not covered:
                return error(404, "Not Found")
            if r.perm and not self._has_perm(tok.permissions, r.perm):
                return error(403, "Resource not accessible by integration")
        ctx.repo = repo
        return None

    @staticmethod
    def _has_perm(have: dict[str, str], need: tuple[tuple[str, str], ...]) -> bool:
        return any(_LEVEL.get(have.get(p, "none"), 0) >= _LEVEL[lvl] for p, lvl in need)

    # pagination ------------------------------------------------------------------------
    def _page(self, request: web.Request, items: list[Any], wrap: str | None = None,
              extra: dict[str, Any] | None = None) -> web.Response:
        """GitHub's page/per_page pagination with an absolute Link header."""
        try:
            per_page = min(max(int(request.query.get("per_page", "30")), 1), 100)
            page = max(int(request.query.get("page", "1")), 1)
        except ValueError:
            return error(422, "Invalid pagination parameters")
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = items[(page - 1) * per_page: page * per_page]
        base = f"{self.url}{request[RECORD].path}"

        def link(p: int) -> str:
            q = dict(request.query)
            q.update(page=str(p), per_page=str(per_page))
            return f"<{base}?{urlencode(q)}>"

        rels = []
        if page < last:
            rels += [f'{link(page + 1)}; rel="next"', f'{link(last)}; rel="last"']
        if page > 1:
            rels += [f'{link(1)}; rel="first"', f'{link(page - 1)}; rel="prev"']
        headers = {"Link": ", ".join(rels)} if rels else {}
        data: Any = chunk if wrap is None else {**(extra or {}), wrap: chunk}
        return json_response(data, headers=headers)

    # ---------------------------------------------------------------------------------
    # routes: App (JWT)
    # ---------------------------------------------------------------------------------
    @route("GET", "/app", auth="jwt")
    async def get_app(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        return json_response({
            "id": self.app_id, "slug": self.app_slug, "name": self.app_slug, "node_id": "A_kwDOAAAAAA",
            "owner": self._user("octocat"), "html_url": f"{self.web_url}/apps/{self.app_slug}",
            "permissions": dict(DEFAULT_PERMISSIONS), "events": list(DEFAULT_EVENTS),
            "installations_count": len(self.installations),
        })

    @route("GET", "/app/installations", auth="jwt")
    async def list_installations(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        items = [self._installation_json(i) for i in sorted(self.installations.values(), key=lambda i: i.id)]
        return self._page(request, items)

    @route("GET", "/app/installations/{installation_id}", auth="jwt")
    async def get_installation(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        inst = self.installations.get(int(params["installation_id"])) if params["installation_id"].isdigit() else None
        return json_response(self._installation_json(inst)) if inst else error(404, "Not Found")

    @route("GET", "/repos/{owner}/{repo}/installation", auth="jwt")
    async def repo_installation(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        full = f"{params['owner']}/{params['repo']}".lower()
        for inst in self.installations.values():
            if full in {n.lower() for n in inst.repos}:
                return json_response(self._installation_json(inst))
        return error(404, "Not Found")

    @route("POST", "/app/installations/{installation_id}/access_tokens", auth="jwt")
    async def create_token(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        iid = params["installation_id"]
        inst = self.installations.get(int(iid)) if iid.isdigit() else None
        if inst is None:
            return error(404, "Not Found")
        if inst.suspended:
            return error(403, "This installation has been suspended")
        body = request[RECORD].json or {}
        if not isinstance(body, dict):
            raise Rejected("Body must be a JSON object")
        names: set[str] | None = None
        if "repositories" in body or "repository_ids" in body:
            names = set()
            for n in body.get("repositories") or []:
                if not isinstance(n, str) or "/" in n:
                    raise Rejected(f"repositories must be repository names without the owner, got {n!r}")
                names.add(n)
            by_id = {self.repo(f).id: self.repo(f).name for f in inst.repos}
            for rid in body.get("repository_ids") or []:
                if rid not in by_id:
                    raise Rejected(f"repository id {rid} is not in this installation")
                names.add(by_id[rid])
            missing = names - {self.repo(f).name for f in inst.repos}
            if missing:
                raise Rejected(f"There is at least one repository that does not exist or is not accessible "
                               f"to the parent installation: {sorted(missing)}")
        perms = dict(inst.permissions)
        if "permissions" in body:
            want = body["permissions"]
            if not isinstance(want, dict):
                raise Rejected("permissions must be an object")
            for p, lvl in want.items():
                if lvl not in ("read", "write", "admin") or _LEVEL[lvl] > _LEVEL.get(inst.permissions.get(p, "none"), 0):
                    raise Rejected(f"The permissions requested are not granted to this installation: {p}={lvl}")
            perms = dict(want)
            perms.setdefault("metadata", "read")
        tok = FakeToken("ghs_" + secrets.token_urlsafe(27)[:36], inst.id, time.time() + self.token_ttl, names, perms)
        self.tokens[tok.token] = tok
        out: dict[str, Any] = {
            "token": tok.token, "expires_at": _iso(tok.expires_at), "permissions": perms,
            "repository_selection": "selected" if names is not None else inst.repository_selection,
        }
        if names is not None:
            out["repositories"] = [self._repo_json(self.repo(f)) for f in sorted(inst.repos)
                                   if self.repo(f).name in names]
        return json_response(out, 201)

    @route("POST", "/app-manifests/{code}/conversions", auth="none")
    async def manifest_conversion(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        data = self.manifest_codes.pop(params["code"], None)
        if data is None:
            return error(404, "Not Found")
        return json_response(data, 201)

    # ---------------------------------------------------------------------------------
    # routes: installation token
    # ---------------------------------------------------------------------------------
    @route("GET", "/installation/repositories")
    async def installation_repos(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.token is not None
        inst = self.installations[ctx.token.installation_id]
        names = sorted(inst.repos, key=str.lower)
        if ctx.token.repositories is not None:
            names = [n for n in names if self.repo(n).name in ctx.token.repositories]
        items = [self._repo_json(self.repo(n)) for n in names]
        return self._page(request, items, wrap="repositories", extra={"total_count": len(items)})

    @route("GET", "/repos/{owner}/{repo}", auth="public", perm=("metadata", "read"))
    async def get_repo(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        return json_response(self._repo_json(ctx.repo))

    def _commit_json(self, repo: FakeRepo, c: FakeCommit) -> dict[str, Any]:
        who = {"name": c.author, "email": f"{c.author}@example.org", "date": _iso(time.time())}
        return {
            "sha": c.sha, "node_id": f"C_{c.sha[:10]}", "url": f"{self.url}/repos/{repo.full_name}/commits/{c.sha}",
            "html_url": f"{self.web_url}/{repo.full_name}/commit/{c.sha}",
            "commit": {"message": c.message, "author": who, "committer": who,
                       "tree": {"sha": _sha("tree", c.sha), "url": ""}},
            "author": self._user(c.author), "committer": self._user(c.author),
            "parents": [{"sha": p, "url": f"{self.url}/repos/{repo.full_name}/commits/{p}"} for p in c.parents],
        }

    @route("GET", "/repos/{owner}/{repo}/commits/{ref:.+}", auth="public", perm=("contents", "read"))
    async def get_commit(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        sha = ctx.repo.resolve(params["ref"])
        if sha is None:
            return error(422, f"No commit found for SHA: {params['ref']}")
        return json_response(self._commit_json(ctx.repo, ctx.repo.commits[sha]))

    @route("GET", "/repos/{owner}/{repo}/branches/{branch:.+}", auth="public", perm=("contents", "read"))
    async def get_branch(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        sha = repo.branches.get(params["branch"])
        if sha is None:
            return error(404, "Branch not found")
        return json_response({"name": params["branch"], "commit": self._commit_json(repo, repo.commits[sha]),
                              "protected": False})

    @route("GET", "/repos/{owner}/{repo}/git/ref/{ref:.+}", auth="public", perm=("contents", "read"))
    async def get_ref(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        ref = params["ref"]
        kind, _, name = ref.partition("/")
        table = {"heads": repo.branches, "tags": repo.tags}.get(kind)
        if table is None or name not in table:
            return error(404, "Not Found")
        return json_response({"ref": f"refs/{ref}", "node_id": f"REF_{name}",
                              "url": f"{self.url}/repos/{repo.full_name}/git/refs/{ref}",
                              "object": {"sha": table[name], "type": "commit", "url": ""}})

    @route("GET", "/repos/{owner}/{repo}/contents/{path:.*}", auth="public", perm=("contents", "read"))
    async def get_contents(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        ref = request.query.get("ref") or repo.default_branch
        sha = repo.resolve(ref)
        if sha is None:
            return error(404, f"No commit found for the ref {ref}")
        files = repo.commits[sha].files
        path = params["path"].strip("/")
        if path in files:
            data = files[path]
            b64 = base64.b64encode(data).decode()
            content = "\n".join(b64[i:i + 60] for i in range(0, len(b64), 60)) + "\n"
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
            url = f"{self.url}/repos/{repo.full_name}/contents/{path}?ref={ref}"
            return json_response({
                "type": "file", "encoding": "base64", "size": len(data), "name": path.rsplit("/", 1)[-1],
                "path": path, "content": content, "sha": blob, "url": url,
                "git_url": f"{self.url}/repos/{repo.full_name}/git/blobs/{blob}",
                "html_url": f"{self.web_url}/{repo.full_name}/blob/{ref}/{path}",
                "download_url": f"{self.web_url}/raw/{repo.full_name}/{ref}/{path}",
                "_links": {"self": url, "git": "", "html": ""},
            })
        prefix = f"{path}/" if path else ""
        entries: dict[str, str] = {}
        for f in files:
            if f.startswith(prefix):
                rest = f[len(prefix):]
                entries[rest.split("/", 1)[0]] = "dir" if "/" in rest else "file"
        if not entries:
            return error(404, "Not Found")
        return json_response([{"type": t, "name": n, "path": f"{prefix}{n}", "sha": _sha(prefix, n),
                               "size": len(files.get(f"{prefix}{n}", b""))} for n, t in sorted(entries.items())])

    @route("GET", "/repos/{owner}/{repo}/pulls/{number}", auth="public", perm=("pull_requests", "read"))
    async def get_pull(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        pr = ctx.repo.pulls.get(int(params["number"])) if params["number"].isdigit() else None
        return json_response(pr) if pr else error(404, "Not Found")

    @route("GET", "/repos/{owner}/{repo}/collaborators/{username}/permission", perm=("metadata", "read"))
    async def collaborator_permission(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        login = params["username"]
        perm = repo.collaborators.get(login) or ("admin" if login.lower() == repo.owner.lower()
                                                 else "read" if not repo.private else "none")
        role = {"admin": "admin", "write": "write", "read": "read", "none": "none"}.get(perm, perm)
        return json_response({"permission": perm, "role_name": role, "user": self._user(login)})

    # check runs -----------------------------------------------------------------------
    def _validate_check_run(self, body: Any, *, create: bool) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Rejected("Body must be a JSON object")
        problems = []
        if create:
            for field in ("name", "head_sha"):
                if not isinstance(body.get(field), str) or not body.get(field):
                    problems.append(f'"{field}" wasn\'t supplied.')
        status, conclusion = body.get("status"), body.get("conclusion")
        if status is not None and status not in CHECK_STATUSES:
            problems.append(f"status {status!r} is not a member of {sorted(CHECK_STATUSES)}")
        if conclusion is not None and conclusion not in CHECK_CONCLUSIONS:
            problems.append(f"conclusion {conclusion!r} is not a member of {sorted(CHECK_CONCLUSIONS)}")
        if status == "completed" and conclusion is None:
            problems.append('"conclusion" wasn\'t supplied (required when status is completed).')
        for ts in ("started_at", "completed_at"):
            if ts in body and not (isinstance(body[ts], str) and re.fullmatch(
                    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", body[ts])):
                problems.append(f"{ts} must be an ISO 8601 timestamp: YYYY-MM-DDTHH:MM:SSZ")
        if "details_url" in body and body["details_url"] is not None and not str(body["details_url"]).startswith(
                ("http://", "https://")):
            problems.append("details_url must be an http(s) URL")
        out = body.get("output")
        if out is not None:
            if not isinstance(out, dict):
                problems.append("output must be an object")
            else:
                for field in ("title", "summary"):
                    if not isinstance(out.get(field), str):
                        problems.append(f'"{field}" wasn\'t supplied in output.')
                for field in ("summary", "text"):
                    if isinstance(out.get(field), str) and len(out[field]) > MAX_TEXT:
                        problems.append(f"output.{field} is too long (maximum is {MAX_TEXT} characters)")
        actions = body.get("actions")
        if actions is not None:
            if not isinstance(actions, list) or len(actions) > 3:
                problems.append("actions must be a list of at most 3")
            else:
                for a in actions:
                    if not isinstance(a, dict) or not all(isinstance(a.get(k), str) for k in
                                                          ("label", "description", "identifier")):
                        problems.append("each action needs label, description and identifier")
                    elif len(a["label"]) > 20 or len(a["description"]) > 40 or len(a["identifier"]) > 20:
                        problems.append("action label <= 20, description <= 40, identifier <= 20 characters")
        if problems:
            raise Rejected("\n".join(problems))
        return body

    def _check_run_json(self, run: dict[str, Any]) -> dict[str, Any]:
        return self._public(run)

    @route("POST", "/repos/{owner}/{repo}/check-runs", perm=("checks", "write"))
    async def create_check_run(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        body = self._validate_check_run(request[RECORD].json, create=True)
        if body["head_sha"] not in repo.commits:
            return error(422, "No commit found for SHA: " + body["head_sha"])
        rid = self.next_id()
        status = body.get("status") or ("completed" if body.get("conclusion") else "queued")
        run = {
            "id": rid, "node_id": f"CR_{rid}", "name": body["name"], "head_sha": body["head_sha"],
            "external_id": body.get("external_id", ""), "details_url": body.get("details_url"),
            "status": status, "conclusion": body.get("conclusion"),
            "started_at": body.get("started_at", _iso(time.time())), "completed_at": body.get("completed_at"),
            "output": {"title": None, "summary": None, "text": None, "annotations_count": 0, **(body.get("output") or {})},
            "actions": body.get("actions", []),
            "url": f"{self.url}/repos/{repo.full_name}/check-runs/{rid}",
            "html_url": f"{self.web_url}/{repo.full_name}/runs/{rid}",
            "app": {"id": self.app_id, "slug": self.app_slug}, "pull_requests": [],
            "_repo": repo.full_name, "_history": [dict(body)],
        }
        if status == "completed" and not run["completed_at"]:
            run["completed_at"] = _iso(time.time())
        self.check_runs[rid] = run
        return json_response(self._check_run_json(run), 201)

    def _find_run(self, repo: FakeRepo, rid: str) -> dict[str, Any] | None:
        run = self.check_runs.get(int(rid)) if rid.isdigit() else None
        return run if run and run["_repo"] == repo.full_name else None

    @route("PATCH", "/repos/{owner}/{repo}/check-runs/{check_run_id}", perm=("checks", "write"))
    async def update_check_run(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        run = self._find_run(ctx.repo, params["check_run_id"])
        if run is None:
            return error(404, "Not Found")
        body = self._validate_check_run(request[RECORD].json, create=False)
        if body.get("conclusion") and "status" not in body:
            body = {**body, "status": "completed"}
        for k in ("name", "details_url", "external_id", "status", "conclusion", "started_at", "completed_at",
                  "actions"):
            if k in body:
                run[k] = body[k]
        if "output" in body:
            run["output"] = {**run["output"], **body["output"]}
        if run["status"] == "completed" and not run["completed_at"]:
            run["completed_at"] = _iso(time.time())
        run["_history"].append(dict(body))
        return json_response(self._check_run_json(run))

    @route("GET", "/repos/{owner}/{repo}/check-runs/{check_run_id}", perm=("checks", "read"))
    async def get_check_run(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        run = self._find_run(ctx.repo, params["check_run_id"])
        return json_response(self._check_run_json(run)) if run else error(404, "Not Found")

    @route("GET", "/repos/{owner}/{repo}/commits/{ref}/check-runs", auth="public", perm=("checks", "read"))
    async def list_check_runs(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        sha = repo.resolve(params["ref"])
        runs = [self._check_run_json(r) for r in self.check_runs_for(repo.full_name, sha)] if sha else []
        name = request.query.get("check_name")
        if name:
            runs = [r for r in runs if r["name"] == name]
        return self._page(request, runs, wrap="check_runs", extra={"total_count": len(runs)})

    # commit statuses ------------------------------------------------------------------
    @route("POST", "/repos/{owner}/{repo}/statuses/{sha}", perm=("statuses", "write"))
    async def create_status(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        body = request[RECORD].json
        if not isinstance(body, dict) or body.get("state") not in STATUS_STATES:
            raise Rejected(f"state must be one of {sorted(STATUS_STATES)}")
        if params["sha"] not in repo.commits:
            return error(422, f"No commit found for SHA: {params['sha']}")
        desc = body.get("description")
        if desc is not None and len(desc) > 140:
            raise Rejected("description is too long (maximum is 140 characters)")
        st = {"id": self.next_id(), "state": body["state"], "target_url": body.get("target_url"),
              "description": desc, "context": body.get("context", "default"), "sha": params["sha"],
              "repo": repo.full_name, "created_at": _iso(time.time())}
        self.statuses.append(st)
        return json_response({k: v for k, v in st.items() if k not in ("sha", "repo")}, 201)

    # issue comments ---------------------------------------------------------------------
    _COMMENT_PERM = (("issues", "write"), ("pull_requests", "write"))

    def _comment_body(self, body: Any) -> str:
        if not isinstance(body, dict) or not isinstance(body.get("body"), str):
            raise Rejected('"body" wasn\'t supplied.')
        if len(body["body"]) > MAX_TEXT:
            raise Rejected(f"body is too long (maximum is {MAX_TEXT} characters)")
        return body["body"]

    def _comment_json(self, c: dict[str, Any]) -> dict[str, Any]:
        return self._public(c)

    @route("GET", "/repos/{owner}/{repo}/issues/{number}/comments", auth="public",
           perm=(("issues", "read"), ("pull_requests", "read")))
    async def list_comments(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        items = sorted(self.comments_on(ctx.repo.full_name, int(params["number"])), key=lambda c: c["id"])
        return self._page(request, items)

    @route("POST", "/repos/{owner}/{repo}/issues/{number}/comments", perm=_COMMENT_PERM)
    async def create_comment(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        text = self._comment_body(request[RECORD].json)
        cid = self.next_id()
        now = _iso(time.time())
        c = {"id": cid, "node_id": f"IC_{cid}", "body": text, "user": self._user(f"{self.app_slug}[bot]", "Bot"),
             "url": f"{self.url}/repos/{repo.full_name}/issues/comments/{cid}",
             "html_url": f"{self.web_url}/{repo.full_name}/pull/{params['number']}#issuecomment-{cid}",
             "issue_url": f"{self.url}/repos/{repo.full_name}/issues/{params['number']}",
             "created_at": now, "updated_at": now, "author_association": "NONE",
             "performed_via_github_app": {"id": self.app_id, "slug": self.app_slug},
             "_repo": repo.full_name, "_issue": int(params["number"])}
        self.comments[cid] = c
        return json_response(self._comment_json(c), 201)

    def _find_comment(self, repo: FakeRepo, cid: str) -> dict[str, Any] | None:
        c = self.comments.get(int(cid)) if cid.isdigit() else None
        return c if c and c["_repo"] == repo.full_name else None

    @route("GET", "/repos/{owner}/{repo}/issues/comments/{comment_id}", auth="public",
           perm=(("issues", "read"), ("pull_requests", "read")))
    async def get_comment(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        c = self._find_comment(ctx.repo, params["comment_id"])
        return json_response(self._comment_json(c)) if c else error(404, "Not Found")

    @route("PATCH", "/repos/{owner}/{repo}/issues/comments/{comment_id}", perm=_COMMENT_PERM)
    async def update_comment(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        c = self._find_comment(ctx.repo, params["comment_id"])
        if c is None:
            return error(404, "Not Found")
        c["body"] = self._comment_body(request[RECORD].json)
        c["updated_at"] = _iso(time.time())
        return json_response(self._comment_json(c))

    @route("DELETE", "/repos/{owner}/{repo}/issues/comments/{comment_id}", perm=_COMMENT_PERM)
    async def delete_comment(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        c = self._find_comment(ctx.repo, params["comment_id"])
        if c is None:
            return error(404, "Not Found")
        del self.comments[c["id"]]
        return web.Response(status=204)

    @route("POST", "/repos/{owner}/{repo}/issues/comments/{comment_id}/reactions",
           perm=(("issues", "write"), ("pull_requests", "write")))
    async def create_reaction(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        assert ctx.repo is not None
        c = self._find_comment(ctx.repo, params["comment_id"])
        if c is None:
            return error(404, "Not Found")
        body = request[RECORD].json
        if not isinstance(body, dict) or body.get("content") not in REACTIONS:
            raise Rejected(f"content must be one of {sorted(REACTIONS)}")
        for r in self.reactions:  # GitHub answers 200 with the existing reaction
            if r["_comment"] == c["id"] and r["content"] == body["content"]:
                return json_response(self._public(r), 200)
        r = {"id": self.next_id(), "node_id": "REA_x", "content": body["content"],
             "user": self._user(f"{self.app_slug}[bot]", "Bot"), "created_at": _iso(time.time()),
             "_comment": c["id"]}
        self.reactions.append(r)
        return json_response(self._public(r), 201)


# ======================================================================
# BEGIN launcher additions (launcher engineer): conditional requests and the sha media type
#   GitHub answers GETs of a repository and of a commit with an ETag; a request whose
#   If-None-Match matches gets 304 (empty body, no rate-limit cost). ``GET
#   /repos/{owner}/{repo}/commits/{ref}`` with ``Accept: application/vnd.github.sha``
#   answers the bare 40-hex sha as text. Both wrap the handlers above (whatever they
#   answer, these rules apply on top), so changes there carry over.
# ======================================================================
SHA_MEDIA_TYPE = "application/vnd.github.sha"


def _conditional(handler: Any, *, sha_media: bool = False) -> Any:
    async def wrapped(self: FakeGitHub, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        resp = await handler(self, request, params, ctx)
        if resp.status != 200:
            return resp
        headers: dict[str, str] = {}
        body = resp.body if isinstance(resp.body, bytes) else b""
        content_type = resp.headers.get("Content-Type", "application/json; charset=utf-8")
        if sha_media and SHA_MEDIA_TYPE in request.headers.get("Accept", ""):
            body = json.loads(body)["sha"].encode()
            content_type = f"{SHA_MEDIA_TYPE}; charset=utf-8"
        etag = 'W/"' + hashlib.sha256(content_type.encode() + b"\0" + body).hexdigest()[:40] + '"'
        headers["ETag"] = etag
        headers["Cache-Control"] = "private, max-age=60, s-maxage=60"
        headers["Vary"] = "Accept, Authorization, Cookie, X-GitHub-OTP"
        tags = [t.strip() for t in request.headers.get("If-None-Match", "").split(",") if t.strip()]
        if etag in tags or "*" in tags:
            return web.Response(status=304, headers=headers)
        out = web.Response(body=body, status=200, headers=headers)
        out.headers["Content-Type"] = content_type
        return out

    spec = getattr(handler, "_fake_route")
    wrapped._fake_route = spec  # type: ignore[attr-defined]
    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


FakeGitHub.get_commit = _conditional(FakeGitHub.get_commit, sha_media=True)  # type: ignore[method-assign]
FakeGitHub.get_repo = _conditional(FakeGitHub.get_repo)  # type: ignore[method-assign]
# END launcher additions
# ======================================================================
