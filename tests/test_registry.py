"""RegistryClient against the real docker-registry and against FakeRegistry (auth, faults, caching)."""
from __future__ import annotations

import asyncio
import base64
import json
import logging

import aiohttp
import pytest

from bot.registry import (
    DOCKER_HUB_API,
    MANIFEST_ACCEPT,
    RegistryClient,
    docker_config_path,
    manifest_reference,
    normalize_registry_url,
    parse_docker_config,
    parse_www_authenticate,
    registry_host_key,
)
from tests.fake_registry import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST

SHA = "0123456789abcdef0123456789abcdef01234567"
REPO = "binder-prebuild/binder-2dexamples-2drequirements-55ab5c"


class Clock:
    """A manual monotonic clock for the client's caches."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def no_docker_config(tmp_path, monkeypatch):
    """Keep the machine's own ~/.docker/config.json out of tests."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def fast(session, url, **kw) -> RegistryClient:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("backoff", 0.01)
    return RegistryClient(session, url, **kw)


# ------------------------------------------------------------ pure helpers


def test_normalize_registry_url():
    assert normalize_registry_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert normalize_registry_url("localhost:5000/") == "http://localhost:5000"
    assert normalize_registry_url("ghcr.io") == "https://ghcr.io"
    assert normalize_registry_url("https://registry.example.org:8443/") == "https://registry.example.org:8443"
    assert normalize_registry_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert normalize_registry_url("docker.io") == DOCKER_HUB_API
    assert normalize_registry_url("https://index.docker.io/v1/") == DOCKER_HUB_API


def test_registry_host_key_matches_docker_config_keys():
    assert registry_host_key("https://127.0.0.1:5000/v1/") == "127.0.0.1:5000"
    assert registry_host_key("127.0.0.1:5000") == "127.0.0.1:5000"
    assert registry_host_key("https://index.docker.io/v1/") == "docker.io"
    assert registry_host_key(DOCKER_HUB_API) == "docker.io"
    assert registry_host_key("Quay.IO") == "quay.io"


def test_parse_docker_config_both_styles_and_junk():
    auth = base64.b64encode(b"alice:pa:ss").decode()
    creds = parse_docker_config({"auths": {
        "https://reg.example.org/v1/": {"auth": auth},
        "127.0.0.1:5000": {"username": "bob", "password": "pw"},
        "broken.example.org": {"auth": "!!!not base64"},
        "empty.example.org": {},
    }})
    assert set(creds) == {"reg.example.org", "127.0.0.1:5000"}
    assert (creds["reg.example.org"].username, creds["reg.example.org"].password) == ("alice", "pa:ss")
    assert (creds["127.0.0.1:5000"].username, creds["127.0.0.1:5000"].password) == ("bob", "pw")
    assert "pa:ss" not in repr(creds["reg.example.org"])
    assert parse_docker_config({"credsStore": "desktop"}) == {}


def test_docker_config_path(tmp_path):
    assert docker_config_path(None, {"DOCKER_CONFIG": str(tmp_path)}) == tmp_path / "config.json"
    assert docker_config_path(str(tmp_path), {}) == tmp_path / "config.json"  # a directory, like DOCKER_CONFIG
    f = tmp_path / "auth.json"
    f.write_text("{}")
    assert docker_config_path(str(f), {"DOCKER_CONFIG": "/elsewhere"}) == f


def test_parse_www_authenticate():
    scheme, params = parse_www_authenticate(
        'Bearer realm="https://auth.example.org/token",service="registry.example.org",'
        'scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example.org/token", "service": "registry.example.org",
                      "scope": "repository:a/b:pull,push"}
    assert parse_www_authenticate('Basic realm="x"') == ("basic", {"realm": "x"})


def test_manifest_reference():
    assert manifest_reference(f"127.0.0.1:5000/{REPO}:{SHA}") == (REPO, SHA)
    assert manifest_reference(f"{REPO}:{SHA}") == (REPO, SHA)
    assert manifest_reference("127.0.0.1:5000/a/b@sha256:" + "0" * 64) == ("a/b", "sha256:" + "0" * 64)
    assert manifest_reference("python:3.12", docker_hub=True) == ("library/python", "3.12")
    assert manifest_reference("localhost:5000/x") == ("x", "latest")


