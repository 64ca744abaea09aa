"""BinderHub as launch_overhead.py's baseline: installed on demand, run as its own process.

Three pieces, each run beside (never inside) the benchmark's event loop:

- ``ensure_binderhub``: a separate venv, ``.cache/binderhub-venv``, with BinderHub (and
  pycurl, which BinderHub recommends for production) installed from ``source``: a pip
  requirement, a source checkout or a wheel. PyPI publishes only ``binderhub`` 0.1.0
  (November 2018: a Kubernetes-only launch path, no ``builder_required``, an invalid
  ``kubernetes>=4.*`` requirement current pip refuses); current BinderHub is installed from
  its repository (``git+https://github.com/jupyterhub/binderhub@<commit>`` where GitHub is
  reachable, else a local clone of it).
- ``BinderHubProcess``: ``python -m binderhub -f binderhub_config.py`` configured like
  BinderHub's own testing/local-binder-local-hub, with a registry: ``use_registry`` with a
  ``DockerRegistry`` at the benchmark's registry, ``builder_required=False`` (no
  Kubernetes client is made), ``LocalRepo2dockerBuild`` as build class (never run: every
  image is in the registry, so a launch is resolve, registry lookup, Hub), the plain
  ``LaunchQuota`` (KubernetesLaunchQuota would list pods), GitHub's API at FakeGitHub, the
  Hub API behind the timing proxy, the rate limit off (as for ours). Its Hub token goes in
  the environment (``JUPYTERHUB_API_TOKEN``), never in the config file or a log. It listens
  on every interface (``BinderHub.port`` has no address), for the length of one scenario.
- ``HubTimingProxy``: a reverse proxy in a subprocess in front of the Hub, one port per
  launcher, recording when each Hub API call started and ended (CLOCK_MONOTONIC, the
  clock ``time.monotonic`` reads in every process). Both launchers' Hub time is measured
  there, the same way: the hop from launcher to proxy counts as the launcher's own time
  for both.

    python benchmarks/binderhub_baseline.py proxy TARGET LABEL=PORT ...   (what HubTimingProxy runs)
"""
from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "binderhub-venv"
DEFAULT_SOURCE = "binderhub>0.1.0"  # PyPI: no such release today; see the module docstring
PYPI_NOTE = ("PyPI publishes only binderhub 0.1.0 (2018), which cannot run this launch path; "
             "install current BinderHub from its repository: --binderhub-source "
             "git+https://github.com/jupyterhub/binderhub@<commit> or a local clone's path")
# what the configuration below needs (BinderHub 2023 and later); prints what is installed, and from where
PROBE = """
import importlib.metadata, importlib.util, json
import binderhub, binderhub.build_local, binderhub.quota, binderhub.registry
from binderhub.app import BinderHub
assert "builder_required" in BinderHub.class_traits()
origin = json.loads(importlib.metadata.distribution("binderhub").read_text("direct_url.json") or "{}")
where = origin.get("url", "PyPI")
if "vcs_info" in origin:
    where += "@" + origin["vcs_info"].get("commit_id", "")
pycurl = "with pycurl" if importlib.util.find_spec("pycurl") else "without pycurl"
print(f"{binderhub.__version__} ({pycurl}; installed from {where})")
"""


class BaselineUnavailable(RuntimeError):
    """BinderHub could not be installed or started: the message says why."""


