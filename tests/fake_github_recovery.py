"""FakeGitHub's webhook side and what recovery reads: deliveries, redelivery, lists, quotas.

* ``HookRoutes``: FakeGitHub *sends* webhooks (``await fake.send_webhook(event, payload)``)
  to ``fake.hook_url``, signed with the App's webhook secret, and records each delivery
  the way GitHub's deliveries API shows it: ``status`` "OK", "Invalid HTTP Response: 503",
  or "failed to connect to host" / "timed out" with ``status_code`` 0. The App reads them
  with ``GET /app/hook/deliveries`` (JWT; ``per_page`` and ``cursor`` pagination, newest
  first, a ``Link`` header with the next cursor) and asks for one again with
  ``POST /app/hook/deliveries/{delivery_id}/attempts`` (202); FakeGitHub then redelivers it
  to ``hook_url``: the same body and GUID, signed again, recorded as ``redelivery: true``.
* ``ListRoutes``: ``GET /repos/{owner}/{repo}/branches`` and ``GET /repos/{owner}/{repo}/pulls``
  (``state``, paginated), answered conditionally (ETag / 304) like GitHub.
* ``Quota``: an hourly request budget per identity (``fake.set_quota("app" or an
  installation id, remaining=..., reset=...)``): every answer carries it in the
  ``x-ratelimit-*`` headers, a 304 costs nothing, and at 0 GitHub's 403 "API rate limit
  exceeded" is served until the reset. ``fake.clock`` (default ``time.time``) decides when
  a reset has passed, so a test can drive it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from tests.fake_github_base import DOCS, Ctx, _iso, error, json_response, route

HOOK_ID = 488217651
HOOK_TIMEOUT = 10.0  # GitHub gives a webhook receiver 10 s


@dataclasses.dataclass
class Quota:
    """One identity's hourly budget, as GitHub reports it in ``x-ratelimit-*``."""

    remaining: int
    reset: float  # epoch seconds
    limit: int = 5000

    def headers(self) -> dict[str, str]:
        return {"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": str(max(0, self.remaining)),
                "x-ratelimit-used": str(self.limit - max(0, self.remaining)),
                "x-ratelimit-reset": str(int(self.reset)), "x-ratelimit-resource": "core"}


