"""A real JupyterHub for tests, and a launcher app wired to it.

``start_hub`` runs ``jupyterhub`` (from the venv) with ``configurable-http-proxy``
(from npm) on free loopback ports. Its spawner is ``RecordingSpawner``:
``BinderSpawnerMixin`` in front of JupyterHub's ``SimpleLocalProcessSpawner``, so a
launch runs a real ``jupyterhub-singleuser`` process (as root: ``--allow-root``)
and writes down the image it was asked for (and the BINDER_* environment, never
the token) in a JSON-lines file. Images whose name contains ``stuck-`` never
finish starting (for the launch-timeout test). ``BaselineSpawner`` also starts
BinderHub's launches, and ``extra_services`` gives other launchers (the launch
benchmark's BinderHub) a service token of their own.

What must be installed (``.ci/run`` does it; nothing here installs anything):
``pip install jupyterhub jupyter-server`` (project deps) and
``npm install --prefix .cache/node configurable-http-proxy`` (found at
``.cache/node/node_modules/.bin/configurable-http-proxy``, else on PATH, else
``$CONFIGURABLE_HTTP_PROXY``).

``LauncherHarness`` assembles the launch side as the app does (store, EventBus,
scheduler, the shared InstantBuilder pushing to a FakeRegistry read by the real
RegistryClient, GitHub App pointing at FakeGitHub) with only the launcher routes
and /health mounted.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from jupyterhub.spawner import SimpleLocalProcessSpawner
from tornado import web
from traitlets import Unicode

from launcher.spawner import SERVICE_SCOPES, BinderSpawnerMixin, binder_env, check_options

REPO_ROOT = Path(__file__).resolve().parents[1]
HUB_PREFIX = "127.0.0.1:5999/binder-test/"


class RecordingSpawner(BinderSpawnerMixin, SimpleLocalProcessSpawner):
    """Runs jupyterhub-singleuser locally; records what it was asked to start."""

    record_path = Unicode("", config=True)

    async def start(self):  # type: ignore[override]
        options = self._binder_options()  # refuses (400) before anything is recorded
        record = {
            "user": self.user.name,
            "server": self.name,
            "image": options["image"],
            "env": {k: v for k, v in self.get_env().items()
                    if k.startswith("BINDER_") or k == "JUPYTERHUB_ALLOW_TOKEN_IN_URL"},
        }
        if self.record_path:
            with open(self.record_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if "stuck-" in options["image"]:
            await asyncio.sleep(3600)
        return await super().start()


# BinderHub's launch token: 16 random bytes, URL-safe base64 without padding (binderhub/launcher.py)
_BINDERHUB_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")


class BaselineSpawner(RecordingSpawner):
    """RecordingSpawner that also starts BinderHub's launches, for benchmarks/launch_overhead.py's baseline.

    BinderHub sends the same user_options keys and names the same images (same prefix, same
    rule), but its launch token is 22 characters where our mixin asks for 32 or more. Only
    that length is let through here: everything else (the image prefix above all) is checked
    by the product's own ``check_options``, which stays as strict as it is.
    """

    def _binder_options(self) -> dict[str, str]:
        options = self.user_options or {}
        token = options.get("token") if isinstance(options, dict) else None
        if isinstance(token, str) and _BINDERHUB_TOKEN.fullmatch(token):
            try:
                checked = check_options({**options, "token": "x" * 32}, self.image_prefix)
            except ValueError:
                return super()._binder_options()  # refused, with the product's own message
            return {**checked, "token": token}
        return super()._binder_options()

    def get_env(self):  # type: ignore[override]
        env = super().get_env()
        try:
            env.update(binder_env(self._binder_options()))
        except web.HTTPError:
            pass
        return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chp() -> str | None:
    candidates = [os.environ.get("CONFIGURABLE_HTTP_PROXY", ""),
                  str(REPO_ROOT / ".cache/node/node_modules/.bin/configurable-http-proxy"),
                  shutil.which("configurable-http-proxy") or ""]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@dataclasses.dataclass
class RealHub:
    url: str  # public (the proxy)
    api_url: str  # http://127.0.0.1:PORT/hub/api
    token: str  # the binder-prebuild service token
    prefix: str
    root: Path
    proc: subprocess.Popen[bytes] | None = None
    service_tokens: dict[str, str] = dataclasses.field(default_factory=dict)  # extra services: name -> token

    @property
    def record_path(self) -> Path:
        return self.root / "spawns.jsonl"

    @property
    def log_path(self) -> Path:
        return self.root / "hub.log"

    def records(self) -> list[dict[str, Any]]:
        if not self.record_path.exists():
            return []
        return [json.loads(line) for line in self.record_path.read_text().splitlines() if line.strip()]

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers={"Authorization": f"token {token or self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def users(self) -> list[dict[str, Any]]:
        _, data = self.api("GET", "/users?limit=200")
        return data if isinstance(data, list) else data.get("items", [])

    def running_servers(self) -> list[str]:
        out = []
        for u in self.users():
            for name, s in (u.get("servers") or {}).items():
                if s.get("ready") or s.get("pending"):
                    out.append(f"{u['name']}/{name}")
        return out

    def delete_all_users(self, timeout: float = 60) -> None:
        """Stop every server and delete every user (between tests)."""
        deadline = time.monotonic() + timeout
        while True:
            users = self.users()
            if not users:
                return
            for u in users:
                if any(not s.get("stopped") for s in (u.get("servers") or {}).values()) or u.get("server"):
                    self.api("DELETE", f"/users/{u['name']}/server")
                self.api("DELETE", f"/users/{u['name']}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not delete hub users: {[u['name'] for u in self.users()]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


HUB_CONFIG = """
import sys
sys.path.insert(0, {repo_root!r})
from tests.real_hub import {spawner}

