"""What a launch URL asks for, as plain data: repo spec, redirect path, user and server names.

Pure functions only; the routes turn their errors into 400/404 pages.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import string
from collections.abc import Mapping
from urllib.parse import quote, unquote

# GitHub logins: alphanumerics and single hyphens, at most 39 characters.
_OWNER_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}$")
# GitHub repository names: letters, digits, '.', '-', '_' (at most 100), not '.' or '..'.
_REPO_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_SHA_RE = re.compile(r"^[0-9a-fA-F]{40}$")
# git check-ref-format, the parts a URL can carry: no control characters, space, ~ ^ : ? * [ \ or '..'
_REF_BAD_CHARS = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")
_NAME_CHARS = set(string.ascii_lowercase + string.digits + "-")
_SUFFIX_CHARS = string.ascii_lowercase + string.digits


class SpecError(ValueError):
    """The URL does not name a repository and ref we could serve (a 400, never a 5xx)."""


@dataclasses.dataclass(frozen=True)
class RepoSpec:
    """``gh/{owner}/{repo}/{ref}`` from the launch URL."""

    owner: str
    repo: str
    ref: str

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.repo}"

    @property
    def is_sha(self) -> bool:
        return is_full_sha(self.ref)

    @property
    def request_path(self) -> str:
        """BinderHub's ``BINDER_REQUEST``: ``v2/gh/owner/repo/ref``."""
        return f"v2/gh/{self.owner}/{self.repo}/{self.ref}"

    def persistent_path(self, sha: str) -> str:
        """BinderHub's ``BINDER_PERSISTENT_REQUEST``: the request pinned to the resolved sha."""
        return f"v2/gh/{self.owner}/{self.repo}/{sha}"


def is_full_sha(ref: str) -> bool:
    return bool(_SHA_RE.match(ref))


def parse_spec(owner: str, repo: str, ref: str) -> RepoSpec:
    """Validate the three URL parts; a full sha is normalised to lowercase."""
    if not _OWNER_RE.match(owner or ""):
        raise SpecError(f"{owner!r} is not a valid GitHub account name")
    if repo.endswith(".git"):
        repo = repo[:-4]
    if not _REPO_RE.match(repo or "") or repo in (".", ".."):
        raise SpecError(f"{repo!r} is not a valid GitHub repository name")
    ref = ref or ""
    if not ref or len(ref) > 255:
        raise SpecError("the ref (branch, tag or commit) is missing or too long")
    if (
        _REF_BAD_CHARS.search(ref)
        or ".." in ref
        or "@{" in ref
        or "//" in ref
        or ref.startswith(("/", "."))
        or ref.endswith(("/", ".", ".lock"))
        or "/." in ref
    ):
        raise SpecError(f"{ref!r} is not a valid git ref")
    if is_full_sha(ref):
        ref = ref.lower()
    return RepoSpec(owner, repo, ref)


def url_path_from_query(query: Mapping[str, str]) -> str:
    """BinderHub's rules for where to land once the server runs.

    ``labpath`` (a file opened in JupyterLab's document route, ``doc/tree/<path>``)
    wins over ``filepath`` (``tree/<path>``), which wins over ``urlpath``
    (any path in the server). Trailing slashes of file paths and leading slashes
    of the result are dropped; file paths are URI-encoded with '/' kept.
    """
    url_path = query.get("urlpath") or ""
    labpath = query.get("labpath")
    filepath = query.get("filepath")
    if labpath is not None:
        url_path = "doc/tree/" + _encode_uri(labpath.rstrip("/"))
    elif filepath is not None:
        url_path = "tree/" + _encode_uri(filepath.rstrip("/"))
    # Appended to the server's URL, which a browser then normalises: dot segments are
    # resolved here first, so the launch token never lands on another user's server.
    return normalise_landing_path(url_path)


_SEPARATORS = re.compile(r"[/\\]")  # browsers read '\\' as '/' in http(s) URLs
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unquote_fully(segment: str) -> str:
    """Percent-decode until nothing changes (``%252e`` is ``%2e`` is ``.``), bounded."""
    for _ in range(5):
        decoded = unquote(segment)
        if decoded == segment:
            break
        segment = decoded
    return segment


def normalise_landing_path(url_path: str) -> str:
    """The landing path with ``.``/``..`` segments resolved, relative to the user's server.

    Dot segments count in any spelling a browser or server may decode (``%2e%2e``,
    ``..\\``, double-encoded); a path that would climb above the server's own URL,
    hides a dot segment behind an encoded separator, or carries control characters
    is a SpecError (a 400), never a redirect.
    """
    query_at = re.search(r"[?#]", url_path)
    path, rest = (url_path[:query_at.start()], url_path[query_at.start():]) if query_at else (url_path, "")
    if _CONTROL.search(_unquote_fully(url_path)):
        raise SpecError("the landing path (urlpath, labpath or filepath) contains control characters")
    out: list[str] = []
    for segment in _SEPARATORS.split(path):
        decoded = _unquote_fully(segment)
        inner = _SEPARATORS.split(decoded)
        if len(inner) > 1 and any(p in (".", "..") for p in inner):
            raise SpecError("the landing path hides a '..' or '.' behind an encoded separator")
        if decoded in ("", "."):
            continue
        if decoded == "..":
            if not out:
                raise SpecError("the landing path (urlpath, labpath or filepath) leaves your own server")
            out.pop()
            continue
        out.append(segment)
    trailing = "/" if out and _SEPARATORS.fullmatch(path[-1:] or "x") else ""
    return "/".join(out) + trailing + rest


def _encode_uri(path: str) -> str:
    """JavaScript's ``encodeURI`` for a path: keep '/' and the URI-safe characters."""
    return quote(path, safe="/;,?:@&=+$-_.!~*'()#")


def server_url(hub_url: str, user: str, server_name: str = "") -> str:
    """``{hub_url}/user/{name}/[{server}/]`` — where a launched server lives."""
    base = hub_url.rstrip("/") + "/user/" + quote(user, safe="") + "/"
    if server_name:
        base += quote(server_name, safe="") + "/"
    return base


def username_for(owner: str, repo: str, suffix: str | None = None) -> str:
    """``<owner>-<repo>-<8 random>``, lowercased, safe for JupyterHub and DNS-like names.

    Long prefixes are shortened the way BinderHub does (first and last 15 characters).
    """
    raw = f"{owner}-{repo}".lower()
    prefix = "".join(c if c in _NAME_CHARS else "-" for c in raw)
    prefix = re.sub(r"-{2,}", "-", prefix).strip("-") or "binder"
    if len(prefix) > 32:
        prefix = f"{prefix[:15].rstrip('-')}-{prefix[-15:].lstrip('-')}"
    if suffix is None:
        suffix = "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(8))
    return f"{prefix}-{suffix}"


def new_launch_token() -> str:
    """The secret the single-user server accepts (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)
