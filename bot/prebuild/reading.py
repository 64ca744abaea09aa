"""What the prebuild decisions read from GitHub at a sha: the repo config and the commit message.

Cached per sha in the app's ``Core`` (a file or commit at a sha never changes).
It sits below both the handlers and the feedback (which re-reads a PR's config
after a restart), so neither imports the other for it.
"""
from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.prebuild.repo_config import CONFIG_PATH, DEFAULT, ConfigError, RepoConfig, parse_repo_config

if TYPE_CHECKING:
    from bot.core import Core


async def load_repo_config(gh: GitHubAPI, services: "Core", owner: str, repo: str, sha: str) -> RepoConfig:
    """``.github/binder.yml`` at ``sha`` (404: defaults); cached per sha, errors included."""
    cache = services.repo_configs
    key = (f"{owner}/{repo}".lower(), sha)
    if key in cache:
        hit = cache[key]
        if isinstance(hit, ConfigError):
            raise hit
        return hit
    try:
        data = await gh.getitem("/repos/{owner}/{repo}/contents/{+path}{?ref}",
                                {"owner": owner, "repo": repo, "path": CONFIG_PATH, "ref": sha})
    except gidgethub.BadRequest as e:
        if e.status_code != 404:
            raise
        result: RepoConfig | ConfigError = DEFAULT
    else:
        result = _parse_contents(data)
    cache[key] = result
    if isinstance(result, ConfigError):
        raise result
    return result


def _parse_contents(data: Any) -> RepoConfig | ConfigError:
    if not isinstance(data, dict) or data.get("type") != "file":
        return ConfigError(f"`{CONFIG_PATH}` must be a file")
    encoding = data.get("encoding")
    if encoding == "none" or (encoding == "base64" and not data.get("content") and data.get("size")):
        return ConfigError("the file is too large to read through the GitHub API")
    try:
        raw = base64.b64decode(data.get("content") or "") if encoding == "base64" else str(data.get("content") or "").encode()
    except (ValueError, TypeError):
        return ConfigError("GitHub returned the file in an unreadable encoding")
    try:
        return parse_repo_config(raw)
    except ConfigError as e:
        return e


async def head_commit_message(gh: GitHubAPI, services: "Core", owner: str, repo: str, sha: str) -> str | None:
    """The commit message at ``sha`` (PR payloads carry none); None if GitHub has no such commit."""
    cache = services.commit_messages
    key = (f"{owner}/{repo}".lower(), sha)
    if key in cache:
        return cache[key]
    try:
        data = await gh.getitem("/repos/{owner}/{repo}/commits/{sha}", {"owner": owner, "repo": repo, "sha": sha})
    except gidgethub.BadRequest as e:
        if e.status_code not in (404, 422):
            raise
        return None
    message = ((data.get("commit") or {}).get("message")) if isinstance(data, dict) else None
    cache[key] = message
    return message