class RecoveryState:
    """State of the mixins below; ``FakeGitHub.__init__`` calls ``_init_recovery``."""

    def _init_recovery(self) -> None:
        self.hook_url: str | None = None  # where webhooks go (the service's POST /webhooks/github)
        self.hook_deliveries: list[dict[str, Any]] = []  # as the deliveries API shows them, oldest first
        self._hook_sent: dict[int, tuple[str, bytes]] = {}  # delivery id -> (event, body) to redeliver
        self._hook_tasks: set[asyncio.Task[Any]] = set()
        self.quotas: dict[Any, Quota] = {}
        self.clock: Callable[[], float] = time.time

    # quotas ---------------------------------------------------------------------
    def set_quota(self, who: Any, *, remaining: int, reset: float, limit: int = 5000) -> Quota:
        """Give ``who`` ("app" or an installation id) a budget of ``remaining`` until ``reset``."""
        self.quotas[who] = Quota(remaining, reset, limit)
        return self.quotas[who]

    def _quota_of(self, ctx: Ctx | None) -> Quota | None:
        if ctx is None:
            return None
        who: Any = "app" if ctx.kind == "jwt" else (ctx.token.installation_id if ctx.token else None)
        quota = self.quotas.get(who)
        if quota is not None and self.clock() >= quota.reset:  # a new hour
            quota.remaining, quota.reset = quota.limit, quota.reset + 3600
        return quota

    def _quota_refusal(self, ctx: Ctx) -> web.Response | None:
        """GitHub's primary rate limit answer when the budget is spent, else None."""
        quota = self._quota_of(ctx)
        if quota is None or quota.remaining > 0:
            return None
        return json_response({"message": "API rate limit exceeded for installation.", "documentation_url": DOCS},
                             403, quota.headers())

    def _quota_charge(self, ctx: Ctx | None, resp: web.StreamResponse) -> None:
        quota = self._quota_of(ctx)
        if quota is None:
            return
        if resp.status != 304 and not (resp.status == 403 and quota.remaining <= 0):
            quota.remaining -= 1  # a conditional request answered 304 is free
        for k, v in quota.headers().items():
            resp.headers[k] = v

    # sending webhooks -------------------------------------------------------------
    def _sign(self, raw: bytes) -> str:
        return "sha256=" + hmac.new(self.webhook_secret.encode(), raw, hashlib.sha256).hexdigest()

    async def send_webhook(self, event: str, payload: dict[str, Any], *, guid: str | None = None) -> dict[str, Any]:
        """POST one delivery to ``hook_url`` as GitHub does, and record how it went."""
        import uuid

        raw = json.dumps(payload).encode()
        return await self._deliver(event, raw, guid or str(uuid.uuid4()), redelivery=False)

    async def _deliver(self, event: str, raw: bytes, guid: str, *, redelivery: bool) -> dict[str, Any]:
        payload = json.loads(raw)
        headers = {
            "Accept": "*/*", "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/3d7a2c1",
            "X-GitHub-Delivery": guid, "X-GitHub-Event": event, "X-GitHub-Hook-ID": str(HOOK_ID),
            "X-GitHub-Hook-Installation-Target-ID": str(self.app_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            "X-Hub-Signature-256": self._sign(raw),
        }
        started = time.monotonic()
        code, status = 0, "failed to connect to host"
        if self.hook_url:
            try:
                timeout = aiohttp.ClientTimeout(total=HOOK_TIMEOUT)
                async with aiohttp.ClientSession(timeout=timeout) as session:
                    async with session.post(self.hook_url, data=raw, headers=headers) as resp:
                        await resp.read()
                        code = resp.status
                status = "OK" if 200 <= code < 300 else f"Invalid HTTP Response: {code}"
            except asyncio.TimeoutError:
                status = "timed out"
            except aiohttp.ClientError:
                pass
        entry = {
            "id": self.next_id(), "guid": guid, "delivered_at": _iso(time.time()), "redelivery": redelivery,
            "duration": round(time.monotonic() - started, 3), "status": status, "status_code": code,
            "event": event, "action": payload.get("action"),
            "installation_id": (payload.get("installation") or {}).get("id"),
            "repository_id": (payload.get("repository") or {}).get("id"), "throttled_at": None,
        }
        self.hook_deliveries.append(entry)
        self._hook_sent[entry["id"]] = (event, raw)
        return entry

    async def drain_hooks(self) -> None:
        """Wait until every redelivery asked for has been sent."""
        while self._hook_tasks:
            await asyncio.gather(*list(self._hook_tasks), return_exceptions=True)

    def deliveries_of(self, guid: str) -> list[dict[str, Any]]:
        return [d for d in self.hook_deliveries if d["guid"] == guid]


class HookRoutes(RecoveryState):
    """The App's webhook deliveries (JWT)."""

    @route("GET", "/app/hook/deliveries", auth="jwt")
    async def list_hook_deliveries(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        try:
            per_page = int(request.query.get("per_page", "30"))
        except ValueError:
            return error(422, "Invalid per_page")
        if not 1 <= per_page <= 100:
            return error(422, "per_page must be between 1 and 100")
        cursor = request.query.get("cursor")
        newest_first = sorted(self.hook_deliveries, key=lambda d: -d["id"])
        if request.query.get("redelivery") in ("true", "false"):
            want = request.query["redelivery"] == "true"
            newest_first = [d for d in newest_first if d["redelivery"] is want]
        if cursor:
            if not cursor.startswith("v1_") or not cursor[3:].isdigit():
                return error(400, "Invalid cursor")
            newest_first = [d for d in newest_first if d["id"] < int(cursor[3:])]
        page = newest_first[:per_page]
        headers = {}
        if len(newest_first) > per_page:
            q = {k: v for k, v in request.query.items() if k != "cursor"}
            q.update(per_page=str(per_page), cursor=f"v1_{page[-1]['id']}")
            headers["Link"] = f'<{self.url}/app/hook/deliveries?{urlencode(q)}>; rel="next"'
        return json_response(page, headers=headers)

    @route("GET", "/app/hook/deliveries/{delivery_id}", auth="jwt")
    async def get_hook_delivery(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        found = [d for d in self.hook_deliveries if str(d["id"]) == params["delivery_id"]]
        return json_response(found[0]) if found else error(404, "Not Found")

    @route("POST", "/app/hook/deliveries/{delivery_id}/attempts", auth="jwt")
    async def redeliver(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        did = int(params["delivery_id"]) if params["delivery_id"].isdigit() else -1
        entry = next((d for d in self.hook_deliveries if d["id"] == did), None)
        if entry is None:
            return error(404, "Not Found")
        event, raw = self._hook_sent[did]
        task = asyncio.create_task(self._deliver(event, raw, entry["guid"], redelivery=True))
        self._hook_tasks.add(task)
        task.add_done_callback(self._hook_tasks.discard)
        return json_response({}, 202)


class ListRoutes:
    """Lists a reconcile reads: a repository's branches and its pull requests."""

    @route("GET", "/repos/{owner}/{repo}/branches", auth="public", perm=("contents", "read"))
    async def list_branches(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        items = [{"name": name, "protected": False,
                  "commit": {"sha": sha, "url": f"{self.url}/repos/{repo.full_name}/commits/{sha}"}}
                 for name, sha in sorted(repo.branches.items())]
        return self._page(request, items)

    @route("GET", "/repos/{owner}/{repo}/pulls", auth="public", perm=("pull_requests", "read"))
    async def list_pulls(self, request: web.Request, params: dict[str, str], ctx: Ctx) -> web.Response:
        repo = ctx.repo
        assert repo is not None
        state = request.query.get("state", "open")
        if state not in ("open", "closed", "all"):
            return error(422, f"Invalid state: {state}")
        items = [pr for _, pr in sorted(repo.pulls.items(), reverse=True)
                 if state == "all" or pr["state"] == state]
        return self._page(request, items)