c = get_config()
c.JupyterHub.bind_url = {bind_url!r}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {pid_file!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_file!r}
c.JupyterHub.authenticator_class = "null"
c.JupyterHub.allow_named_servers = True
c.JupyterHub.cleanup_servers = True
c.JupyterHub.spawner_class = {spawner}
c.RecordingSpawner.record_path = {record_path!r}
c.RecordingSpawner.home_dir_template = {home_template!r}
c.BinderSpawnerMixin.image_prefix = {prefix!r}
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.JupyterHub.services = [{{"name": "binder-prebuild", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "binder-prebuild", "scopes": {scopes!r}, "services": ["binder-prebuild"]}}]
for _name, _token in {extra!r}.items():  # other launchers (the benchmark's BinderHub): the same scopes
    c.JupyterHub.services.append({{"name": _name, "api_token": _token}})
    c.JupyterHub.load_roles.append({{"name": _name, "scopes": {scopes!r}, "services": [_name]}})
"""


def start_hub(root: Path, prefix: str = HUB_PREFIX, timeout: float = 90, *, extra_services: tuple[str, ...] = (),
              spawner: str = "RecordingSpawner") -> RealHub:
    """Start a real JupyterHub; raises RuntimeError (with the log) if it does not come up.

    ``extra_services`` get a service token each (``hub.service_tokens``) with the launcher's
    scopes; ``spawner`` names a spawner class of this module (``BaselineSpawner`` also starts
    BinderHub's launches)."""
    if spawner not in ("RecordingSpawner", "BaselineSpawner"):
        raise ValueError(f"unknown spawner {spawner!r}")
    chp = find_chp()
    if chp is None:
        raise RuntimeError("configurable-http-proxy not found: run "
                           "`npm install --prefix .cache/node configurable-http-proxy` in the repository")
    bindir = Path(sys.executable).parent
    jupyterhub = bindir / "jupyterhub"
    singleuser = bindir / "jupyterhub-singleuser"
    for exe in (jupyterhub, singleuser):
        if not exe.exists():
            raise RuntimeError(f"{exe} not found: `pip install jupyterhub jupyter-server` into the venv")
    root.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    port, hub_port, api_port = free_port(), free_port(), free_port()
    token = os.urandom(24).hex()
    hub = RealHub(url=f"http://127.0.0.1:{port}", api_url=f"http://127.0.0.1:{port}/hub/api", token=token,
                  prefix=prefix, root=root, service_tokens={name: os.urandom(24).hex() for name in extra_services})
    config = root / "jupyterhub_config.py"
    config.write_text(HUB_CONFIG.format(
        repo_root=str(REPO_ROOT), bind_url=hub.url + "/", hub_port=hub_port,
        proxy_api=f"http://127.0.0.1:{api_port}", chp=chp, pid_file=str(root / "proxy.pid"),
        db_url=f"sqlite:///{root / 'jupyterhub.sqlite'}", cookie_file=str(root / "cookie_secret"),
        record_path=str(hub.record_path), home_template=str(root / "home" / "{username}"),
        prefix=prefix, singleuser=str(singleuser), token=token, scopes=list(SERVICE_SCOPES),
        extra=hub.service_tokens, spawner=spawner))
    env = dict(os.environ)
    env["PATH"] = f"{bindir}:{Path(chp).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(REPO_ROOT)
    for k in [k for k in env if k.startswith("JUPYTERHUB_")]:
        del env[k]
    # BinderSpawnerMixin.cors_allow_origin defaults from the Hub's environment: servers accept pages
    # from other origins (the thebe-core test's page is on a loopback port of its own)
    env["CORS_ALLOW_ORIGIN"] = "*"
    with open(hub.log_path, "wb") as log_file:
        hub.proc = subprocess.Popen([str(jupyterhub), "-f", str(config)], cwd=root, env=env,
                                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
    deadline = time.monotonic() + timeout
    while True:
        if hub.proc.poll() is not None:
            raise RuntimeError(f"jupyterhub exited with {hub.proc.returncode}:\n{hub.log_tail()}")
        try:
            with urllib.request.urlopen(hub.api_url + "/health", timeout=1) as resp:
                if resp.status == 200:
                    status, _ = hub.api("GET", "/users")
                    if status == 200:
                        return hub
        except OSError:
            pass
        if time.monotonic() > deadline:
            hub.stop()
            raise RuntimeError(f"jupyterhub did not answer within {timeout} s:\n{hub.log_tail()}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------
# the launch side, wired like the app (only the launcher routes and /health mounted)
# ---------------------------------------------------------------------------

def parse_sse(text: str) -> list[dict[str, Any]]:
    """The ``data:`` JSON of every event in an SSE body (comments and ids skipped)."""
    out = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in block.splitlines() if line.startswith("data:"))
        if data:
            out.append(json.loads(data))
    return out


@dataclasses.dataclass
class LauncherHarness:
    services: Any
    app: Any
    client: Any  # aiohttp TestClient (keeps cookies like a browser)
    fake: Any  # FakeGitHub
    images: Any  # tests.fake_registry.FakeRegistry: the builder pushes there, the RegistryClient reads it
    builder: Any  # tests.fake_builders.InstantBuilder
    hub: RealHub | None

    @property
    def state(self) -> Any:
        from launcher.setup import state_of

        return state_of(self.services)

    async def install(self, *repos: str, private: bool = False) -> int:
        """Install the App on ``repos`` (in FakeGitHub and in our store); returns the installation id."""
        for name in repos:
            if name.lower() not in self.fake.repos:
                self.fake.add_repo(name, private=private)
        from bot.github.installations import record_facts

        inst = self.fake.add_installation(repos)
        await self.services.gh_state.upsert_installation(inst.id, inst.account)
        await self.services.gh_state.add_repos(inst.id, [(r, private) for r in repos])
        # what the installation event's repository list tells (visibility, no URLs)
        await record_facts(self.services.db, [{"full_name": r, "private": private} for r in repos],
                           authoritative=False)
        return inst.id

    def image_for(self, full_name: str, sha: str) -> str:
        owner, repo = full_name.split("/")
        return self.services.scheduler.image_for(owner, repo, sha)

    async def prebuild(self, full_name: str, ref: str = "main") -> tuple[str, str]:
        """Make ``ref``'s image exist and be recorded as built (the scheduler's own ready path).

        The record carries the repository's visibility as FakeGitHub has it (``install(private=True)``)."""
        from bot.model import BuildRequest, BuildState, Trigger

        repo = self.fake.repo(full_name)
        sha = repo.resolve(ref)
        image = self.image_for(full_name, sha)
        self.images.push(image)
        self.services.images.forget(image)  # pushed from outside: as if the client's 15 s "missing" memory expired
        inst = await self.services.gh_state.installation_for(full_name)
        record = await self.services.scheduler.submit(BuildRequest(
            owner=repo.owner, repo=repo.name, sha=sha, clone_url=f"{self.fake.web_url}/{full_name}.git",
            installation_id=inst, branch=ref if ref in repo.branches else None, trigger=Trigger.PUSH,
            private=repo.private))
        assert record.state is BuildState.BUILT, record
        return sha, image

    async def record_heads(self, full_name: str) -> None:
        """What push webhooks would have told the store: every branch and tag head, and the default branch."""
        from bot.store.heads import RefKind

        repo = self.fake.repo(full_name)
        store = self.state.resolver.known.store  # the launcher's own (its clock, for tests that drive it)
        for name, sha in repo.branches.items():
            await store.record(full_name, RefKind.BRANCH, name, sha)
        for name, sha in repo.tags.items():
            await store.record(full_name, RefKind.TAG, name, sha)
        await store.record_default_branch(full_name, repo.default_branch)

    async def events(self, path: str, *, headers: dict[str, str] | None = None, timeout: float = 60
                     ) -> tuple[int, dict[str, str], list[dict[str, Any]]]:
        """GET an event stream to its end: (status, headers, events)."""
        async with asyncio.timeout(timeout):
            resp = await self.client.get(path, headers=headers or {})
            text = await resp.text()
        return resp.status, dict(resp.headers), parse_sse(text)

    async def open_page(self, path: str) -> tuple[int, str, str | None]:
        """GET a launch page: (status, html, the events URL it would open)."""
        resp = await self.client.get(path)
        body = await resp.text()
        events_url = None
        marker = '<script id="launch-config" type="application/json">'
        if marker in body:
            config = json.loads(body.split(marker, 1)[1].split("</script>", 1)[0])
            events_url = config["events_url"]
        return resp.status, body, events_url


async def make_harness(aiohttp_client: Any, fake: Any, data_dir: Path, *, hub: RealHub | None = None,
                       hub_api_url: str | None = None, hub_token: str | None = None, hub_url: str | None = None,
                       attach_options: dict[str, Any] | None = None, **settings: Any
                       ) -> tuple[LauncherHarness, Any]:
    """A launcher against ``hub`` (or a Hub URL); returns (harness, async close)."""
    import aiohttp
    from aiohttp import web

    from bot.appkeys import SERVICES
    from bot.events import EventBus
    from bot.github.client import GitHubApp
    from bot.metrics import Metrics
    from bot.scheduler import Scheduler
    from bot.services import Services
    from bot.store.schema import open_store
    from bot.store.builds import BuildStore
    from bot.store.deliveries import DeliveryStore
    from bot.store.github_state import GitHubState
    from bot.web import health
    from launcher import api, cors, routes
    from launcher.setup import attach, state_of
    from aiohttp.test_utils import TestServer

    from bot.registry import RegistryClient
    from tests.fake_builders import InstantBuilder
    from tests.fake_github import settings_for
    from tests.fake_registry import FakeRegistry

    values: dict[str, Any] = dict(image_prefix=hub.prefix if hub else HUB_PREFIX, registry_url=None,
                                  public_url="http://127.0.0.1:9", launch_timeout=60)
    if hub is not None or hub_api_url:
        values.update(jupyterhub_api_url=hub_api_url or hub.api_url,  # type: ignore[union-attr]
                      jupyterhub_api_token=hub_token or (hub.token if hub else "x" * 32),
                      jupyterhub_url=hub_url or (hub.url if hub else None))
    values.update(settings)
    conf = settings_for(fake, data_dir, **values)
    db = await open_store(conf.db_path)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60, connect=10))
    services = Services(settings=conf, db=db, session=session, deliveries=DeliveryStore(db),
                        builds=BuildStore(db), gh_state=GitHubState(db), bus=EventBus())
    services.metrics = Metrics()
    services.github = GitHubApp(session, conf, metrics=services.metrics)
    await services.github.identity.prepare()  # as bot/app.py does at startup
    images = FakeRegistry()
    registry_server = TestServer(images.app(), host="127.0.0.1")
    await registry_server.start_server()
    builder = InstantBuilder(images)
    services.images = RegistryClient(session, str(registry_server.make_url("")).rstrip("/"), attempts=2,
                                     backoff=0.01)
    services.builder = builder
    services.scheduler = Scheduler(services)
    await builder.start()
    await services.scheduler.start()
    opts = {"keepalive": 1.0, "status_poll": 1.0}
    opts.update(attach_options or {})
    await attach(services, **opts)
    app = web.Application()
    app[SERVICES] = services
    health.setup(app)
    routes.setup(app)
    api.setup(app)
    cors.setup(app)
    client = await aiohttp_client(app)

    async def close() -> None:
        from launcher.setup import close as close_launcher

        await close_launcher(state_of(services))
        await services.scheduler.stop()
        await builder.close()
        await services.images.close()
        await session.close()
        await registry_server.close()
        await db.close()

    return LauncherHarness(services, app, client, fake, images, builder, hub), close
