"""Wire-format helpers of the fake Kubernetes API (tests/fake_k8s.py).

``Status`` error bodies, API timestamps, equality-based label selectors, the JSON
merge patch, and repo2docker's ``--json-logs`` lines (what tests log into a pod).
"""
from __future__ import annotations

import copy
import datetime
import json
import re
import time
from typing import Any

from aiohttp import web

K8S_VERSION = "1.30"
NAMESPACE = "binder-prebuild"


def now_rfc3339(at: float | None = None) -> str:
    """RFC 3339 in whole seconds, as the API server writes timestamps (``at``: epoch seconds, default now)."""
    when = datetime.datetime.now(datetime.timezone.utc) if at is None else datetime.datetime.fromtimestamp(
        at, datetime.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


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


def status_response(code: int, reason: str, message: str, **kw: Any) -> web.Response:
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
