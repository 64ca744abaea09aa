"""The Hub side: BinderSpawnerMixin starts only our images, with our token and BinderHub's variables."""
from __future__ import annotations

import secrets

import pytest

from launcher.spawner import (SERVICE_SCOPES, BinderSpawnerMixin, OptionsRefused, binder_env, check_image,
                              check_options, prefix_from_env)

PREFIX = "registry.example:5000/binder-prebuild/"
GOOD = PREFIX + "octo-2ddemo-3d037c:" + "a" * 40
TOKEN = "t" * 43


@pytest.mark.parametrize("image", [
    "docker.io/library/python:3.12", "binder-prebuild/x:1", PREFIX.rstrip("/") + ":latest",
    PREFIX + "../evil:1", PREFIX + "a/b:1", PREFIX + "name", PREFIX + "name@sha256:" + "0" * 64,
    PREFIX + "Name:1", PREFIX + "x:1 --privileged", "", None, 42,
    "evil.example/" + PREFIX + "x:1",
])
def test_images_outside_the_prefix_are_refused(image):
    with pytest.raises(OptionsRefused):
        check_image(image, PREFIX)


def test_our_image_names_pass():
    assert check_image(GOOD, PREFIX) == GOOD
    assert check_image("binder-prebuild/octo-2ddemo-3d037c:main-1", "binder-prebuild/")


def test_no_prefix_means_nothing_is_launched():
    with pytest.raises(OptionsRefused, match="no image prefix"):
        check_image(GOOD, "")


def test_options_need_a_token_and_clean_strings():
    ok = check_options({"image": GOOD, "token": TOKEN, "repo_url": "https://x/y.git", "ref": "a" * 40,
                        "binder_request": "v2/gh/o/r/main", "unknown": "ignored"}, PREFIX)
    assert ok == {"image": GOOD, "token": TOKEN, "repo_url": "https://x/y.git", "ref": "a" * 40,
                  "binder_request": "v2/gh/o/r/main"}
    for bad in ({"image": GOOD}, {"image": GOOD, "token": "short"}, {"image": GOOD, "token": "x" * 31},
                {"image": GOOD, "token": TOKEN + "!"}, {"image": GOOD, "token": TOKEN, "repo_url": "a\nb"},
                {"image": GOOD, "token": TOKEN, "binder_ref_url": 5}, []):
        with pytest.raises(OptionsRefused):
            check_options(bad, PREFIX)


def test_binder_environment_like_binderhub():
    env = binder_env({"image": GOOD, "token": TOKEN, "repo_url": "R", "binder_ref_url": "F",
                      "binder_launch_host": "H", "binder_persistent_request": "P", "binder_request": "Q"})
    assert env == {"JUPYTERHUB_ALLOW_TOKEN_IN_URL": "1", "BINDER_REPO_URL": "R", "BINDER_REF_URL": "F",
                   "BINDER_LAUNCH_HOST": "H", "BINDER_PERSISTENT_REQUEST": "P", "BINDER_REQUEST": "Q"}
    assert TOKEN not in env.values()


def test_prefix_from_environment_matches_the_image_names():
    from bot.images import effective_prefix

    for env in ({}, {"IMAGE_PREFIX": "bp/"}, {"IMAGE_PREFIX": "bp/", "REGISTRY_URL": "http://127.0.0.1:5000"},
                {"IMAGE_PREFIX": "127.0.0.1:5000/bp/", "REGISTRY_URL": "http://127.0.0.1:5000"},
                {"IMAGE_PREFIX": "bp/", "REGISTRY_URL": "https://docker.io"}):
        expected = effective_prefix(env.get("IMAGE_PREFIX", "binder-prebuild/"), env.get("REGISTRY_URL"))
        assert prefix_from_env(env) == expected


def test_mixin_composes_with_dockerspawner():
    from dockerspawner import DockerSpawner

    from launcher.local_spawner import HostNetworkBinderSpawner

    mro = HostNetworkBinderSpawner.__mro__
    assert mro.index(BinderSpawnerMixin) < mro.index(DockerSpawner)
    spawner = HostNetworkBinderSpawner(image_prefix=PREFIX)
    assert spawner.network_name == "host" and spawner.use_internal_ip and spawner.ip == "127.0.0.1"

    import asyncio

    assert asyncio.run(spawner.check_allowed(GOOD)) == GOOD
    from tornado.web import HTTPError

    with pytest.raises(HTTPError) as e:
        asyncio.run(spawner.check_allowed("docker.io/library/python:3"))
    assert e.value.status_code == 400


@pytest.mark.hub
def test_the_hub_refuses_images_outside_the_prefix(hub):
    name = "refuse-" + secrets.token_hex(4)
    assert hub.api("POST", f"/users/{name}")[0] == 201
    for options in (
        {"image": "docker.io/library/python:3.12", "token": secrets.token_urlsafe(32)},
        {"image": hub.prefix + "../../evil:1", "token": secrets.token_urlsafe(32)},
        {"image": hub.prefix + "octo-2ddemo-3d037c:" + "a" * 40},  # no token
        {},
    ):
        status, body = hub.api("POST", f"/users/{name}/server", options)
        assert status == 400, (options, status, body)
        assert "binder-prebuild:" in body["message"]
    assert [r for r in hub.records() if r["user"] == name] == []
    assert hub.running_servers() == []


@pytest.mark.hub
def test_service_role_has_only_the_scopes_the_launcher_needs(hub):
    status, me = hub.api("GET", "/user")
    assert status == 200 and me["kind"] == "service"
    scopes = set(me["scopes"])
    assert SERVICE_SCOPES == ["admin:users", "servers"]
    assert {"admin:users", "servers", "list:users", "read:servers", "delete:servers"} <= scopes
    assert not scopes & {"admin:servers", "admin:server_state", "proxy", "tokens", "read:tokens", "shutdown",
                         "admin:groups", "admin:services", "access:servers"}
    # not an admin of the Hub itself: no proxy, no tokens of others
    assert hub.api("GET", "/proxy")[0] == 403
    assert hub.api("GET", "/users/nobody-here/tokens")[0] in (403, 404)
