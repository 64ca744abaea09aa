"""``git ls-remote``: a ref's sha from any host git can reach, with no API token and no rate limit.

Used where no GitHub App installation can answer: the ``build`` command, and
launches of LAUNCH_ALLOW repositories without an installation. The command line,
the parsing of git's output and the reading of its failures are pure functions;
``ls_remote`` runs git once, anonymously (no credential helper, no prompt, an
environment allowlist so the service's secrets never reach git), and kills git and
its transport helpers when the timeout passes.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import os
import re
import signal
from collections.abc import Mapping
from urllib.parse import urlsplit

_SHA = re.compile(r"^[0-9a-f]{40}$")
ALLOWED_PROTOCOLS = "http:https:git:ssh"  # never file:// or ext:: (a URL must not reach the host or a shell)
_URL_SCHEMES = frozenset(ALLOWED_PROTOCOLS.split(":"))
_ENV_NAMES = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "all_proxy",
})
# what git prints when the repository is missing, or private (it wanted credentials we do not give)
_NO_REPO = re.compile(
    r"not found|could not read (?:username|password)|authentication failed|terminal prompts disabled"
    r"|returned error: 40[134]|does not appear to be a git repository|access denied|permission denied",
    re.IGNORECASE)


class Outcome(str, enum.Enum):
    FOUND = "found"
    NO_REF = "no_ref"  # the repository answered; it has no such branch or tag
    NO_REPO = "no_repo"  # missing, or private
    UNREACHABLE = "unreachable"  # no answer in time, network error, server error


@dataclasses.dataclass(frozen=True)
class Answer:
    outcome: Outcome
    sha: str | None = None
    branch: str | None = None  # the ref, when it names a branch (not a tag)
    default_branch: str | None = None  # only known when HEAD was asked for
    detail: str = ""  # git's last error line: for logs, not for pages


def check_url(url: str) -> str:
    """A remote git URL (http, https, git, ssh) with a host; ValueError otherwise."""
    parts = urlsplit(url)
    if url.startswith("-") or parts.scheme not in _URL_SCHEMES or not parts.netloc \
            or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"not a remote git URL: {url[:200]!r}")
    return url


def patterns_for(ref: str) -> list[str]:
    """The refs to ask for: HEAD itself, or a branch and a tag (peeled) of that name."""
    if ref == "HEAD":
        return ["HEAD"]
    return [f"refs/heads/{ref}", f"refs/tags/{ref}", f"refs/tags/{ref}^{{}}"]


def ls_remote_command(url: str, ref: str) -> list[str]:
    """Anonymous: no credential helper and no askpass, whatever the host's git config says."""
    return ["git", "-c", "credential.helper=", "-c", "core.askPass=", "ls-remote", "--symref", "--",
            check_url(url), *patterns_for(ref)]


def git_env(base: Mapping[str, str]) -> dict[str, str]:
    """An allowlist of the caller's environment, plus what keeps git from waiting for anyone."""
    env = {k: v for k, v in base.items() if k in _ENV_NAMES or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ALLOW_PROTOCOL=ALLOWED_PROTOCOLS, GIT_CONFIG_NOSYSTEM="1",
               GIT_SSH_COMMAND="ssh -o BatchMode=yes")
    return env


def parse_ls_remote(output: str, ref: str) -> Answer:
    """The sha ``ref`` names in ``git ls-remote --symref`` output; tags win over branches (as in git)."""
    refs: dict[str, str] = {}
    default = None
    for line in output.splitlines():
        if line.startswith("ref: "):
            target, _, name = line[5:].partition("\t")
            if name == "HEAD" and target.startswith("refs/heads/"):
                default = target.removeprefix("refs/heads/")
            continue
        sha, _, name = line.partition("\t")
        if _SHA.match(sha):
            refs[name] = sha
    if ref == "HEAD":
        sha = refs.get("HEAD")
        return Answer(Outcome.FOUND, sha, default, default) if sha else Answer(Outcome.NO_REF)
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}"):
        if name in refs:
            return Answer(Outcome.FOUND, refs[name])
    sha = refs.get(f"refs/heads/{ref}")
    return Answer(Outcome.FOUND, sha, branch=ref) if sha else Answer(Outcome.NO_REF)


def classify_failure(stderr: str) -> Answer:
    """A failed ``git ls-remote``: the repository is not there (or private), or the host did not answer."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    detail = lines[-1][:300] if lines else "git ls-remote failed"
    outcome = Outcome.NO_REPO if _NO_REPO.search(stderr) else Outcome.UNREACHABLE
    return Answer(outcome, detail=detail)


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # git and its transport helper (git-remote-http, ssh)


async def ls_remote(url: str, ref: str, *, timeout: float = 10.0, env: Mapping[str, str] | None = None) -> Answer:
    """Run ``git ls-remote`` once for ``ref`` at ``url``; never longer than ``timeout`` seconds."""
    try:
        args = ls_remote_command(url, ref)
    except ValueError as e:
        return Answer(Outcome.NO_REPO, detail=str(e))
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=git_env(os.environ if env is None else env), start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        _kill(proc)
        await proc.wait()
        return Answer(Outcome.UNREACHABLE, detail=f"no answer within {timeout:g} s")
    except BaseException:
        _kill(proc)
        raise
    if proc.returncode != 0:
        return classify_failure(err.decode(errors="replace"))
    return parse_ls_remote(out.decode(errors="replace"), ref)
