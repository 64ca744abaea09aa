"""Shared pytest fixtures. Each engineer adds fixtures in their own delimited block."""
from __future__ import annotations

# ======================================================================
# BEGIN registry fixtures (registry client / image lookup engineer)
#   registry       - a real Debian docker-registry on a free loopback port
#                    (session-scoped; temp storage), with push helpers
#   fake_registry_factory - await fake_registry_factory(**kw) -> (FakeRegistry, base URL) on loopback
#   registry_double - one default FakeRegistry served on loopback: (FakeRegistry, base URL)
# ======================================================================
import dataclasses as _reg_dataclasses
import gzip as _reg_gzip
import hashlib as _reg_hashlib
import io as _reg_io
import json as _reg_json
import shutil as _reg_shutil
import socket as _reg_socket
import subprocess as _reg_subprocess
import tarfile as _reg_tarfile
import time as _reg_time
import urllib.error as _reg_urlerror
import urllib.parse as _reg_urlparse
import urllib.request as _reg_urlrequest
from pathlib import Path as _RegPath

import pytest as _reg_pytest

_REG_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_REG_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
_REG_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _reg_free_port() -> int:
    with _reg_socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@_reg_dataclasses.dataclass
class LocalRegistry:
    """A running docker-registry; push helpers speak the plain HTTP API (no engine needed)."""

    url: str  # http://127.0.0.1:PORT
    host: str  # 127.0.0.1:PORT
    storage: _RegPath

    def _call(self, method: str, url: str, body: bytes = b"", headers: dict | None = None):
        req = _reg_urlrequest.Request(url, data=body if method in ("PUT", "POST") else None,
                                      method=method, headers=headers or {})
        try:
            with _reg_urlrequest.urlopen(req, timeout=10) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except _reg_urlerror.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def push_blob(self, name: str, data: bytes) -> str:
        digest = "sha256:" + _reg_hashlib.sha256(data).hexdigest()
        status, headers, body = self._call("POST", f"{self.url}/v2/{name}/blobs/uploads/")
        assert status == 202, (status, body)
        location = _reg_urlparse.urljoin(self.url, headers["Location"])
        sep = "&" if "?" in location else "?"
        status, _, body = self._call(
            "PUT", f"{location}{sep}digest={_reg_urlparse.quote(digest)}", data,
            {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
        assert status == 201, (status, body)
        return digest

    def push_manifest(self, name: str, ref: str, manifest: dict, media_type: str) -> str:
        data = _reg_json.dumps(manifest).encode()
        status, headers, body = self._call(
            "PUT", f"{self.url}/v2/{name}/manifests/{ref}", data, {"Content-Type": media_type})
        assert status == 201, (status, body)
        return headers["Docker-Content-Digest"]

    def push_image(self, name: str, tag: str, media_type: str = _REG_OCI_MANIFEST) -> str:
        """A one-layer image as an OCI (default) or Docker v2 manifest; returns the manifest digest."""
        tar_bytes = _reg_io.BytesIO()
        with _reg_tarfile.open(fileobj=tar_bytes, mode="w") as tar:
            content = f"{name}:{tag}\n".encode()
            info = _reg_tarfile.TarInfo("hello.txt")
            info.size = len(content)
            tar.addfile(info, _reg_io.BytesIO(content))
        layer = _reg_gzip.compress(tar_bytes.getvalue(), mtime=0)
        diff_id = "sha256:" + _reg_hashlib.sha256(tar_bytes.getvalue()).hexdigest()
        config = _reg_json.dumps({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }).encode()
        layer_digest = self.push_blob(name, layer)
        config_digest = self.push_blob(name, config)
        oci = media_type == _REG_OCI_MANIFEST
        manifest = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json" if oci
                else "application/vnd.docker.container.image.v1+json",
                "digest": config_digest, "size": len(config),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip" if oci
                else "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "digest": layer_digest, "size": len(layer),
            }],
        }
        return self.push_manifest(name, tag, manifest, media_type)

    def push_index(self, name: str, tag: str, manifest_digest: str) -> str:
        """An OCI image index (multi-platform) pointing at an already pushed OCI manifest."""
        status, headers, body = self._call(
            "GET", f"{self.url}/v2/{name}/manifests/{manifest_digest}", headers={"Accept": _REG_OCI_MANIFEST})
        assert status == 200, (status, body)
        index = {
            "schemaVersion": 2, "mediaType": _REG_OCI_INDEX,
            "manifests": [{"mediaType": _REG_OCI_MANIFEST, "digest": manifest_digest, "size": len(body),
                           "platform": {"architecture": "amd64", "os": "linux"}}],
        }
        return self.push_manifest(name, tag, index, _REG_OCI_INDEX)


