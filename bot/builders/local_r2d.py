"""The repo2docker child process of a local build, as plain data (pure).

``LocalBuilder`` runs ``python -m repo2docker`` per build; everything about that
process that can be decided without running it lives here: the command line,
the traitlets config (Git content provider only), the environment (an allowlist,
so the bot's own secrets never reach repo2docker, git or the engine; the clone
token only through a git credential helper reading an environment variable),
and the one-sentence reason of a failed build.
"""
from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from bot.model import BuildJob

TOKEN_ENV = "BINDER_PREBUILD_GIT_TOKEN"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# what the child may inherit from the bot's environment (never GITHUB_*, JUPYTERHUB_*, ...)
_ENV_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
    "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "DOCKER_CONTEXT",
    "BUILDX_BUILDER", "BUILDKIT_PROGRESS", "CONTAINER_HOST", "CONTAINER_SSHKEY", "REGISTRY_AUTH_FILE",
    "CONTAINER_ENGINE_REGISTRY_CREDENTIALS", "PIP_CERT", "PIP_INDEX_URL", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "GIT_SSL_CAINFO", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY",
    "VIRTUAL_ENV", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
})
_ENV_PREFIXES = ("LC_", "CONTAINERS_", "BUILDAH_", "STORAGE_")
_URL_SCHEMES = ("http", "https", "git", "ssh")


class BadJob(ValueError):
    """A job this builder refuses to run (the outcome says why)."""


def engine_command(container_engine: str) -> list[str]:
    """``"podman --root /x"`` -> ``["podman", "--root", "/x"]`` (as LocalImages reads it)."""
    return shlex.split(container_engine or "") or ["docker"]


def engine_name(container_engine: str) -> str:
    """repo2docker's ``--engine``: ``podman`` (our PodmanEngine) or ``docker``."""
    return "podman" if os.path.basename(engine_command(container_engine)[0]) == "podman" else "docker"


def check_clone_url(url: str) -> str:
    """Only remote git URLs: a path (or ``file://``) would make repo2docker build a host directory."""
    parts = urlsplit(url)
    if url.startswith("-") or parts.scheme not in _URL_SCHEMES or not parts.netloc or any(
            c.isspace() or ord(c) < 32 for c in url):
        raise BadJob(f"not a remote git URL: {url[:200]!r}")
    return url


def _check_arg(what: str, value: str) -> str:
    if not value or value.startswith("-") or any(c.isspace() or ord(c) < 32 for c in value):
        raise BadJob(f"invalid {what}: {value[:200]!r}")
    return value


def r2d_config(container_engine: str) -> str:
    """The ``--config`` file: Git content provider only (the others fetch from the internet)."""
    lines = [
        "# written by binder-prebuild's LocalBuilder",
        "from repo2docker.contentproviders import Git",
        "c.Repo2Docker.content_providers = [Git]",
        "",
        "# One SIGINT stops the build (KeyboardInterrupt: the engine then removes its buildah",
        "# leftovers); later ones must not interrupt that cleanup. The parent-death signal",
        "# comes once per exiting thread of a multi-threaded parent, so twice is usual.",
        "import signal as _signal",
        "def _first_sigint(signum, frame, _seen=[]):",
        "    if not _seen:",
        "        _seen.append(signum)",
        "        raise KeyboardInterrupt",
        "_signal.signal(_signal.SIGINT, _first_sigint)",
    ]
    command = engine_command(container_engine)
    if engine_name(container_engine) == "podman" and len(command) > 1:
        lines.append(f"c.PodmanEngine.podman_command = {command!r}")
    return "\n".join(lines) + "\n"


def r2d_args(
    job: BuildJob, *, container_engine: str, push: bool, config_path: str, python: str,
) -> list[str]:
    """repo2docker's command line for one build (the same flags as the build pod's, plus the engine)."""
    req = job.request
    args = [
        python, "-m", "repo2docker",
        "--config", config_path,
        "--engine", engine_name(container_engine),
        "--json-logs", "--no-run",
        "--user-id", "1000", "--user-name", "jovyan",
        "--ref", _check_arg("sha", req.sha),
        "--image-name", _check_arg("image name", job.image),
    ]
    if push:
        args.append("--push")
    if job.cache_from:
        args += ["--cache-from", _check_arg("cache-from image", job.cache_from)]
    if req.subdir and req.subdir.strip("/"):
        args += ["--subdir", _check_arg("subdir", req.subdir.strip("/"))]
    args.append(check_clone_url(req.clone_url))
    return args