# ------------------------------------------------------------ the real docker-registry


async def test_real_registry_finds_oci_image(registry, session, no_docker_config):
    registry.push_image(REPO, SHA)
    client = fast(session, registry.url)
    assert await client.exists(f"{registry.host}/{REPO}:{SHA}") is True
    assert await client.health() == (True, f"{registry.url} ok")


async def test_real_registry_missing_tag_and_repo_are_false(registry, session, no_docker_config):
    registry.push_image("binder-prebuild/present-abc123", "tag1")
    client = fast(session, registry.url)
    assert await client.exists(f"{registry.host}/binder-prebuild/present-abc123:other") is False
    assert await client.exists(f"{registry.host}/binder-prebuild/never-pushed-abc123:{SHA}") is False


async def test_real_registry_oci_manifest_only_with_oci_accept(registry, session, no_docker_config):
    """docker-registry hides OCI manifests from clients that do not accept them: the client must send OCI types."""
    name = "binder-prebuild/oci-only-abc123"
    registry.push_image(name, SHA, media_type=OCI_MANIFEST)
    url = f"{registry.url}/v2/{name}/manifests/{SHA}"
    async with session.head(url, headers={"Accept": f"{DOCKER_MANIFEST}, {DOCKER_MANIFEST_LIST}"}) as r:
        assert r.status == 404
    async with session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as r:
        assert r.status == 200
        assert r.headers["Content-Type"] == OCI_MANIFEST
    assert await fast(session, registry.url).exists(f"{registry.host}/{name}:{SHA}") is True


async def test_real_registry_docker_v2_manifest_and_oci_index(registry, session, no_docker_config):
    docker_name = "binder-prebuild/docker-v2-abc123"
    registry.push_image(docker_name, SHA, media_type=DOCKER_MANIFEST)
    multi = "binder-prebuild/multi-arch-abc123"
    digest = registry.push_image(multi, "single")
    registry.push_index(multi, SHA, digest)
    client = fast(session, registry.url)
    assert await client.exists(f"{registry.host}/{docker_name}:{SHA}") is True
    assert await client.exists(f"{registry.host}/{multi}:{SHA}") is True
    assert await client.exists(f"{registry.host}/{multi}@{digest}") is True


async def test_real_registry_host_alias_asks_the_configured_registry(registry, session, no_docker_config):
    """IMAGE_PREFIX may name the registry as localhost:PORT while REGISTRY_URL says 127.0.0.1:PORT."""
    name = "binder-prebuild/alias-abc123"
    registry.push_image(name, SHA)
    port = registry.host.split(":")[1]
    assert await fast(session, registry.url).exists(f"localhost:{port}/{name}:{SHA}") is True


# ------------------------------------------------------------ fake registry: auth


async def test_anonymous_sends_all_manifest_types(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA, media_type=DOCKER_MANIFEST_LIST)
    client = fast(session, url)
    assert await client.exists(f"127.0.0.1/{REPO}:{SHA}") is True
    assert await client.exists(f"127.0.0.1/{REPO}:nope") is False
    (req, *_) = fake.manifest_requests()
    assert req.method == "HEAD"
    assert req.path == f"/v2/{REPO}/manifests/{SHA}"
    accepted = {a.strip() for a in req.headers["Accept"].split(",")}
    assert {OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST} <= accepted
    assert "Authorization" not in req.headers


@pytest.mark.parametrize("style", ["auth", "fields"])
async def test_basic_auth_from_docker_config(fake_registry_factory, session, tmp_path, style):
    fake, url = await fake_registry_factory(auth="basic", users={"alice": "s3cret"})
    fake.add_image(REPO, SHA)
    host = url.split("://")[1]
    cfg = fake.write_docker_config(tmp_path / "config.json", f"http://{host}", "alice", style=style)
    client = fast(session, url, docker_config=str(cfg))
    assert await client.exists(f"{host}/{REPO}:{SHA}") is True
    assert await client.exists(f"{host}/{REPO}:missing") is False
    reqs = fake.manifest_requests()
    # first request anonymous -> 401 -> retried with Basic; afterwards Basic straight away
    assert [("Authorization" in r.headers) for r in reqs] == [False, True, True]
    assert reqs[1].headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()


