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

Layout: tests/fake_github_base.py holds the building blocks (Fault, Recorded, the state
dataclasses, ``route``, ``json_response``/``error``, ``Rejected``); tests/fake_github_routes.py
the routes, one mixin per API area (AppRoutes, RepoRoutes, CheckRoutes, IssueRoutes); this
module the server (recording, faults, auth, permissions, pagination) and the state helpers
tests call (``add_repo``, ``add_installation``, ``add_pull``, ``comments_on``, ...).

Extending it: add a method decorated with ``@route(METHOD, TEMPLATE, auth=..., perm=...)``
to the matching mixin (or a subclass), or call ``fake.add_route(...)`` at run time. Handlers
get ``(request, params, ctx)`` and return ``web.Response`` (use ``json_response`` /
``error``; raise ``Rejected(reason)`` for a 422). Path templates use ``{name}`` for one
segment and ``{name:.*}`` for the rest. ``auth`` is "token" (installation token),
"public" (token, or anonymous GETs of public repositories), "jwt" or "none"; ``perm`` is
the installation permission the route needs, e.g. ``("checks", "write")``, or a tuple of
alternatives. A handler that raises is answered 500 and recorded in ``fake.errors``.

Use it from pytest through the ``fake_github`` fixture (tests/fixtures/github.py), or
standalone: ``fake = FakeGitHub(); await fake.start(); ...; await fake.close()``.
"""
from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import json
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web

from tests.fake_github_base import (  # noqa: F401  (re-exported: tests import them from here)
    _LEVEL, CHECK_CONCLUSIONS, CHECK_STATUSES, DEFAULT_EVENTS, DEFAULT_PERMISSIONS, DOCS, MAX_TEXT, REACTIONS,
    RECORD, STATUS_STATES, Ctx, Fault, FakeCommit, FakeInstallation, FakeRepo, FakeToken, Handler, Recorded,
    Rejected, _compile, _iso, _Route, _sha, error, json_response, public_key_of, route, settings_for,
    test_private_key,
)
from tests.fake_github_recovery import HookRoutes, ListRoutes, Quota  # noqa: F401
from tests.fake_github_routes import AppRoutes, CheckRoutes, IssueRoutes, RepoRoutes

# ---------------------------------------------------------------------------
# the server
# ---------------------------------------------------------------------------

class FakeGitHub(AppRoutes, RepoRoutes, CheckRoutes, IssueRoutes, HookRoutes, ListRoutes):
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
        self.rejected: list[tuple[Recorded, str]] = []  # requests answered 422, and why
        self.errors: list[tuple[Recorded, Exception]] = []  # handlers that raised (bugs in the fake)
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
        self._init_recovery()  # webhook deliveries, redelivery, quotas (tests/fake_github_recovery.py)
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
                  perm: tuple[str, str] | tuple[tuple[str, str], ...] = ()) -> None:
        """Register (or override: the newest wins) a route."""
        if perm and isinstance(perm[0], str):
            perm = (perm,)  # type: ignore[assignment]
        self._routes.insert(0, _Route(method.upper(), template, _compile(template), handler, auth,
                                      tuple(perm)))  # type: ignore[arg-type]

    def inject(self, method: str, path: str, *faults: Fault) -> None:
        """Queue ``faults`` for ``METHOD path`` (route template or concrete path); served in order."""
        self._faults.setdefault((method.upper(), path), []).extend(faults)

    def pending_faults(self) -> int:
        return sum(len(q) for q in self._faults.values())

    def clear_faults(self) -> None:
        """Drop every queued fault (GitHub is healthy again)."""
        self._faults.clear()

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
            if fault.held is not None:
                await fault.held.wait()
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
        refused = self._quota_refusal(ctx)
        if refused is not None:
            return refused
        checked = self._check_repo(r, params, ctx, request.method)
        if isinstance(checked, web.Response):
            return checked
        try:
            resp = await r.handler(request, params, ctx)
        except Rejected as e:
            self.rejected.append((rec, str(e)))
            resp = error(422, f"Invalid request.\n\n{e}")
        except Exception as e:  # a bug in the fake: answer like a broken GitHub, and keep it for the test
            self.errors.append((rec, e))
            resp = error(500, f"FakeGitHub handler error: {type(e).__name__}: {e}")
        self._quota_charge(ctx, resp)
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
        if "Link" in resp.headers:  # a paginated list keeps its pages
            headers["Link"] = resp.headers["Link"]
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
# lists a reconcile round reads every interval (an unchanged one answers 304)
for _name in ("list_branches", "list_pulls", "list_installations", "installation_repos"):
    setattr(FakeGitHub, _name, _conditional(getattr(FakeGitHub, _name)))
# END launcher additions
# ======================================================================
