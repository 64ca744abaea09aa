"""One image-prefix rule for the launcher and the Hub (issue 11 item 12, issue 15 bug 4).

The launcher names images with ``effective_prefix`` (the scheduler's ``image_prefix``);
the Hub-side mixin (launcher/spawner.py, embedded verbatim in the Z2JH values) checks
every image against ``prefix_from_env``. Both call the same function, and over many
generated settings the two prefixes are equal and the Hub accepts every image name the
launcher makes, and nothing a trailing newline or another prefix would sneak past it.
"""
from __future__ import annotations

import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import load_settings
from bot.scheduler import Scheduler
from launcher.spawner import OptionsRefused, check_image, check_options, prefix_from_env

NO_DATA = "/nonexistent/binder-prebuild-test-data"  # no stored App credentials are read

_label = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=12)
hosts = st.one_of(
    st.sampled_from(["127.0.0.1:5000", "localhost:5000", "localhost", "Registry.Example.org", "gcr.io",
                     "docker.io", "index.docker.io", "registry-1.docker.io", "quay.io:443", "[::1]:5000"]),
    st.builds(lambda a, b, port: f"{a}.{b}" + (f":{port}" if port else ""), _label, _label,
              st.one_of(st.none(), st.integers(1, 65535))),
)
registries = st.one_of(
    st.none(), st.just(""),
    st.builds(lambda scheme, host, path: f"{scheme}{host}{path}", st.sampled_from(["http://", "https://", ""]),
              hosts, st.sampled_from(["", "/", "/v2/", "/v1/"])),
)
_component = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", min_size=1, max_size=10)
prefixes = st.builds(
    lambda host, parts, end: (f"{host}/" if host else "") + "/".join(parts) + end,
    st.one_of(st.none(), hosts),
    st.lists(_component.filter(lambda c: c[0].isalnum() and c[-1].isalnum()), min_size=1, max_size=3),
    st.sampled_from(["/", "-", "/binder-"]),
)
owners = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,20}", fullmatch=True)
repos = st.from_regex(r"[A-Za-z0-9._-]{1,40}", fullmatch=True).filter(lambda r: r not in (".", ".."))
shas = st.from_regex(r"[0-9a-f]{40}", fullmatch=True)


def launcher_side(env: dict[str, str]) -> Scheduler:
    """The scheduler as the service builds it from these settings (it names every image)."""
    return Scheduler(types.SimpleNamespace(settings=load_settings({"DATA_DIR": NO_DATA, **env})))


def env_of(prefix: str, registry: str | None) -> dict[str, str]:
    env = {"IMAGE_PREFIX": prefix}
    if registry is not None:
        env["REGISTRY_URL"] = registry
    return env


@settings(max_examples=400, deadline=None)
@given(prefix=prefixes, registry=registries, owner=owners, repo=repos, sha=shas)
def test_launcher_and_hub_derive_the_same_prefix_and_the_hub_accepts_every_image(prefix, registry, owner, repo, sha):
    env = env_of(prefix, registry)
    scheduler = launcher_side(env)
    hub_prefix = prefix_from_env(env)
    assert scheduler.image_prefix == hub_prefix
    image = scheduler.image_for(owner, repo, sha)
    assert image.startswith(hub_prefix)
    assert check_image(image, hub_prefix) == image
    for bad in (image + "\n", image + "\n" + "x", hub_prefix + "../other:" + sha, "other.example/" + image):
        with pytest.raises(OptionsRefused):
            check_image(bad, hub_prefix)


@pytest.mark.parametrize("env,expected", [
    # the reported case: the prefix names its own host; the Hub used to put the registry's in front too
    ({"IMAGE_PREFIX": "localhost:5000/binder-", "REGISTRY_URL": "http://127.0.0.1:5000"}, "localhost:5000/binder-"),
    # a mixed-case registry host: lowercased on both sides (image names are lowercase)
    ({"IMAGE_PREFIX": "bp/", "REGISTRY_URL": "https://Registry.Example.org"}, "registry.example.org/bp/"),
    ({"IMAGE_PREFIX": "Registry.Example.org/bp/", "REGISTRY_URL": "https://registry.example.org"},
     "registry.example.org/bp/"),
    ({}, "binder-prebuild/"),
    ({"IMAGE_PREFIX": "myorg/binder-", "REGISTRY_URL": "https://index.docker.io/v1/"}, "myorg/binder-"),
])
def test_reported_settings_agree(env, expected):
    assert prefix_from_env(env) == expected == launcher_side(env).image_prefix
    image = launcher_side(env).image_for("octo", "Demo_Repo", "a" * 40)
    assert check_image(image, prefix_from_env(env)) == image


def test_a_trailing_newline_is_refused_everywhere():
    prefix = prefix_from_env({"IMAGE_PREFIX": "bp/"})
    image = launcher_side({"IMAGE_PREFIX": "bp/"}).image_for("octo", "demo", "b" * 40)
    with pytest.raises(OptionsRefused):
        check_image(image + "\n", prefix)
    with pytest.raises(OptionsRefused):
        check_options({"image": image, "token": "t" * 40 + "\n"}, prefix)
    assert check_options({"image": image, "token": "t" * 40}, prefix)["image"] == image


def test_an_operator_prefix_in_another_case_still_matches():
    image = launcher_side({"IMAGE_PREFIX": "bp/", "REGISTRY_URL": "http://Reg.Example:5000"}).image_for(
        "octo", "demo", "c" * 40)
    assert check_image(image, "Reg.Example:5000/bp/") == image
