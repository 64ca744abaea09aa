"""Image names by BinderHub's rule, so a BinderHub sharing the registry finds our images."""
from __future__ import annotations

import hashlib
import string

import escapism

# the prefix rule lives with the Hub-side check, which must import without the bot
from launcher.spawner import effective_prefix, names_registry

__all__ = ["effective_prefix", "image_name", "image_repository", "image_tag", "safe_repo_slug", "split_registry"]

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


def split_registry(image: str) -> tuple[str | None, str, str]:
    """``host:port/path/name:tag`` -> (host or None, path/name, tag)."""
    repo = image_repository(image)
    tag = image_tag(image)
    first, _, rest = repo.partition("/")
    if rest and names_registry(first):
        return first, rest, tag
    return None, repo, tag
