"""Parts of the end-to-end test (tests/test_e2e.py) that are plumbing, not assertions.

* ``FakeGitHubThread``: the shared FakeGitHub, served from its own thread and event
  loop, so GitHub keeps answering the service while the test blocks on podman or HTTP.
* ``RegistryWatch``: polls the registry for image manifests in a thread and writes
  down, per image, the last time it was absent and the first time it was there.
* ``Stack``: ``binder-prebuild up`` (the README's first command) as a child process
  on free loopback ports, its output in a log file, stopped with everything it started.
* small HTTP helpers: the launch page's event stream, build records from the store.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from tests.fake_github import FakeGitHub

REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.5,
               on_timeout: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError naming ``what`` if not."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            extra = on_timeout() if on_timeout else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# GitHub
# ---------------------------------------------------------------------------

class FakeGitHubThread:
    """``FakeGitHub`` on a loop of its own; ``call(fn, ...)`` changes its state on that loop."""

    def __init__(self, private_key: str) -> None:
        self.fake = FakeGitHub(private_key=private_key)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="fake-github", daemon=True)

    def start(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.fake.start(), self.loop).result(30)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()


# ---------------------------------------------------------------------------
# the registry, watched
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Sighting:
    last_absent: float | None = None  # the last poll that found no manifest
    first_present: float | None = None  # the first poll that found it


class RegistryWatch:
    """Polls ``GET /v2/<name>/manifests/<tag>`` for each watched image every ``interval`` s."""

    def __init__(self, registry_url: str, interval: float = 0.1, *, authorization: str | None = None) -> None:
        self.registry_url = registry_url.rstrip("/")
        self.interval = interval
        self.headers = {"Accept": MANIFEST_ACCEPT} | ({"Authorization": authorization} if authorization else {})
        self.images: dict[str, Sighting] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-watch", daemon=True)

    def watch(self, image: str) -> None:
        with self._lock:
            self.images.setdefault(image, Sighting())

    def sighting(self, image: str) -> Sighting:
        with self._lock:
            return dataclasses.replace(self.images[image])

    def manifest_status(self, image: str) -> int:
        host_path, _, tag = image.rpartition(":")
        name = host_path.split("/", 1)[1]
        req = urllib.request.Request(f"{self.registry_url}/v2/{name}/manifests/{tag}", method="GET",
                                     headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pending = [i for i, s in self.images.items() if s.first_present is None]
            for image in pending:
                asked = time.time()  # before the request: "absent" only for what the answer proves
                status = self.manifest_status(image)
                with self._lock:
                    s = self.images[image]
                    if status == 200:
                        s.first_present = time.time()
                    elif status == 404:
                        s.last_absent = asked
            self._stop.wait(self.interval)


# ---------------------------------------------------------------------------
# the stack: `binder-prebuild up`
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class Stack:
    env: dict[str, str]
    data_dir: Path
    log_path: Path
    public_url: str
    hub_url: str
    proc: subprocess.Popen[bytes] | None = None
    _descendants: set[int] = dataclasses.field(default_factory=set)

    def start(self) -> None:
        command = [str(Path(sys.executable).parent / "binder-prebuild"), "up"]
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(command, env=self.env, cwd=str(REPO_ROOT), stdout=log_file,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 200) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def health(self) -> dict[str, Any] | None:
        try:
            resp = requests.get(f"{self.public_url}/health", timeout=10)
        except requests.RequestException:
            return None
        return resp.json() if resp.headers.get("Content-Type", "").startswith("application/json") else None

    def wait_ready(self, timeout: float = 120) -> dict[str, Any]:
        """Until the Hub answers and the service's /health says it reaches the Hub."""
        def ready() -> dict[str, Any] | None:
            if not self.alive():
                raise AssertionError(f"`binder-prebuild up` exited with {self.proc.returncode}:\n"  # type: ignore
                                     f"{self.log_tail()}")
            try:
                if requests.get(f"{self.hub_url}/hub/api/", timeout=5).status_code != 200:
                    return None
            except requests.RequestException:
                return None
            health = self.health()
            if health and any(c["name"] == "hub" and c["ok"] for c in health["checks"]):
                return health
            return None

        return wait_until("the Hub and binder-prebuild's /health", ready, timeout,
                          on_timeout=lambda: f"\n{self.log_tail()}")

    def remember_descendants(self) -> None:
        """Every process under `up` now (the Hub, the proxy, the services), to stop stragglers by pid."""
        if self.proc is None:
            return
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                if child not in self._descendants:
                    self._descendants.add(child)
                    todo.append(child)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to `up` (it forwards it to the Hub, which stops its services and servers)."""
        if self.proc is None:
            return
        self.remember_descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        deadline = time.monotonic() + 15
        for pid in sorted(self._descendants):
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# ---------------------------------------------------------------------------
# launching like a browser, and reading the service's store
# ---------------------------------------------------------------------------

def launch_events_url(page_html: str) -> str:
    """The event stream URL the progress page's script would open."""
    marker = '<script id="launch-config" type="application/json">'
    assert marker in page_html, f"not a progress page:\n{page_html[:2000]}"
    return json.loads(page_html.split(marker, 1)[1].split("</script>", 1)[0])["events_url"]


def read_events(session: requests.Session, url: str, timeout: float) -> Iterator[dict[str, Any]]:
    """The ``data:`` JSON of each server-sent event, as it arrives (until the stream ends)."""
    with session.get(url, stream=True, timeout=(10, timeout),
                     headers={"Accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200, (resp.status_code, resp.text[:2000])
        assert resp.headers["Content-Type"].startswith("text/event-stream"), resp.headers
        data: list[str] = []
        for line in resp.iter_lines(decode_unicode=True):
            if line is None:
                continue
            if line == "":
                if data:
                    yield json.loads("\n".join(data))
                data = []
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())


def build_records(db_path: Path) -> list[dict[str, Any]]:
    """Every row of the service's ``builds`` table (read-only; the service keeps writing)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute("SELECT * FROM builds ORDER BY created_at")]
    finally:
        con.close()
