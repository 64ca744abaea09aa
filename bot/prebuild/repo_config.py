""".github/binder.yml: the per-repository settings, parsed strictly.

Pure: text in, RepoConfig or ConfigError out. A config that does not parse or has
a wrong type must be reported to the user (a failed check run naming the key),
never silently replaced by defaults, so every problem carries the key and a
sentence a repository owner can act on.
"""
from __future__ import annotations

import dataclasses
import difflib
import posixpath
import re
from typing import Any

import yaml

CONFIG_PATH = ".github/binder.yml"
MAX_CONFIG_BYTES = 64 * 1024


class ConfigError(ValueError):
    """The repository's config cannot be used; ``key`` is None for file-level problems."""

    def __init__(self, problem: str, *, key: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        self.problem = problem
        self.key = key
        self.line = line  # 1-based
        self.column = column  # 1-based
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line is not None else ""
        if self.key is not None:
            return f"`{self.key}`: {self.problem}{where}"
        return f"{self.problem}{where}"


@dataclasses.dataclass(frozen=True)
class RepoConfig:
    enabled: bool = True
    branches: tuple[str, ...] | None = None  # None: every branch
    pull_requests: bool = True
    forks: bool = False
    comment: bool = True
    urlpath: str | None = None
    subdir: str | None = None

    def branch_allowed(self, branch: str) -> bool:
        return self.branches is None or branch_matches(branch, self.branches)


DEFAULT = RepoConfig()

_BOOL_KEYS = ("enabled", "pull_requests", "forks", "comment")
_KNOWN = ("enabled", "branches", "pull_requests", "forks", "comment", "urlpath", "subdir")


def parse_repo_config(text: str | bytes | None) -> RepoConfig:
    """Parse the file's text; empty or absent (None) gives the defaults."""
    if text is None:
        return DEFAULT
    if isinstance(text, bytes):
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"the file is not valid UTF-8 (byte {e.start})") from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or e.context or "invalid YAML"
        raise ConfigError(
            f"YAML syntax error: {problem}",
            line=mark.line + 1 if mark else None, column=mark.column + 1 if mark else None,
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"YAML syntax error: {e}") from None
    if root is None:
        return DEFAULT
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(
            f"the file must be a mapping of settings (like `enabled: true`), not {_node_kind(root)}",
            line=root.start_mark.line + 1, column=root.start_mark.column + 1,
        )

    constructor = yaml.SafeLoader("")
    values: dict[str, Any] = {}
    seen: set[str] = set()
    for key_node, value_node in root.value:
        line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
            raise ConfigError("setting names must be plain words", key=_scalar_text(key_node), line=line, column=col)
        key = key_node.value
        if key in seen:
            raise ConfigError("is set twice", key=key, line=line, column=col)
        seen.add(key)
        if key not in _KNOWN:
            hint = difflib.get_close_matches(key, _KNOWN, n=1)
            suggestion = f"; did you mean `{hint[0]}`?" if hint else f"; known settings: {', '.join(_KNOWN)}"
            raise ConfigError(f"unknown setting{suggestion}", key=key, line=line, column=col)
        vline, vcol = value_node.start_mark.line + 1, value_node.start_mark.column + 1
        try:
            value = constructor.construct_document(value_node)
        except yaml.YAMLError as e:  # e.g. a malformed timestamp or an unknown tag
            raise ConfigError(f"cannot read the value: {getattr(e, 'problem', None) or e}", key=key,
                              line=vline, column=vcol) from None
        values[key] = _check(key, value, vline, vcol)
    return RepoConfig(**values)


def _check(key: str, value: Any, line: int, column: int) -> Any:
    def fail(problem: str) -> ConfigError:
        return ConfigError(problem, key=key, line=line, column=column)

    if key in _BOOL_KEYS:
        if not isinstance(value, bool):
            raise fail(f"must be true or false, not {_describe(value)}")
        return value
    if key == "branches":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise fail(f"must be a list of branch name patterns, not {_describe(value)}")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip() or item.strip() == "!":
                raise fail(f"item {i + 1} must be a non-empty branch name pattern, not {_describe(item)}")
            out.append(item.strip())
        return tuple(out)
    if key == "urlpath":
        if not isinstance(value, str):
            raise fail(f"must be a string (a path such as `lab/tree/index.ipynb`), not {_describe(value)}")
        if any(c in value for c in "\r\n\t") or len(value) > 1024:
            raise fail("must be a single line of at most 1024 characters")
        return value.strip() or None
    if key == "subdir":
        if not isinstance(value, str):
            raise fail(f"must be a string (a directory inside the repository), not {_describe(value)}")
        sub = value.strip()
        if not sub:
            return None
        if "\x00" in sub or any(c in sub for c in "\r\n"):
            raise fail("must be a single-line path")
        if sub.startswith("/") or ".." in sub.replace("\\", "/").split("/"):
            raise fail(f"must be a relative path inside the repository, not {value!r}")
        norm = posixpath.normpath(sub)
        return None if norm == "." else norm
    raise AssertionError(key)  # pragma: no cover - _KNOWN and _check agree


def _describe(value: Any) -> str:
    if value is None:
        return "empty (null)"
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} ({text})"


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return "a single value"


def _scalar_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else "?"


# Branch patterns ------------------------------------------------------------
# GitHub Actions' filter rules: `*` stays within one path segment, `**` crosses
# `/`, `?` is one character, `[...]` a class; patterns apply in order and one
# starting with `!` excludes what earlier ones included. A list of exclusions
# only means "every branch but these".


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def branch_matches(branch: str, patterns: tuple[str, ...] | list[str]) -> bool:
    """Does ``branch`` pass the ordered include/exclude patterns?"""
    allowed = False
    only_negative = all(p.startswith("!") for p in patterns)
    if only_negative and patterns:
        allowed = True
    for p in patterns:
        negate = p.startswith("!")
        body = p[1:] if negate else p
        try:
            hit = _glob_regex(body).match(branch) is not None
        except re.error:
            hit = body == branch
        if hit:
            allowed = not negate
    return allowed
