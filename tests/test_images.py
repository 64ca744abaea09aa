"""Image names by BinderHub's rule (DESIGN.md), so a BinderHub sharing registry and prefix finds our images.

Expected values are written out by hand from BinderHub's rule (binderhub/builder.py
``_safe_build_slug`` and the image name in ``BuildHandler.get``, with
``GitHubRepoProvider.get_build_slug`` = ``f"{user}-{repo}"``): escape the slug with
``-XX`` hex escapes for anything but ASCII letters and digits, keep ``limit - 7``
characters, append ``-`` and 6 hex characters of sha256 of the *unescaped* slug,
lowercase; then ``{prefix}{slug}:{sha}`` with ``_`` -> ``-``, lowercased.
"""
from __future__ import annotations

import hashlib

import pytest

from bot.images import effective_prefix, image_name, image_repository, image_tag, safe_repo_slug, split_registry

SHA = "6a9a8f4e3c2b1d0e9f8a7b6c5d4e3f2a1b0c9d8e"


def h6(slug: str) -> str:
    return hashlib.sha256(slug.encode()).hexdigest()[:6]


def test_worked_example_with_empty_prefix():
    assert image_name("binder-examples", "requirements", SHA, "") == (
        f"binder-2dexamples-2drequirements-55ab5c:{SHA}")
    assert h6("binder-examples-requirements") == "55ab5c"  # the hash is of the unescaped slug


def test_prefix_is_prepended_verbatim():
    assert image_name("binder-examples", "requirements", SHA, "binder-prebuild/") == (
        f"binder-prebuild/binder-2dexamples-2drequirements-55ab5c:{SHA}")
    assert image_name("binder-examples", "requirements", SHA, "127.0.0.1:5000/binder-") == (
        f"127.0.0.1:5000/binder-binder-2dexamples-2drequirements-55ab5c:{SHA}")


def test_underscores_are_escaped_in_the_slug_and_dashed_elsewhere():
    # in the slug "_" is escaped (-5f); in the prefix BinderHub's final replace turns it into "-"
    assert image_name("my_org", "my_repo", SHA, "my_prefix/") == (
        f"my-prefix/my-5forg-2dmy-5frepo-{h6('my_org-my_repo')}:{SHA}")
    assert h6("my_org-my_repo") == "2c0c99"


def test_dots_are_escaped():
    assert image_name("jupyter", "try.jupyter.org", SHA, "") == (
        f"jupyter-2dtry-2ejupyter-2eorg-{h6('jupyter-try.jupyter.org')}:{SHA}")


def test_upper_case_is_lowercased_but_hashed_as_given():
    name = image_name("Binder-Examples", "Requirements", SHA.upper(), "Binder/")
    assert name == f"binder/binder-2dexamples-2drequirements-fb3a16:{SHA}"
    assert h6("Binder-Examples-Requirements") == "fb3a16"
    # BinderHub hashes the slug as spelled, so case matters: another spelling is another image
    assert name.split(":")[0] != image_name("binder-examples", "requirements", SHA, "binder/").split(":")[0]
    assert name == name.lower()


@pytest.mark.parametrize("prefix", ["", "binder-prebuild/", "127.0.0.1:5000/binder-prebuild/", "a" * 100 + "/"])
def test_long_names_truncated_to_255_minus_prefix(prefix):
    owner, repo = "o" * 39, "._" * 50  # GitHub's longest owner and repo names; "." and "_" triple when escaped
    name = image_name(owner, repo, SHA, prefix)
    repository, tag = name.rsplit(":", 1)
    assert tag == SHA
    assert repository.startswith(prefix)
    assert len(repository) == 255  # prefix + slug use the whole limit
    slug = repository[len(prefix):]
    escaped = "o" * 39 + "-2d" + "-2e-5f" * 50
    assert len(escaped) > 255
    assert slug == f"{escaped[: 255 - len(prefix) - 7]}-{h6(owner + '-' + repo)}"


def test_truncated_names_stay_distinct():
    a = image_name("owner", "x" * 100, SHA, "p" * 150 + "/")
    b = image_name("owner", "x" * 99 + "y", SHA, "p" * 150 + "/")
    assert a != b
    assert a.rsplit("-", 1)[0] == b.rsplit("-", 1)[0]  # same truncated text, different hash


def test_short_names_are_not_truncated():
    assert safe_repo_slug("a", "b", limit=255) == f"a-2db-{h6('a-b')}"


def test_effective_prefix():
    assert effective_prefix("binder-prebuild/", None) == "binder-prebuild/"
    assert effective_prefix("binder-prebuild/", "") == "binder-prebuild/"
    assert effective_prefix("binder-prebuild/", "http://127.0.0.1:5000") == "127.0.0.1:5000/binder-prebuild/"
    assert effective_prefix("binder-", "http://127.0.0.1:5000/") == "127.0.0.1:5000/binder-"
    assert effective_prefix("binder-", "127.0.0.1:5000") == "127.0.0.1:5000/binder-"
    assert effective_prefix("binder-", "https://Registry.Example.org") == "registry.example.org/binder-"
    # an IMAGE_PREFIX that already names a registry is BinderHub's image_prefix as it is
    assert effective_prefix("127.0.0.1:5000/binder-", "http://127.0.0.1:5000") == "127.0.0.1:5000/binder-"
    assert effective_prefix("localhost:5000/binder-", "http://127.0.0.1:5000") == "localhost:5000/binder-"
    assert effective_prefix("gcr.io/project/binder-", "https://gcr.io") == "gcr.io/project/binder-"
    # Docker Hub names carry no host
    assert effective_prefix("myorg/binder-", "https://index.docker.io/v1/") == "myorg/binder-"
    assert effective_prefix("myorg/binder-", "docker.io") == "myorg/binder-"


def test_registry_host_counts_towards_the_length_limit():
    prefix = effective_prefix("binder-prebuild/", "http://127.0.0.1:5000")
    long_name = image_name("o" * 39, "._" * 50, SHA, prefix)
    assert len(long_name.rsplit(":", 1)[0]) == 255
    # the same name BinderHub computes with image_prefix = "127.0.0.1:5000/binder-prebuild/"
    assert long_name == image_name("o" * 39, "._" * 50, SHA, "127.0.0.1:5000/binder-prebuild/")
    assert len(image_name("o" * 39, "._" * 50, SHA, "binder-prebuild/").rsplit(":", 1)[0]) == 255


def test_split_registry_and_tags():
    assert split_registry(f"127.0.0.1:5000/binder-prebuild/foo-abc123:{SHA}") == (
        "127.0.0.1:5000", "binder-prebuild/foo-abc123", SHA)
    assert split_registry("localhost/foo/bar:1") == ("localhost", "foo/bar", "1")
    assert split_registry("binder-prebuild/foo:1") == (None, "binder-prebuild/foo", "1")
    assert split_registry("foo") == (None, "foo", "latest")
    assert split_registry("127.0.0.1:5000/foo") == ("127.0.0.1:5000", "foo", "latest")
    assert image_repository("127.0.0.1:5000/foo:bar") == "127.0.0.1:5000/foo"
    assert image_tag("127.0.0.1:5000/foo") == "latest"
