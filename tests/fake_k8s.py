"""FakeKubernetes: the shared test double for the Kubernetes API (aiohttp, real wire format).

It speaks the real REST paths and JSON for what binder-prebuild uses: pods
(create, get, list, watch with resourceVersion, delete, log with follow and
timestamps) and secrets (create, get, list, patch, delete), plus /version.
Every submitted object is validated with kubernetes-validate against the real
schema (strict: unknown fields are errors) and its metadata checked the way the
API server does (names, label keys and values); invalid objects get 422.
Errors are ``Status`` objects: 404 NotFound, 409 AlreadyExists, and a watch
from a resourceVersion older than the retained history gets an ERROR event
carrying a 410 Status, as the real API server sends.

Tests drive the pods: ``set_running``, ``log``, ``succeed``, ``fail``,
``deadline_exceeded``, ``waiting``; ``autopilot`` runs a coroutine for every
created pod (e.g. ``fake.run_pod``), ``instant`` finishes each pod as it is created. Faults:
``fail_next`` (an HTTP error for the next matching requests), ``compact``
(forget history: the next resumed watch gets 410), ``cut_watches`` and
``cut_logs`` (drop open streams). ``open_watches`` counts watch connections.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import functools
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

K8S_VERSION = "1.30"
NAMESPACE = "binder-prebuild"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_TRUE = {"1", "true", "True", "TRUE"}


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def nano_timestamp() -> str:
    ns = time.time_ns()
    dt = datetime.datetime.fromtimestamp(ns // 1_000_000_000, datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + f".{ns % 1_000_000_000:09d}Z"


def r2d_line(message: str, phase: str | None = None, **extra: Any) -> str:
    """A line as repo2docker --json-logs writes it."""
    data: dict[str, Any] = {"message": message}
    if phase:
        data["phase"] = phase
    data.update(extra)
    return json.dumps(data)


def status(code: int, reason: str, message: str, name: str | None = None, kind: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if name is not None:
        body["details"] = {"name": name, "kind": kind}
    return body


def _status_response(code: int, reason: str, message: str, **kw: Any) -> web.Response:
    return web.json_response(status(code, reason, message, **kw), status=code)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (lists replaced; for ownerReferences on a Secret with none,
    the same result a strategic merge patch gives)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def parse_selector(text: str) -> list[tuple[str, str, str | None]]:
    """Equality-based label selectors: k=v, k==v, k!=v, k, !k."""
    terms = []
    for raw in filter(None, (t.strip() for t in text.split(","))):
        if "!=" in raw:
            k, v = raw.split("!=", 1)
            terms.append(("!=", k.strip(), v.strip()))
        elif "==" in raw or "=" in raw:
            k, v = raw.split("==", 1) if "==" in raw else raw.split("=", 1)
            terms.append(("=", k.strip(), v.strip()))
        elif raw.startswith("!"):
            terms.append(("!", raw[1:].strip(), None))
        elif re.match(r"^[\w./-]+$", raw):
            terms.append(("exists", raw, None))
        else:
            raise ValueError(f"unsupported label selector: {raw!r}")
    return terms


def matches(labels: dict[str, str], terms: list[tuple[str, str, str | None]]) -> bool:
    for op, k, v in terms:
        if op == "=" and labels.get(k) != v:
            return False
        if op == "!=" and labels.get(k) == v:
            return False
        if op == "exists" and k not in labels:
            return False
        if op == "!" and k in labels:
            return False
    return True


def check_metadata(obj: dict[str, Any], kind: str) -> list[str]:
    """What the API server checks beyond the schema: names, label keys and values."""
    errors = []
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    pattern = _DNS_LABEL if kind == "Pod" else _DNS_SUBDOMAIN
    if not name or len(name) > (63 if kind == "Pod" else 253) or not pattern.match(name):
        errors.append(f"metadata.name: Invalid value: {name!r}")
    for k, v in (meta.get("labels") or {}).items():
        prefix, _, label = k.rpartition("/")
        if not _LABEL_NAME.match(label) or len(label) > 63 or (prefix and not _DNS_SUBDOMAIN.match(prefix)):
            errors.append(f"metadata.labels: Invalid value: {k!r}: invalid label key")
        if not isinstance(v, str) or len(v) > 63 or not _LABEL_VALUE.match(v):
            errors.append(f"metadata.labels: Invalid value: {v!r}: invalid label value")
    for k, v in (meta.get("annotations") or {}).items():
        if not isinstance(v, str):
            errors.append(f"metadata.annotations: Invalid value: {k!r} must be a string")
    if sum(len(k) + len(v) for k, v in (meta.get("annotations") or {}).items()) > 256 * 1024:
        errors.append("metadata.annotations: Too long")
    return errors


@functools.lru_cache(maxsize=None)
def _schema_validator(kind: str, version: str) -> Any:
    """kubernetes-validate's strict schema for ``kind``, loaded once.

    ``kubernetes_validate.validate`` re-reads the (large) definitions file on every
    call (~20 ms); the fake validates every object it receives, so it builds the
    same validator the same way (same files, same Draft 2020-12 validator) once.
    """
    import jsonschema
    from kubernetes_validate.utils import schema_contents
    from referencing import Registry, Resource

    schema_dir = f"kubernetes-json-schema/v{version}.0-local-strict"
    schema = schema_contents(f"{schema_dir}/{kind.lower()}-v1.json", version)
    defs = schema_contents(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate(obj: dict[str, Any], kind: str, version: str = K8S_VERSION) -> list[str]:
    """Schema (kubernetes-validate's strict schema) and metadata errors; empty when valid."""
    body = dict(obj)
    body.setdefault("apiVersion", "v1")
    body.setdefault("kind", kind)
    errors = check_metadata(body, kind)
    error = next(iter(_schema_validator(kind, version).iter_errors(body)), None)
    if error is not None:
        errors.append(f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}")
    return errors


@dataclasses.dataclass
class _Watcher:
    kind: str
    namespace: str
    terms: list[tuple[str, str, str | None]]
    queue: asyncio.Queue[dict[str, Any] | None]


@dataclasses.dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int


class FakeKubernetes:
    """An in-process Kubernetes API for pods and secrets. Use as ``async with FakeKubernetes() as k8s``."""

    def __init__(self, *, version: str = K8S_VERSION, history: int = 10_000) -> None:
        self.version = version
        self.history_size = history
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.logs: dict[str, list[tuple[str, float, str]]] = {}  # pod uid -> (ts, epoch, line)
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, kind, type, object)
        self.oldest_rv = 0
        self._rv = 1
        self._watchers: list[_Watcher] = []
        self._changed: dict[str, asyncio.Event] = {}  # pod uid -> log/state change
        self._faults: list[_Fault] = []
        self._cut_logs = 0
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[str] = []
        self.invalid: list[tuple[str, list[str]]] = []
        self.open_watches = 0
        self.max_open_watches = 0
        self.watch_requests = 0
        self.expired_watches = 0
        self.open_logs = 0
        self.autopilot: Callable[[dict[str, Any]], Awaitable[None]] | None = None
        self.instant: list[str] | None = None  # pods run, print these lines and succeed on creation
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- server ---------------------------------------------------------------
    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        ns = "/api/v1/namespaces/{ns}"
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/version/", self._version)
        r.add_post(ns + "/pods", self._create_pod)
        r.add_get(ns + "/pods", self._list("Pod"))
        r.add_get(ns + "/pods/{name}", self._get("Pod"))
        r.add_delete(ns + "/pods/{name}", self._delete("Pod"))
        r.add_get(ns + "/pods/{name}/log", self._pod_log)
        r.add_post(ns + "/secrets", self._create_secret)
        r.add_get(ns + "/secrets", self._list("Secret"))
        r.add_get(ns + "/secrets/{name}", self._get("Secret"))
        r.add_delete(ns + "/secrets/{name}", self._delete("Secret"))
        r.add_patch(ns + "/secrets/{name}", self._patch_secret)
        r.add_get("/_fake/stats", self._stats)
        return app

    def stats(self) -> dict[str, int]:
        return {"open_watches": self.open_watches, "max_open_watches": self.max_open_watches,
                "watch_requests": self.watch_requests, "expired_watches": self.expired_watches,
                "requests": len(self.requests), "pods": len(self.pods), "secrets": len(self.secrets),
                "invalid": len(self.invalid)}

    async def _stats(self, request: web.Request) -> web.Response:
        """Counters, for a client in another process (the benchmark); ``?reset=1`` restarts the maximum."""
        stats = self.stats()
        if request.query.get("reset") in _TRUE:
            self.max_open_watches = self.open_watches
        return web.json_response(stats)

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.make_app(), handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for w in list(self._watchers):
            w.queue.put_nowait(None)
        for t in list(self._tasks):
            t.cancel()
        for ev in self._changed.values():
            ev.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "FakeKubernetes":
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def configuration(self) -> Any:
        """A kubernetes_asyncio Configuration pointing here."""
        from kubernetes_asyncio.client import Configuration

        conf = Configuration(host=self.url)
        return conf

    def kubeconfig(self, path: Any, namespace: str = NAMESPACE) -> str:
        """Write a kubeconfig for this server (token auth) and return its path."""
        import yaml

        data = {
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-kube-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }
        with open(path, "w") as f:
            yaml.safe_dump(data, f)
        return str(path)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if request.can_read_body:
            self.bodies.append((await request.read()).decode("utf-8", "replace"))
        for f in self._faults:
            if f.times > 0 and f.method in (request.method, "*") and f.pattern.search(request.path):
                f.times -= 1
                return _status_response(f.status, "InternalError" if f.status >= 500 else "Fault", "injected fault")
        return await handler(request)

    # -- faults and inspection ---------------------------------------------------
    def fail_next(self, method: str, path_regex: str, status: int = 500, times: int = 1) -> None:
        self._faults.append(_Fault(method, re.compile(path_regex), status, times))

    def compact(self) -> None:
        """Drop the event history: a watch resuming from an older resourceVersion gets 410."""
        self.history.clear()
        self.oldest_rv = self._rv + 1  # every version handed out so far is now too old

    def cut_watches(self) -> None:
        """End every open watch (as an API server restart would)."""
        for w in list(self._watchers):
            w.queue.put_nowait(None)

    def cut_logs(self) -> None:
        """End every open log stream while pods keep running (a dropped connection)."""
        self._cut_logs += 1
        for ev in self._changed.values():
            ev.set()

    @property
    def pods(self) -> dict[str, dict[str, Any]]:
        return {k[2]: v for k, v in self.objects.items() if k[0] == "Pod"}

    @property
    def secrets(self) -> dict[str, dict[str, Any]]:
        return {k[2]: v for k, v in self.objects.items() if k[0] == "Secret"}

    def pod(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return self.objects[("Pod", namespace, name)]

    # -- object store ------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        rv = int(obj["metadata"]["resourceVersion"])
        self.history.append((rv, kind, event, obj))
        if len(self.history) > self.history_size:
            drop = len(self.history) - self.history_size
            self.oldest_rv = self.history[drop - 1][0]
            del self.history[:drop]
        ns = obj["metadata"].get("namespace", NAMESPACE)
        labels = obj["metadata"].get("labels") or {}
        for w in self._watchers:
            if w.kind == kind and w.namespace == ns and matches(labels, w.terms):
                w.queue.put_nowait({"type": event, "object": obj})

    def _store(self, kind: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        meta = obj["metadata"]
        self.objects[(kind, meta["namespace"], meta["name"])] = obj
        self._record(kind, event, obj)
        return obj

    def _remove(self, kind: str, ns: str, name: str) -> dict[str, Any] | None:
        obj = self.objects.pop((kind, ns, name), None)
        if obj is None:
            return None
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        obj["metadata"].setdefault("deletionTimestamp", now_rfc3339())
        self._record(kind, "DELETED", obj)
        if kind == "Pod":
            uid = obj["metadata"]["uid"]
            self.logs.pop(uid, None)
            ev = self._changed.pop(uid, None)
            if ev:
                ev.set()
            # the garbage collector: dependents owned by this pod go with it
            for key, dep in list(self.objects.items()):
                refs = dep["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    self._remove(key[0], key[1], key[2])
        return obj

    def _new_object(self, kind: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        obj.setdefault("apiVersion", "v1")
        obj.setdefault("kind", kind)
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        return obj

    async def _body(self, request: web.Request, kind: str) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _status_response(400, "BadRequest", "the body is not JSON")
        if not isinstance(body, dict):
            return _status_response(400, "BadRequest", "the body is not an object")
        if body.get("kind", kind) != kind or body.get("apiVersion", "v1") != "v1":
            return _status_response(400, "BadRequest", f"expected v1 {kind}")
        ns = request.match_info["ns"]
        if body.get("metadata", {}).get("namespace", ns) != ns:
            return _status_response(400, "BadRequest", "the namespace of the object does not match the request")
        return body

    def _invalid(self, kind: str, name: str, errors: list[str]) -> web.Response:
        self.invalid.append((name, errors))
        return _status_response(422, "Invalid", f"{kind} {name!r} is invalid: " + "; ".join(errors),
                                name=name, kind=kind.lower() + "s")

    # -- handlers ----------------------------------------------------------------
    async def _version(self, request: web.Request) -> web.Response:
        major, minor = self.version.split(".")[:2]
        return web.json_response({"major": major, "minor": minor, "gitVersion": f"v{major}.{minor}.0",
                                  "platform": "linux/amd64"})

    async def _create_pod(self, request: web.Request) -> web.Response:
        body = await self._body(request, "Pod")
        if isinstance(body, web.Response):
            return body
        ns = request.match_info["ns"]
        name = body.get("metadata", {}).get("name", "")
        errors = validate(body, "Pod", self.version)
        if errors:
            return self._invalid("Pod", name, errors)
        if ("Pod", ns, name) in self.objects:
            return _status_response(409, "AlreadyExists", f'pods "{name}" already exists', name=name, kind="pods")
        obj = self._new_object("Pod", ns, body)
        obj["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        obj = self._store("Pod", obj, "ADDED")
        self.logs[obj["metadata"]["uid"]] = []
        self._changed[obj["metadata"]["uid"]] = asyncio.Event()
        if self.instant is not None:
            self.set_running(name, ns)
            self.log(name, *self.instant, namespace=ns)
            self.succeed(name, ns)
        if self.autopilot is not None:
            task = asyncio.create_task(self.autopilot(copy.deepcopy(obj)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(obj, status=201)

    async def _create_secret(self, request: web.Request) -> web.Response:
        body = await self._body(request, "Secret")
        if isinstance(body, web.Response):
            return body
        ns = request.match_info["ns"]
        name = body.get("metadata", {}).get("name", "")
        errors = validate(body, "Secret", self.version)
        if errors:
            return self._invalid("Secret", name, errors)
        if ("Secret", ns, name) in self.objects:
            return _status_response(409, "AlreadyExists", f'secrets "{name}" already exists', name=name,
                                    kind="secrets")
        obj = self._new_object("Secret", ns, body)
        self._fold_string_data(obj)
        obj = self._store("Secret", obj, "ADDED")
        return web.json_response(obj, status=201)

    @staticmethod
    def _fold_string_data(obj: dict[str, Any]) -> None:
        obj.setdefault("type", "Opaque")
        data = obj.setdefault("data", {})
        for k, v in (obj.pop("stringData", None) or {}).items():
            data[k] = base64.b64encode(v.encode()).decode()

    async def _patch_secret(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        ctype = request.headers.get("Content-Type", "")
        if ctype not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            return _status_response(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")
        current = self.objects.get(("Secret", ns, name))
        if current is None:
            return _status_response(404, "NotFound", f'secrets "{name}" not found', name=name, kind="secrets")
        try:
            patch = await request.json()
        except ValueError:
            return _status_response(400, "BadRequest", "the patch is not JSON")
        merged = merge_patch(current, patch)
        errors = validate(merged, "Secret", self.version)
        if errors:
            return self._invalid("Secret", name, errors)
        for k in ("uid", "name", "namespace", "creationTimestamp"):
            merged["metadata"][k] = current["metadata"][k]
        self._fold_string_data(merged)
        obj = self._store("Secret", merged, "MODIFIED")
        return web.json_response(obj)

    def _get(self, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            ns, name = request.match_info["ns"], request.match_info["name"]
            obj = self.objects.get((kind, ns, name))
            if obj is None:
                plural = kind.lower() + "s"
                return _status_response(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            return web.json_response(obj)
        return handler

    def _delete(self, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            ns, name = request.match_info["ns"], request.match_info["name"]
            obj = self._remove(kind, ns, name)
            if obj is None:
                plural = kind.lower() + "s"
                return _status_response(404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural)
            return web.json_response(obj)
        return handler

    def _list(self, kind: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.StreamResponse:
            ns = request.match_info["ns"]
            try:
                terms = parse_selector(request.query.get("labelSelector", ""))
            except ValueError as e:
                return _status_response(400, "BadRequest", str(e))
            if request.query.get("watch") in _TRUE:
                return await self._watch(request, kind, ns, terms)
            items = [o for (k, n, _), o in self.objects.items()
                     if k == kind and n == ns and matches(o["metadata"].get("labels") or {}, terms)]
            return web.json_response({"kind": f"{kind}List", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": str(self._rv)}, "items": items})
        return handler

    async def _watch(self, request: web.Request, kind: str, ns: str,
                     terms: list[tuple[str, str, str | None]]) -> web.StreamResponse:
        self.watch_requests += 1
        rv_param = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        watcher = _Watcher(kind, ns, terms, asyncio.Queue())
        initial: list[dict[str, Any]] = []
        if rv_param in ("", "0"):
            initial = [{"type": "ADDED", "object": o} for (k, n, _), o in self.objects.items()
                       if k == kind and n == ns and matches(o["metadata"].get("labels") or {}, terms)]
        elif int(rv_param) < self.oldest_rv:
            self.expired_watches += 1
            err = status(410, "Expired", f"too old resource version: {rv_param} ({self.oldest_rv})")
            await resp.write(json.dumps({"type": "ERROR", "object": err}).encode() + b"\n")
            await resp.write_eof()
            return resp
        else:
            since = int(rv_param)
            initial = [{"type": t, "object": o} for rv, k, t, o in self.history
                       if rv > since and k == kind and o["metadata"].get("namespace") == ns
                       and matches(o["metadata"].get("labels") or {}, terms)]
        self._watchers.append(watcher)
        self.open_watches += 1
        self.max_open_watches = max(self.max_open_watches, self.open_watches)
        deadline = time.monotonic() + timeout
        try:
            for ev in initial:
                await resp.write(json.dumps(ev).encode() + b"\n")
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(watcher.queue.get(), min(left, 0.2))
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if ev is None:
                    break
                await resp.write(json.dumps(ev).encode() + b"\n")
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass
        finally:  # counted as closed before the client can see the end and reconnect
            self._watchers.remove(watcher)
            self.open_watches -= 1
        try:
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError):
            pass
        return resp

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.objects.get(("Pod", ns, name))
        if pod is None:
            return _status_response(404, "NotFound", f'pods "{name}" not found', name=name, kind="pods")
        uid = pod["metadata"]["uid"]
        container = pod["spec"]["containers"][0]["name"]
        if request.query.get("container", container) != container:
            return _status_response(400, "BadRequest", f"container {request.query['container']} is not valid")
        if not self._container_started(pod):
            reason = self._waiting_reason(pod)
            return _status_response(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        follow = request.query.get("follow") in _TRUE
        stamps = request.query.get("timestamps") in _TRUE
        since = request.query.get("sinceSeconds")
        cutoff = time.time() - int(since) if since else None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        self.open_logs += 1
        sent = 0
        cuts = self._cut_logs
        try:
            while True:
                ev = self._changed.get(uid)
                if ev is not None:
                    ev.clear()
                current = self.objects.get(("Pod", ns, name))
                done = (not follow or current is None or current["metadata"]["uid"] != uid
                        or self._terminated(current))
                lines = self.logs.get(uid, [])
                while sent < len(lines):  # lines logged while we write are sent too
                    batch = lines[sent:]
                    sent += len(batch)
                    for ts, epoch, line in batch:
                        if cutoff is None or epoch >= cutoff:
                            await resp.write(((ts + " ") if stamps else "").encode() + line.encode() + b"\n")
                if done or ev is None:
                    break
                try:
                    await asyncio.wait_for(ev.wait(), 0.5)
                except asyncio.TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                if self._cut_logs != cuts:
                    break
            await resp.write_eof()
        except (ConnectionResetError, RuntimeError, asyncio.CancelledError):
            pass
        finally:
            self.open_logs -= 1
        return resp

    # -- pod lifecycle, driven by tests -----------------------------------------
    @staticmethod
    def _container_started(pod: dict[str, Any]) -> bool:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            return "running" in cs.get("state", {}) or "terminated" in cs.get("state", {})
        return False

    @staticmethod
    def _terminated(pod: dict[str, Any]) -> bool:
        return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")

    @staticmethod
    def _waiting_reason(pod: dict[str, Any]) -> str:
        for cs in pod.get("status", {}).get("containerStatuses") or []:
            return cs.get("state", {}).get("waiting", {}).get("reason", "ContainerCreating")
        return "ContainerCreating"

    def _update_status(self, name: str, namespace: str, **changes: Any) -> dict[str, Any]:
        pod = copy.deepcopy(self.objects[("Pod", namespace, name)])
        st = pod.setdefault("status", {})
        container = pod["spec"]["containers"][0]
        state = changes.pop("state", None)
        for k, v in changes.items():
            if v is None:
                st.pop(k, None)
            else:
                st[k] = v
        if state is not None:
            st["containerStatuses"] = [{
                "name": container["name"], "image": container["image"], "imageID": "",
                "ready": "running" in state, "restartCount": 0, "started": "running" in state, "state": state,
            }]
        pod = self._store("Pod", pod, "MODIFIED")
        ev = self._changed.get(pod["metadata"]["uid"])
        if ev:
            ev.set()
        return pod

    def waiting(self, name: str, reason: str = "ContainerCreating", message: str | None = None,
                namespace: str = NAMESPACE) -> dict[str, Any]:
        detail = {"reason": reason} | ({"message": message} if message else {})
        return self._update_status(name, namespace, phase="Pending", state={"waiting": detail})

    def set_running(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        pod = self.objects[("Pod", namespace, name)]
        pod["spec"]["nodeName"] = "fake-node"
        return self._update_status(name, namespace, phase="Running", startTime=now_rfc3339(),
                                   state={"running": {"startedAt": now_rfc3339()}})

    def log(self, name: str, *lines: str, namespace: str = NAMESPACE) -> None:
        pod = self.objects[("Pod", namespace, name)]
        uid = pod["metadata"]["uid"]
        for line in lines:
            self.logs[uid].append((nano_timestamp(), time.time(), line))
        ev = self._changed.get(uid)
        if ev:
            ev.set()

    def succeed(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        return self._update_status(name, namespace, phase="Succeeded", state={"terminated": {
            "exitCode": 0, "reason": "Completed", "startedAt": now_rfc3339(), "finishedAt": now_rfc3339()}})

    def fail(self, name: str, exit_code: int = 1, reason: str = "Error", message: str | None = None,
             namespace: str = NAMESPACE) -> dict[str, Any]:
        term: dict[str, Any] = {"exitCode": exit_code, "reason": reason, "startedAt": now_rfc3339(),
                                "finishedAt": now_rfc3339()}
        if message:
            term["message"] = message
        return self._update_status(name, namespace, phase="Failed", state={"terminated": term})

    def deadline_exceeded(self, name: str, namespace: str = NAMESPACE) -> dict[str, Any]:
        """What the kubelet reports when activeDeadlineSeconds passes."""
        return self._update_status(
            name, namespace, phase="Failed", reason="DeadlineExceeded",
            message="Pod was active on the node longer than the specified deadline",
            state={"terminated": {"exitCode": 137, "reason": "Error", "startedAt": now_rfc3339(),
                                  "finishedAt": now_rfc3339()}})

    async def run_pod(self, name: str, lines: list[str] | tuple[str, ...] = (), *, succeed: bool = True,
                      namespace: str = NAMESPACE, delay: float = 0.0) -> None:
        """Pending -> Running -> (log lines) -> Succeeded or Failed; for autopilots."""
        if ("Pod", namespace, name) not in self.objects:
            return
        self.set_running(name, namespace)
        if delay:
            await asyncio.sleep(delay)
        if ("Pod", namespace, name) not in self.objects:
            return
        if lines:
            self.log(name, *lines, namespace=namespace)
        if succeed:
            self.succeed(name, namespace)
        else:
            self.fail(name, namespace=namespace)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll until ``predicate()`` is truthy (tests waiting for the builder to act)."""
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > end:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.01)


def main(argv: list[str] | None = None) -> None:
    """Serve the fake on its own (``python -m tests.fake_k8s --port 0 --succeed``): prints its URL.

    With ``--succeed`` every created pod runs, prints ``--lines`` repo2docker
    lines and succeeds as it is created (``instant``); requests are counted, not kept.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--succeed", action="store_true")
    parser.add_argument("--lines", type=int, default=5)
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeKubernetes(history=2000)
        lines = [r2d_line(f"Step {i + 1}/{args.lines}", "building") for i in range(args.lines)]
        if args.succeed:
            fake.instant = lines
        url = await fake.start(args.port)
        fake.bodies = _Discard()  # type: ignore[assignment]
        fake.requests = _Counted()  # type: ignore[assignment]
        print(url, flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


class _Counted(list):  # type: ignore[type-arg]
    """Counts requests without keeping them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def append(self, item: Any) -> None:
        self.count += 1

    def __len__(self) -> int:
        return self.count


if __name__ == "__main__":
    main()