async def test_basic_auth_refused_is_unknown_not_missing(fake_registry_factory, session, tmp_path):
    fake, url = await fake_registry_factory(auth="basic", users={"alice": "s3cret"})
    host = url.split("://")[1]
    (tmp_path / "config.json").write_text(json.dumps(
        {"auths": {host: {"username": "alice", "password": "wrong"}}}))
    client = fast(session, url, docker_config=str(tmp_path))
    assert await client.exists(f"{host}/{REPO}:missing") is None
    anonymous = fast(session, url, docker_config=str(tmp_path / "absent.json"))
    assert await anonymous.exists(f"{host}/{REPO}:missing") is None
    assert await anonymous.health() == (True, f"{url} ok (authentication required)")


async def test_bearer_token_flow_with_credentials(fake_registry_factory, session, tmp_path):
    fake, url = await fake_registry_factory(auth="bearer", users={"alice": "s3cret"})
    fake.add_image(REPO, SHA)
    host = url.split("://")[1]
    cfg = fake.write_docker_config(tmp_path / "config.json", host, "alice")
    client = fast(session, url, docker_config=str(cfg))
    assert await client.exists(f"{host}/{REPO}:{SHA}") is True
    assert len(fake.token_requests) == 1
    tok = fake.token_requests[0]
    assert tok.query == {"scope": f"repository:{REPO}:pull", "service": "fake-registry"}
    assert tok.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    last = fake.manifest_requests()[-1]
    assert last.headers["Authorization"].startswith("Bearer ")
    assert last.headers["Authorization"][7:] in fake.tokens


async def test_bearer_token_cached_per_scope_until_expiry(fake_registry_factory, session, tmp_path):
    fake, url = await fake_registry_factory(auth="bearer", users={"alice": "s3cret"}, token_expires_in=300)
    fake.add_image(REPO, SHA)
    fake.add_image(REPO, "second")
    fake.add_image("binder-prebuild/other-abc123", SHA)
    host = url.split("://")[1]
    clock = Clock()
    client = fast(session, url, docker_config=str(fake.write_docker_config(tmp_path / "c.json", host, "alice")),
                  clock=clock)
    assert await client.exists(f"{host}/{REPO}:{SHA}") is True
    assert await client.exists(f"{host}/{REPO}:second") is True  # same scope: cached token, no 401
    assert len(fake.token_requests) == 1
    assert [r.headers.get("Authorization", "")[:6] for r in fake.manifest_requests()] == ["", "Bearer", "Bearer"]
    assert await client.exists(f"{host}/binder-prebuild/other-abc123:{SHA}") is True  # new scope, new token
    assert len(fake.token_requests) == 2
    clock.now += 250  # still within 300 s less the renewal margin
    assert await client.exists(f"{host}/{REPO}:third") is False
    assert len(fake.token_requests) == 2
    clock.now += 100  # past expires_in: a new token before the request
    assert await client.exists(f"{host}/{REPO}:fourth") is False
    assert len(fake.token_requests) == 3
    assert fake.manifest_requests()[-1].headers["Authorization"].startswith("Bearer ")


async def test_bearer_revoked_token_reauthenticates_once(fake_registry_factory, session, tmp_path):
    fake, url = await fake_registry_factory(auth="bearer", users={"alice": "s3cret"})
    fake.add_image(REPO, SHA)
    fake.add_image(REPO, "b")
    host = url.split("://")[1]
    client = fast(session, url, docker_config=str(fake.write_docker_config(tmp_path / "c.json", host, "alice")))
    assert await client.exists(f"{host}/{REPO}:{SHA}") is True
    fake.revoke_tokens()
    assert await client.exists(f"{host}/{REPO}:b") is True
    assert len(fake.token_requests) == 2


