"""FakeGitHub's REST routes, one mixin per area of GitHub's API.

Each handler is ``async def name(self, request, params, ctx) -> web.Response`` marked with
``@route(METHOD, TEMPLATE, auth=..., perm=...)``; FakeGitHub (tests/fake_github.py) inherits
every mixin and registers what it finds. ``self`` is the FakeGitHub: its state
(``self.repos``, ``self.installations``, ...), JSON shapes (``self._repo_json``, ...) and
``self._page`` for paginated lists. To add a route, add a method to the matching mixin.
"""
from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from typing import Any

from aiohttp import web

from tests.fake_github_base import (
    _LEVEL, CHECK_CONCLUSIONS, CHECK_STATUSES, DEFAULT_EVENTS, DEFAULT_PERMISSIONS, MAX_TEXT, REACTIONS,
    RECORD, STATUS_STATES, Ctx, FakeCommit, FakeRepo, FakeToken, Rejected, _iso, _sha, error, json_response,
    route,
)


class AppRoutes:
    """Authenticated as the App (JWT): the App, its installations, tokens; the manifest conversion."""

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


class RepoRoutes:
    """Installation token (or anonymous, public repos): repositories, commits, refs, contents, PRs."""

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

    @route("GET", "/repos/{owner}/{repo}/compare/{basehead:.+}", auth="public", perm=("contents", "read"))
    async def compare(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        """GitHub's compare: ``status`` is how HEAD relates to BASE (ahead, behind, identical, diverged)."""
        repo = ctx.repo
        assert repo is not None
        base_ref, sep, head_ref = params["basehead"].partition("...")
        base, head = repo.resolve(base_ref), repo.resolve(head_ref) if sep else None
        if base is None or head is None:
            return error(404, "Not Found")

        def ancestors(sha: str) -> list[str]:  # sha first, then its history (breadth first)
            seen, todo = [sha], [sha]
            while todo:
                for p in repo.commits[todo.pop(0)].parents:
                    if p not in seen and p in repo.commits:
                        seen.append(p)
                        todo.append(p)
            return seen

        of_head, of_base = ancestors(head), ancestors(base)
        merge_base = next((s for s in of_head if s in of_base), None)
        ahead = [s for s in of_head if s not in of_base]
        behind = [s for s in of_base if s not in of_head]
        status = ("identical" if head == base else "behind" if not ahead else "ahead" if not behind else "diverged")
        return json_response({
            "url": f"{self.url}/repos/{repo.full_name}/compare/{params['basehead']}",
            "status": status, "ahead_by": len(ahead), "behind_by": len(behind), "total_commits": len(ahead),
            "base_commit": self._commit_json(repo, repo.commits[base]),
            "merge_base_commit": self._commit_json(repo, repo.commits[merge_base]) if merge_base else None,
            "commits": [self._commit_json(repo, repo.commits[s]) for s in reversed(ahead)][:250],
            "files": [],
        })

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


class CheckRoutes:
    """Check runs and commit statuses, validated like GitHub validates them."""

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
        app_id = request.query.get("app_id")
        if app_id:
            runs = [r for r in runs if str(r["app"]["id"]) == app_id]
        which = request.query.get("filter", "latest")
        if which not in ("latest", "all"):
            return error(422, "filter must be latest or all")
        if which == "latest":  # GitHub's default: only the newest run of each name (per app)
            newest: dict[tuple[str, Any], dict[str, Any]] = {}
            for r in runs:
                key = (r["name"], r["app"]["id"])
                if key not in newest or r["id"] > newest[key]["id"]:
                    newest[key] = r
            runs = [r for r in runs if newest[(r["name"], r["app"]["id"])] is r]
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


class IssueRoutes:
    """Issue (and PR) comments, paginated, and their reactions."""

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
