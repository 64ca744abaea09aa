"""FakeKubernetes: the shared test double for the Kubernetes API (aiohttp, real wire format).

It speaks the real REST paths and JSON for what binder-prebuild uses: pods
(create, get, list, watch with resourceVersion, delete, log with follow and
timestamps), secrets (create, get, list, patch, delete) and apps/v1 DaemonSets
(create, get, list, replace, merge patch, delete), plus /version.
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

This module is the import surface (tests import from here); the parts live in
  tests/fake_k8s_wire.py        Status bodies, timestamps, label selectors, merge patch, r2d_line
  tests/fake_k8s_validation.py  kubernetes-validate schema and metadata checks (422)
  tests/fake_k8s_store.py       object store, event history, watch fan-out, pod lifecycle
  tests/fake_k8s_routes.py      the aiohttp routes: CRUD, watch and log streams, faults, stats
  tests/fake_k8s_apps.py        apps/v1 DaemonSets: the API server's checks, optimistic concurrency
and FakeKubernetes below adds serving (start/stop, client configuration, kubeconfig).
"""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from tests.fake_k8s_routes import KubeRoutes
from tests.fake_k8s_store import KubeStore
from tests.fake_k8s_validation import check_metadata, validate
from tests.fake_k8s_wire import (
    K8S_VERSION, NAMESPACE, matches, merge_patch, nano_timestamp, now_rfc3339, parse_selector, r2d_line, status,
    status_response,
)

__all__ = [
    "FakeKubernetes", "KubeRoutes", "KubeStore", "K8S_VERSION", "NAMESPACE", "check_metadata", "main", "matches",
    "merge_patch", "nano_timestamp", "now_rfc3339", "parse_selector", "r2d_line", "status", "status_response",
    "validate",
]


class FakeKubernetes(KubeRoutes):
    """An in-process Kubernetes API for pods and secrets. Use as ``async with FakeKubernetes() as k8s``."""

    def __init__(self, *, version: str = K8S_VERSION, history: int = 10_000) -> None:
        super().__init__(version=version, history=history)
        self._runner: web.AppRunner | None = None
        self.url = ""

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
    parser.add_argument("--throttle", type=float, default=0.0, help="share of calls answered 429 + Retry-After")
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--restart-watches", type=float, default=0.0,
                        help="every N seconds end all watches and forget history (an API server restart)")
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeKubernetes(history=2000)
        lines = [r2d_line(f"Step {i + 1}/{args.lines}", "building") for i in range(args.lines)]
        if args.succeed:
            fake.instant = lines
        url = await fake.start(args.port)
        fake.bodies = _Discard()  # type: ignore[assignment]
        fake.requests = _Counted()  # type: ignore[assignment]
        fake.throttle, fake.throttle_retry_after = args.throttle, args.retry_after
        print(url, flush=True)
        try:
            while True:
                await asyncio.sleep(args.restart_watches or 3600)
                if args.restart_watches:
                    fake.compact()
                    fake.cut_watches()
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