@_reg_pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A real docker-registry (Debian package ``docker-registry``) on a free loopback port."""
    binary = _reg_shutil.which("docker-registry")
    if binary is None:
        _reg_pytest.fail(
            "docker-registry is not installed: `apt-get install docker-registry` "
            "(Debian 12; .ci/run and scripts/local-engine.sh install it)", pytrace=False)
    root = tmp_path_factory.mktemp("registry")
    port = _reg_free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n")
    log_path = root / "registry.log"
    with open(log_path, "wb") as log_file:
        proc = _reg_subprocess.Popen([binary, "serve", str(config)], stdout=log_file, stderr=_reg_subprocess.STDOUT,
                                     stdin=_reg_subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = _reg_time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            _reg_pytest.fail(f"docker-registry exited with {proc.returncode}:\n{log_path.read_text()}", pytrace=False)
        try:
            with _reg_urlrequest.urlopen(f"{url}/v2/", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if _reg_time.monotonic() > deadline:
            proc.kill()
            _reg_pytest.fail(f"docker-registry did not answer on {url}:\n{log_path.read_text()}", pytrace=False)
        _reg_time.sleep(0.05)
    try:
        yield LocalRegistry(url=url, host=f"127.0.0.1:{port}", storage=root / "data")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except _reg_subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@_reg_pytest.fixture
def fake_registry_factory(aiohttp_server):
    """``await fake_registry_factory(auth="bearer", users={...})`` -> (FakeRegistry, base URL)."""
    from tests.fake_registry import FakeRegistry

    async def make(**kwargs):
        fake = FakeRegistry(**kwargs)
        server = await aiohttp_server(fake.app())
        return fake, str(server.make_url("")).rstrip("/")

    return make


@_reg_pytest.fixture
async def registry_double(fake_registry_factory):
    """(FakeRegistry, URL): read it through the real RegistryClient, push to it with ``.push(image)``."""
    return await fake_registry_factory()
# ======================================================================
# END registry fixtures
# ======================================================================


# ======================================================================
# BEGIN GitHub fixtures (GitHub App identity engineer)
#   fake_github      - tests/fake_github.FakeGitHub running on loopback (one per test)
#   github_key       - an RSA private key (PEM), generated once per session
#   github_settings  - Settings with the App identity and GITHUB_API_URL pointing at
#                      fake_github, DATA_DIR in tmp_path; call it with overrides:
#                      github_settings(public_url="http://...")
# ======================================================================
import pytest as _gh_pytest


@_gh_pytest.fixture(scope="session")
def github_key() -> str:
    from tests.fake_github import test_private_key

    return test_private_key()


@_gh_pytest.fixture
async def fake_github(github_key):
    from tests.fake_github import FakeGitHub

    fake = FakeGitHub(private_key=github_key)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@_gh_pytest.fixture
def github_settings(fake_github, tmp_path):
    from tests.fake_github import settings_for

    def make(**overrides):
        return settings_for(fake_github, overrides.pop("data_dir", tmp_path / "data"), **overrides)

    return make
# END GitHub fixtures
# ======================================================================


# ======================================================================
# BEGIN webhook fixtures (webhook receiver / dispatcher engineer)
#   webhook_secret   - the secret the webhook fixtures sign with
#   make_services    - await make_services(**settings_overrides) -> Services with a real
#                      SQLite store in tmp_path, Metrics, EventBus; closed at teardown
#   webhook_client   - await webhook_client(services) -> aiohttp TestClient of an app with
#                      only the receiver mounted (POST /webhooks/github, plus /health);
#                      middlewares=[...] and receiver.setup options (body_timeout=) optional
# ======================================================================
import pytest as _wh_pytest

WEBHOOK_SECRET = "It's a Secret to Everybody"


@_wh_pytest.fixture
def webhook_secret() -> str:
    return WEBHOOK_SECRET


@_wh_pytest.fixture
async def make_services(tmp_path):
    import aiohttp

    from bot.config import Settings
    from bot.events import EventBus
    from bot.metrics import Metrics
    from bot.services import Services
    from bot.store.schema import open_store
    from bot.store.builds import BuildStore
    from bot.store.deliveries import DeliveryStore
    from bot.store.github_state import GitHubState

    made = []

    async def make(**overrides):
        values = dict(github_webhook_secret=WEBHOOK_SECRET, data_dir=tmp_path / f"data{len(made)}")
        values.update(overrides)
        settings = Settings(**values)
        db = await open_store(settings.db_path)
        session = aiohttp.ClientSession()
        services = Services(settings=settings, db=db, session=session, deliveries=DeliveryStore(db),
                            builds=BuildStore(db), gh_state=GitHubState(db), bus=EventBus())
        services.metrics = Metrics()
        made.append(services)
        return services

    yield make
    for s in made:
        await s.session.close()
        await s.db.close()


@_wh_pytest.fixture
def webhook_client(aiohttp_client):
    from aiohttp import web

    from bot.appkeys import SERVICES
    from bot.web import health
    from bot.webhooks import receiver

    async def make(services, *, middlewares=(), **receiver_options):
        app = web.Application(middlewares=list(middlewares))

        async def ctx(app):
            app[SERVICES] = services
            yield

        app.cleanup_ctx.append(ctx)
        receiver.setup(app, **receiver_options)
        health.setup(app)
        return await aiohttp_client(app)

    return make
# END webhook fixtures
# ======================================================================


# ======================================================================
# BEGIN Kubernetes fixtures (Kubernetes builder engineer)
#   fake_k8s     - tests/fake_k8s.FakeKubernetes running on loopback (one per test)
#   k8s_builder  - (enforces k8s/base/role.yaml on fake_k8s and applies the clone-tokens Secret)
#                  await k8s_builder(settings=None, **builder_kwargs) -> a started
#                  KubernetesBuilder talking to fake_k8s; closed at teardown
# ======================================================================
import pytest as _k8s_pytest


@_k8s_pytest.fixture
async def fake_k8s():
    from tests.fake_k8s import FakeKubernetes

    fake = FakeKubernetes()
    await fake.start()
    try:
        yield fake
    finally:
        await fake.stop()


@_k8s_pytest.fixture
async def k8s_builder(fake_k8s, tmp_path):
    from bot.builders.kubernetes import KubernetesBuilder
    from bot.config import Settings

    from pathlib import Path

    import yaml

    from bot.builders import k8s_objects

    made = []
    # as deployed: the Role from k8s/ is enforced, and the Secret k8s/ creates exists
    role = yaml.safe_load((Path(__file__).resolve().parent.parent / "k8s" / "base" / "role.yaml").read_text())
    fake_k8s.rules = role["rules"]
    fake_k8s.apply(k8s_objects.make_clone_tokens_secret("binder-prebuild"))

    async def make(settings=None, **kwargs):
        settings = settings or Settings(builder="kubernetes", data_dir=tmp_path / "data",
                                        registry_url="http://127.0.0.1:5000")
        builder = KubernetesBuilder(settings, None, configuration=fake_k8s.configuration(), **kwargs)
        await builder.start()
        made.append(builder)
        return builder

    yield make
    for b in made:
        await b.close()
# END Kubernetes fixtures
# ======================================================================


# ======================================================================
# BEGIN launcher fixtures (launcher engineer)
#   real_hub  - a real JupyterHub + configurable-http-proxy on loopback (session-scoped),
#               spawning real jupyterhub-singleuser processes (tests/real_hub.py)
#   hub       - real_hub, with every Hub user deleted after the test
#   launcher  - await launcher(hub=None, **settings) -> tests.real_hub.LauncherHarness:
#               launcher routes + /health over a real store, scheduler, FakeGitHub
# ======================================================================
import pytest as _ln_pytest


@_ln_pytest.fixture(scope="session")
def real_hub(tmp_path_factory):
    from tests.real_hub import start_hub

    try:
        hub = start_hub(tmp_path_factory.mktemp("jupyterhub"))
    except RuntimeError as e:
        _ln_pytest.fail(f"could not start JupyterHub: {e}", pytrace=False)
    try:
        yield hub
    finally:
        hub.stop()


@_ln_pytest.fixture
def hub(real_hub):
    real_hub.delete_all_users()
    yield real_hub
    real_hub.delete_all_users()


@_ln_pytest.fixture
async def launcher(aiohttp_client, fake_github, tmp_path):
    from tests.real_hub import make_harness

    closers = []

    async def make(hub=None, **settings):
        harness, close = await make_harness(aiohttp_client, fake_github, tmp_path / f"ln{len(closers)}",
                                            hub=hub, **settings)
        closers.append(close)
        return harness

    yield make
    for close in reversed(closers):
        await close()
# END launcher fixtures
# ======================================================================


# ======================================================================
# BEGIN feedback fixtures (GitHub feedback engineer: check runs, PR comment, commands)
#   prebuild_bot  - await prebuild_bot(**settings_overrides) -> tests/feedback_harness.Bot:
#                   the real create_app (webhook route, dispatcher, scheduler, feedback)
#                   with GitHub faked by fake_github, an InstantBuilder pushing to
#                   registry_double and the real RegistryClient reading it; call it again
#                   with same_store=True / inst=... to "restart" against the same FakeGitHub
# ======================================================================
import pytest as _fb_pytest


@_fb_pytest.fixture
def prebuild_bot(fake_github, github_settings, aiohttp_client, monkeypatch, tmp_path, registry_double):
    from tests.feedback_harness import start_bot

    made = []

    async def make(*, data_dir=None, **kwargs):
        data_dir = data_dir or tmp_path / f"bot{len(made)}"
        kwargs.setdefault("registry", registry_double)  # one registry for the test: it outlives restarts
        b = await start_bot(fake_github, github_settings, aiohttp_client, monkeypatch, data_dir=data_dir, **kwargs)
        made.append(b)
        return b

    return make
# END feedback fixtures
# ======================================================================


# ======================================================================
# BEGIN local engine fixtures (local builder engineer)
#   local_engine  - scripts/local-engine.sh up with a temp ENGINE_DIR and a free registry
#                   port (session-scoped; `down` at the end): .env (os.environ plus the
#                   exports: DOCKER_HOST, CONTAINERS_CONF, CONTAINERS_REGISTRIES_CONF, ...),
#                   .registry_url, .registry_host, .podman(*args) -> CompletedProcess,
#                   .docker_config and .registry_authorization (the registry needs credentials).
#                   os.environ itself is left alone: pass .env where it is needed.
#   base_image    - scripts/base-image.sh once (cached across runs in podman's storage);
#                   the image name (localhost/binder-prebuild-base:bookworm)
#   git_server    - tests/git_server.GitServer: real repositories over smart HTTP
#                   (git http-backend) on loopback, private ones behind a token
# ======================================================================
import dataclasses as _le_dataclasses
import os as _le_os
import shutil as _le_shutil
import socket as _le_socket
import subprocess as _le_subprocess
import tempfile as _le_tempfile
from pathlib import Path as _LePath

import pytest as _le_pytest

_LE_ROOT = _LePath(__file__).resolve().parent.parent
LOCAL_BASE_IMAGE = "localhost/binder-prebuild-base:bookworm"


@_le_dataclasses.dataclass(frozen=True)
class LocalEngine:
    env: dict
    registry_url: str  # http://127.0.0.1:PORT
    registry_host: str  # 127.0.0.1:PORT
    engine_dir: _LePath

    @property
    def docker_config(self) -> str:
        """The registry credentials local-engine.sh made (DOCKER_CONFIG: a directory with config.json)."""
        return self.env["DOCKER_CONFIG"]

    @property
    def registry_authorization(self) -> str:
        """``Basic ...`` for the registry: anonymous requests are refused."""
        from bot.registry import load_docker_credentials

        creds = load_docker_credentials(_LePath(self.docker_config) / "config.json")
        return creds[self.registry_host].basic()

    def podman(self, *args: str, check: bool = False, timeout: float = 120) -> _le_subprocess.CompletedProcess:
        return _le_subprocess.run(["podman", *args], env=self.env, capture_output=True, text=True,
                                  check=check, timeout=timeout)


def _le_free_port() -> int:
    with _le_socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@_le_pytest.fixture(scope="session")
def local_engine():
    """A podman API service and a docker-registry of our own, as scripts/local-engine.sh starts them."""
    engine_dir = _LePath(_le_tempfile.mkdtemp(prefix="le-", dir="/tmp"))  # short: a unix socket path lives here
    port = _le_free_port()
    env = {k: v for k, v in _le_os.environ.items() if k not in ("CONTAINER_HOST", "DOCKER_HOST")}
    env.update(ENGINE_DIR=str(engine_dir), REGISTRY_PORT=str(port), DATA_DIR=str(engine_dir / "data"))
    script = str(_LE_ROOT / "scripts" / "local-engine.sh")
    proc = _le_subprocess.run([script, "up"], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        _le_subprocess.run([script, "down"], env=env, capture_output=True, timeout=120)
        _le_pytest.fail(f"scripts/local-engine.sh up failed ({proc.returncode}):\n{proc.stderr[-3000:]}",
                        pytrace=False)
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            env[key.strip()] = value.strip()
    try:
        yield LocalEngine(env=env, registry_url=env["REGISTRY_URL"], registry_host=f"127.0.0.1:{port}",
                          engine_dir=engine_dir)
    finally:
        _le_subprocess.run([script, "down"], env=env, capture_output=True, timeout=120)
        _le_shutil.rmtree(engine_dir, ignore_errors=True)


@_le_pytest.fixture(scope="session")
def base_image(local_engine):
    """The offline base image (mmdebstrap + podman import, about a minute the first time on a machine)."""
    proc = _le_subprocess.run([str(_LE_ROOT / "scripts" / "base-image.sh")], env=local_engine.env,
                              capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        _le_pytest.fail(f"scripts/base-image.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}", pytrace=False)
    return LOCAL_BASE_IMAGE


@_le_pytest.fixture(scope="session")
def git_server():
    from tests.git_server import GitServer

    server = GitServer(_LePath(_le_tempfile.mkdtemp(prefix="git-server-")))
    server.start()
    try:
        yield server
    finally:
        server.stop()
# END local engine fixtures
# ======================================================================


# ======================================================================
# BEGIN local builder test fixtures (tests/test_local_builder_*.py; helpers in
# tests/local_builder_helpers.py)
#   test_base  - the base image under a name of the test module's own (module-scoped),
#                so the working containers made from it are that module's alone
#   lb_images  - a list a test appends the image names it builds to; removed afterwards
#   lb_settings - lb_settings(**overrides) -> Settings for the local engine (podman, its
#                registry, a 300 s build timeout)
# ======================================================================
import secrets as _lb_secrets

import pytest as _lb_pytest


@_lb_pytest.fixture(scope="module")
def test_base(local_engine, base_image):
    """The base image under a name of this module's own, so its working containers are ours alone."""
    alias = f"localhost/lbtest-{_lb_secrets.token_hex(4)}:base"
    local_engine.podman("tag", base_image, alias, check=True)
    yield alias
    local_engine.podman("untag", alias, alias)  # that name only (`untag IMAGE` alone drops every name)


@_lb_pytest.fixture
def lb_images(local_engine):
    """Image names a test builds; removed from local storage afterwards."""
    made: list[str] = []
    yield made
    if made:
        local_engine.podman("rmi", "--force", *made)


@_lb_pytest.fixture
def lb_settings(local_engine):
    from bot.config import Settings

    def make(**kw) -> Settings:
        kw.setdefault("container_engine", "podman")
        kw.setdefault("registry_url", local_engine.registry_url)
        kw.setdefault("docker_config", local_engine.docker_config)
        kw.setdefault("build_timeout", 300)
        return Settings(**kw)
    return make
# END local builder test fixtures
# ======================================================================
