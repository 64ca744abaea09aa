"""Image names by BinderHub's rule, so a BinderHub sharing the registry finds our images."""
from __future__ import annotations

import hashlib
import string

import escapism

_SAFE = set(string.ascii_letters + string.digits)


def safe_repo_slug(owner: str, repo: str, limit: int) -> str:
    """BinderHub's ``GitHubRepoProvider.get_build_slug`` made safe for image names."""
    slug = f"{owner}-{repo}"
    escaped = escapism.escape(slug, safe=_SAFE, escape_char="-")
    digest = hashlib.sha256(slug.encode("utf-8")).hexdigest()[:6]
    return f"{escaped[: limit - 7]}-{digest}".lower()


def image_name(owner: str, repo: str, sha: str, prefix: str) -> str:
    """``{prefix}{safe_slug}:{sha}``, ``_`` -> ``-``, lowercase (BinderHub's builder)."""
    limit = 255 - len(prefix)
    name = f"{prefix}{safe_repo_slug(owner, repo, limit)}:{sha}"
    return name.replace("_", "-").lower()


def image_repository(image: str) -> str:
    """The name without its tag (``registry/name:tag`` -> ``registry/name``)."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[:colon] if colon > slash else image


def image_tag(image: str) -> str:
    slash = image.rfind("/")
    colon = image.rfind(":")
    return image[colon + 1 :] if colon > slash else "latest"


def _names_registry(first: str) -> bool:
    """Docker's rule: a first path component with a dot or a port, or ``localhost``, is a registry host."""
    return "." in first or ":" in first or first == "localhost"


def split_registry(image: str) -> tuple[str | None, str, str]:
    """``host:port/path/name:tag`` -> (host or None, path/name, tag)."""
    repo = image_repository(image)
    tag = image_tag(image)
    first, _, rest = repo.partition("/")
    if rest and _names_registry(first):
        return first, rest, tag
    return None, repo, tag


def effective_prefix(image_prefix: str, registry_url: str | None) -> str:
    """The prefix BinderHub would be configured with: registry host + IMAGE_PREFIX.

    With a registry, an IMAGE_PREFIX that does not already name a registry host
    gets the registry's host:port in front, so names (and their length limit)
    match a BinderHub whose ``image_prefix`` is ``host:port/IMAGE_PREFIX``. An
    IMAGE_PREFIX that names one (``localhost:5000/binder-``, as BinderHub's own
    ``image_prefix`` does) is used as it is. Docker Hub names carry no host.
    """
    if not registry_url:
        return image_prefix
    host = registry_url.split("://", 1)[-1].split("/", 1)[0].lower()
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return image_prefix
    first, sep, _ = image_prefix.partition("/")
    if sep and _names_registry(first):
        return image_prefix
    return f"{host}/{image_prefix}"