async def test_bearer_anonymous_pull(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory(auth="bearer", anonymous_pull=True)
    fake.add_image(REPO, SHA)
    client = fast(session, url)
    assert await client.exists(f"reg.example:5000/{REPO}:{SHA}") is True
    assert "Authorization" not in fake.token_requests[0].headers


async def test_bearer_token_refused_is_unknown(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory(auth="bearer", users={"alice": "s3cret"})
    client = fast(session, url)
    assert await client.exists(f"reg.example:5000/{REPO}:missing") is None
    assert len(fake.token_requests) == 1


async def test_secrets_never_logged(fake_registry_factory, session, tmp_path, caplog):
    fake, url = await fake_registry_factory(auth="bearer", users={"alice": "s3cret-pw"})
    fake.add_image(REPO, SHA)
    host = url.split("://")[1]
    caplog.set_level(logging.DEBUG)
    client = fast(session, url, docker_config=str(fake.write_docker_config(tmp_path / "c.json", host, "alice")))
    assert await client.exists(f"{host}/{REPO}:{SHA}") is True
    fake.fail_next(5, 500)
    assert await client.exists(f"{host}/{REPO}:x") is None
    text = caplog.text + repr(client.credentials)
    assert "s3cret-pw" not in text
    assert base64.b64encode(b"alice:s3cret-pw").decode() not in text
    assert not any(token in text for token in fake.tokens)


# ------------------------------------------------------------ fake registry: faults


async def test_5xx_burst_is_retried(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA)
    fake.fail_next(2, 503)
    fake.fail_next(1, 429)
    assert await fast(session, url).exists(f"reg.example:5000/{REPO}:{SHA}") is True
    assert len(fake.manifest_requests()) == 4


async def test_token_endpoint_5xx_is_retried(fake_registry_factory, session, tmp_path):
    fake, url = await fake_registry_factory(auth="bearer", users={"alice": "s3cret"})
    fake.add_image(REPO, SHA)
    host = url.split("://")[1]
    fake.fail_next(2, 502, where="token")
    client = fast(session, url, docker_config=str(fake.write_docker_config(tmp_path / "c.json", host, "alice")))
    assert await client.exists(f"{host}/{REPO}:{SHA}") is True
    assert len(fake.token_requests) == 3


async def test_timeout_is_retried(fake_registry_factory, session, no_docker_config):
    """The first request never gets an answer: the client gives up on it and asks again."""
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA)
    fake.hang_next(1)
    assert await fast(session, url, timeout=0.5, attempts=4).exists(f"reg.example:5000/{REPO}:{SHA}") is True
    assert fake.hung == 1
    # one timed-out attempt, then an answer (a further timeout on a loaded machine is a retry too)
    assert 2 <= len(fake.manifest_requests()) <= 4
    fake.release()


async def test_a_request_that_never_answers_is_unknown_after_every_attempt(fake_registry_factory, session,
                                                                          no_docker_config):
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA)
    fake.hang_next(3)
    assert await fast(session, url, timeout=0.2, attempts=3).exists(f"reg.example:5000/{REPO}:{SHA}") is None
    assert fake.hung == 3 and len(fake.manifest_requests()) == 3  # each attempt timed out, none more
    fake.release()


async def test_registry_down_is_unknown_never_cached(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA)
    fake.down = True
    client = fast(session, url, attempts=3)
    assert await client.exists(f"reg.example:5000/{REPO}:{SHA}") is None
    assert await client.exists(f"reg.example:5000/{REPO}:missing") is None
    assert len(fake.manifest_requests()) == 6  # every attempt made, for both
    ok, detail = await client.health()
    assert not ok and "503" in detail
    fake.down = False
    assert await client.exists(f"reg.example:5000/{REPO}:{SHA}") is True
    assert await client.exists(f"reg.example:5000/{REPO}:missing") is False
    assert (await client.health())[0] is True


async def test_unreachable_registry_is_unknown(session, no_docker_config):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: connection refused
    client = fast(session, f"http://127.0.0.1:{port}", attempts=2)
    assert await client.exists(f"reg.example:5000/{REPO}:{SHA}") is None
    ok, detail = await client.health()
    assert not ok and "unreachable" in detail