def _probe(python: Path) -> str | None:
    """The installed BinderHub's version, or None when it is missing or too old for this config."""
    if not python.exists():
        return None
    out = subprocess.run([str(python), "-c", PROBE], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_binderhub(source: str) -> tuple[Path, str]:
    """(python, "VERSION (with pycurl; installed from ORIGIN)") of .cache/binderhub-venv, installing ``source``
    there first unless it was the last thing installed."""
    python = VENV / "bin" / "python"
    marker = VENV / "installed-from"
    if marker.exists() and marker.read_text() == source and (version := _probe(python)):
        return python, version
    print(f"installing BinderHub ({source}) into {VENV} (a few minutes: it builds its web assets) ...",
          file=sys.stderr, flush=True)
    steps = [[str(python), "-m", "pip", "install", "-q", source]]
    if not python.exists():
        VENV.parent.mkdir(parents=True, exist_ok=True)
        steps.insert(0, [sys.executable, "-m", "venv", str(VENV)])
    for cmd in steps:  # into the venv as it is: a failed install leaves the one that was there
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            errors = "\n".join(line for line in out.stderr.splitlines() if not line.startswith("WARNING: Location"))
            hint = f"\n{PYPI_NOTE}" if source.startswith("binderhub") else ""
            raise BaselineUnavailable(f"`{' '.join(cmd[-3:])}` failed:\n{errors[-2000:]}{hint}")
    # BinderHub's production HTTP client (its "pycurl" extra); without it, tornado's own client is used
    if subprocess.run([str(python), "-m", "pip", "install", "-q", "pycurl"], capture_output=True).returncode:
        print("pycurl could not be installed: BinderHub uses tornado's simple HTTP client", file=sys.stderr)
    version = _probe(python)
    if version is None:
        raise BaselineUnavailable(f"{source} installed, but it is not a BinderHub this benchmark can run "
                                  f"(needs builder_required, LocalRepo2dockerBuild, LaunchQuota).\n{PYPI_NOTE}")
    marker.write_text(source)
    return python, version


CONFIG = """\
# written by benchmarks/binderhub_baseline.py: BinderHub without Kubernetes, images in a registry
from binderhub.build_local import LocalRepo2dockerBuild
from binderhub.quota import LaunchQuota
from binderhub.registry import DockerRegistry
from binderhub.repoproviders import GitHubRepoProvider

c.BinderHub.port = {port}
c.BinderHub.base_url = "/"
c.BinderHub.hub_url = {hub_url!r}              # public: the ready event's url
c.BinderHub.hub_url_local = {hub_local!r}      # the Hub API, through the timing proxy
c.BinderHub.auth_enabled = False               # a temporary user per launch, as on mybinder.org
c.BinderHub.use_registry = True
c.BinderHub.registry_class = DockerRegistry
c.DockerRegistry.url = {registry_url!r}
c.DockerRegistry.username = ""
c.DockerRegistry.password = ""
c.BinderHub.image_prefix = {image_prefix!r}
c.BinderHub.builder_required = False           # no Kubernetes client
c.BinderHub.build_class = LocalRepo2dockerBuild
c.BinderHub.build_cleaner_class = None
c.BinderHub.launch_quota_class = LaunchQuota
c.BinderHub.repo_providers = {{"gh": GitHubRepoProvider}}
c.GitHubRepoProvider.api_base_path = {github_api!r}
c.RateLimiter.limit = 0
c.Application.log_level = "WARN"
"""


@dataclasses.dataclass
class BinderHubProcess:
    """One BinderHub process; ``url`` ends without a slash."""

    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def start_binderhub(python: Path, root: Path, *, port: int, hub_url: str, hub_local: str, token: str,
                          registry_url: str, image_prefix: str, github_api: str) -> BinderHubProcess:
    """Start BinderHub and wait until it answers (raises BaselineUnavailable with its log if it does not)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "docker").mkdir(exist_ok=True)
    config = root / "binderhub_config.py"
    config.write_text(CONFIG.format(port=port, hub_url=hub_url.rstrip("/") + "/",
                                    hub_local=hub_local.rstrip("/") + "/", registry_url=registry_url,
                                    image_prefix=image_prefix, github_api=github_api))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "GITHUB_", "DOCKER_"))}
    env.update(JUPYTERHUB_API_TOKEN=token, DOCKER_CONFIG=str(root / "docker"))  # no registry credentials
    log_path = root / "binderhub.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(python), "-m", "binderhub", "-f", str(config)], cwd=root, env=env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    bh = BinderHubProcess(f"http://127.0.0.1:{port}", proc, log_path)
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as s:
        while True:
            if proc.poll() is not None:
                raise BaselineUnavailable(f"binderhub exited with {proc.returncode}:\n{bh.log_tail()}")
            try:
                async with s.get(bh.url + "/api/repoproviders") as r:
                    if r.status == 200:
                        return bh
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                bh.stop()
                raise BaselineUnavailable(f"binderhub did not answer within 60 s:\n{bh.log_tail()}")
            await asyncio.sleep(0.1)


# ---------------------------------------------------------------------------
# the timing proxy
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class ProxiedCall:
    label: str
    method: str
    path: str
    status: int
    start: float  # time.monotonic() in the proxy: the request's headers were read
    end: float  # the last byte of the answer was written (so far, for a call still in flight)

    @property
    def seconds(self) -> float:
        return self.end - self.start


class HubTimingProxy:
    """The proxy subprocess and a reader of its records."""

    def __init__(self, target: str, ports: dict[str, int], log_path: Path) -> None:
        self.target = target.rstrip("/")
        self.ports = ports
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, label: str) -> str:
        return f"http://127.0.0.1:{self.ports[label]}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "proxy", self.target, *(f"{k}={v}" for k, v in self.ports.items())],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                await self.calls(session, time.monotonic())
                return
            except aiohttp.ClientError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Hub timing proxy did not start:\n{self.log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    async def calls(self, session: aiohttp.ClientSession, after: float) -> list[ProxiedCall]:
        """The calls that started at or after ``after`` (time.monotonic()); one still in flight
        ends at its last write so far (for a progress stream: the event the launcher waited for)."""
        port = next(iter(self.ports.values()))
        async with session.get(f"http://127.0.0.1:{port}/__calls__", params={"after": repr(after)}) as r:
            r.raise_for_status()
            return [ProxiedCall(**c) for c in await r.json()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def inside(calls: list[ProxiedCall], t0: float, t1: float) -> float:
    """Seconds of [t0, t1] covered by at least one call (overlapping calls count once)."""
    spans = sorted((max(c.start, t0), min(c.end, t1)) for c in calls if c.end > t0 and c.start < t1)
    total, cur_start, cur_end = 0.0, None, None
    for s, e in spans:
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start  # type: ignore[operator]
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_end is not None:
        total += cur_end - cur_start  # type: ignore[operator]
    return total


_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length"}


def serve_proxy(target: str, ports: dict[str, int]) -> None:
    """Forward everything to ``target`` (streaming answers through as they come); record each call."""
    from aiohttp import web
    from yarl import URL

    labels = {port: label for label, port in ports.items()}
    calls: list[dict[str, Any]] = []
    state: dict[str, aiohttp.ClientSession] = {}

    async def forward(request: web.Request) -> web.StreamResponse:
        if request.path == "/__calls__":
            after = float(request.query.get("after", "0"))
            return web.json_response([c for c in calls if c["start"] >= after])
        call = {"label": labels.get(request.transport.get_extra_info("sockname")[1], "?") if request.transport
                else "?", "method": request.method, "path": request.path, "status": 0,
                "start": time.monotonic(), "end": time.monotonic()}
        calls.append(call)  # listed while in flight too, ending at its last write so far
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with state["session"].request(request.method, URL(target + request.raw_path, encoded=True),
                                            headers=headers, data=body or None, allow_redirects=False) as up:
            call["status"] = up.status
            resp = web.StreamResponse(status=up.status, reason=up.reason,
                                      headers={k: v for k, v in up.headers.items() if k.lower() not in _HOP})
            await resp.prepare(request)
            async for chunk in up.content.iter_any():
                await resp.write(chunk)
                call["end"] = time.monotonic()
            await resp.write_eof()
            call["end"] = time.monotonic()
        return resp

    async def main() -> None:
        state["session"] = aiohttp.ClientSession(auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for port in ports.values():
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "proxy":
        serve_proxy(sys.argv[2], {k: int(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])})
    else:
        sys.exit(__doc__)