def credential_env(clone_url: str) -> dict[str, str]:
    """git asks a helper (git config in the environment, git >= 2.31) for the clone URL's origin only.

    The helper prints the token from ``$BINDER_PREBUILD_GIT_TOKEN``: the token is
    in no argument and no file, and git never logs it.
    """
    parts = urlsplit(clone_url)
    origin = f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"
    helper = ('!f() { test "$1" = get || return 0; echo username=x-access-token; '
              f'echo "password=${TOKEN_ENV}"; }}; f')
    return {
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": f"credential.{origin}.helper",
        "GIT_CONFIG_VALUE_0": helper,
    }


def child_env(
    base: Mapping[str, str], *, job: BuildJob, container_engine: str, auth_file: Path | None = None,
    ca_bundle: str | None = HOST_CA_BUNDLE,
) -> dict[str, str]:
    """The environment repo2docker (and git, and the engine under it) runs with."""
    env = {k: v for k, v in base.items() if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}
    env.setdefault("PATH", os.defpath)
    env["PYTHONUNBUFFERED"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"  # a private repo without a token fails instead of waiting for input
    podman = engine_name(container_engine) == "podman"
    if podman and ca_bundle and "PIP_CERT" not in env and os.path.isfile(ca_bundle):
        env["PIP_CERT"] = ca_bundle  # PodmanEngine mounts it for RUN steps (pip behind a TLS-inspecting proxy)
    if auth_file is not None:
        if podman:
            env["REGISTRY_AUTH_FILE"] = str(auth_file)
        else:
            env["DOCKER_CONFIG"] = str(auth_file.parent)
    if job.clone_token:
        env.update(credential_env(job.request.clone_url))
        env[TOKEN_ENV] = job.clone_token
    return env


# ---- why a build failed, in one sentence
_ERROR_LINE = re.compile(r"\berror\b|\bfatal\b|\bfailed\b|exit (?:status|code)", re.IGNORECASE)
_NOISE = re.compile(r"^(?:Traceback|\s+File \"|\s{2,})")


def failure_reason(failure: str | None, tail: Iterable[str], returncode: int | None) -> str:
    """The last error line repo2docker or the engine printed, else the exit status (one line)."""
    candidates = []
    if failure:
        candidates.append(failure)
    lines = [x for x in tail if x.strip()]
    candidates += [x for x in reversed(lines) if _ERROR_LINE.search(x) and not _NOISE.match(x)]
    for text in candidates:
        parts = [p.strip() for p in text.strip().splitlines() if p.strip()]
        if not parts:
            continue
        if len(parts) > 1:  # "Error during build: podman build exited with 1:\n...\nError: the cause"
            errs = [p for p in parts[1:] if _ERROR_LINE.search(p)]
            reason = f"{parts[0].rstrip(':')}: {(errs or parts)[-1]}"
        else:
            reason = parts[0]
        return _one_line(reason)
    if returncode is not None and returncode < 0:
        return f"repo2docker was stopped by signal {-returncode}"
    return f"repo2docker exited with code {returncode}"


def _one_line(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 2] + " …"


class LineSplitter:
    """Bytes -> text lines, split on ``\\n`` or a bare ``\\r`` (progress output)."""

    def __init__(self, max_line: int = 64 * 1024) -> None:
        self._buf = b""
        self._max = max_line

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out = []
        while True:
            m = re.search(rb"\r\n|\n|\r(?=.)", self._buf, re.DOTALL)
            if not m:
                break
            out.append(self._buf[: m.start()].decode("utf-8", "replace"))
            self._buf = self._buf[m.end():]
        if len(self._buf) > self._max:  # a line without end: pass it on in pieces
            out.append(self._buf.decode("utf-8", "replace"))
            self._buf = b""
        return out

    def flush(self) -> list[str]:
        rest, self._buf = self._buf, b""
        return [rest.decode("utf-8", "replace")] if rest else []