async def test_forbidden_is_unknown(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.fail_next(1, 403)
    client = fast(session, url)
    assert await client.exists(f"reg.example:5000/{REPO}:{SHA}") is None
    fake.add_image(REPO, SHA)
    assert await client.exists(f"reg.example:5000/{REPO}:{SHA}") is True  # the unknown answer was not cached


async def test_head_not_supported_falls_back_to_get(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.head_supported = False
    fake.add_image(REPO, SHA)
    client = fast(session, url)
    assert await client.exists(f"reg.example:5000/{REPO}:{SHA}") is True
    assert await client.exists(f"reg.example:5000/{REPO}:missing") is False
    assert [r.method for r in fake.manifest_requests()] == ["HEAD", "GET", "HEAD", "GET"]


# ------------------------------------------------------------ caching


async def test_found_is_cached_long(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA)
    clock = Clock()
    client = fast(session, url, clock=clock, found_ttl=3600, missing_ttl=10)
    image = f"reg.example:5000/{REPO}:{SHA}"
    assert await client.exists(image) is True
    fake.manifests.clear()
    clock.now += 3000
    assert await client.exists(image) is True
    assert len(fake.manifest_requests()) == 1
    clock.now += 700
    assert await client.exists(image) is False
    assert len(fake.manifest_requests()) == 2


async def test_missing_is_cached_short(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    clock = Clock()
    client = fast(session, url, clock=clock, found_ttl=3600, missing_ttl=10)
    image = f"reg.example:5000/{REPO}:{SHA}"
    assert await client.exists(image) is False
    fake.add_image(REPO, SHA)
    clock.now += 5
    assert await client.exists(image) is False
    assert len(fake.manifest_requests()) == 1
    clock.now += 6
    assert await client.exists(image) is True
    assert len(fake.manifest_requests()) == 2


async def test_forget_drops_a_cached_answer(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    client = fast(session, url, missing_ttl=3600)
    image = f"reg.example:5000/{REPO}:{SHA}"
    assert await client.exists(image) is False
    fake.add_image(REPO, SHA)
    client.forget(image)
    assert await client.exists(image) is True


async def test_concurrent_lookups_share_one_request(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA)
    fake.hang_next(1)
    client = fast(session, url)
    lookups = [asyncio.create_task(client.exists(f"reg.example:5000/{REPO}:{SHA}")) for _ in range(20)]
    while fake.hung < 1:  # the first lookup's request is held by the registry
        await asyncio.sleep(0.01)
    fake.release()
    assert await asyncio.gather(*lookups) == [True] * 20
    assert len(fake.manifest_requests()) == 1


async def test_cancelled_caller_does_not_cancel_others(fake_registry_factory, session, no_docker_config):
    fake, url = await fake_registry_factory()
    fake.add_image(REPO, SHA)
    fake.hang_next(1)
    client = fast(session, url)
    first = asyncio.create_task(client.exists(f"reg.example:5000/{REPO}:{SHA}"))
    second = asyncio.create_task(client.exists(f"reg.example:5000/{REPO}:{SHA}"))
    while fake.hung < 1:  # both wait on the one request the registry holds
        await asyncio.sleep(0.01)
    first.cancel()
    await asyncio.sleep(0)
    fake.release()
    assert await second is True
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_real_registry_finds_what_podman_pushed(registry, session, no_docker_config, tmp_path):
    """What Podman pushes (OCI manifests by default) is found by the client: the local builder's path."""
    import io
    import os
    import shutil
    import subprocess
    import tarfile
    import tempfile

    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: `apt-get install podman runc` (.ci/run installs it)", pytrace=False)
    runroot = tempfile.mkdtemp(prefix="rg-run-", dir="/tmp")
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{tmp_path / "graph"}"\nrunroot = "{runroot}"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("CONTAINER_HOST", "DOCKER_HOST", "DOCKER_CONFIG")}
    env["CONTAINERS_STORAGE_CONF"] = str(conf)
    (tmp_path / "auth.json").write_text("{}")
    env["REGISTRY_AUTH_FILE"] = str(tmp_path / "auth.json")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"hi\n"))
    (tmp_path / "img.tar").write_bytes(buf.getvalue())
    image = f"{registry.host}/binder-prebuild/podman-pushed-abc123:{SHA}"
    try:
        for argv in (["podman", "import", str(tmp_path / "img.tar"), image],
                     ["podman", "push", "--tls-verify=false", image]):
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, proc.stderr
    finally:
        subprocess.run(["podman", "rmi", "--all", "--force"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(runroot, ignore_errors=True)
    assert await fast(session, registry.url).exists(image) is True
    url = f"{registry.url}/v2/binder-prebuild/podman-pushed-abc123/manifests/{SHA}"
    async with session.head(url, headers={"Accept": MANIFEST_ACCEPT}) as r:
        assert r.headers["Content-Type"] == OCI_MANIFEST
