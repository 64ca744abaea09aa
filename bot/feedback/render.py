"""Check-run output and PR comment text: pure functions of plain data.

Everything a user reads on GitHub is produced here, so its wording, links and
size limits are unit-tested without any I/O.
"""
from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Sequence
from urllib.parse import quote, urlencode

from bot.model import Phase

CHECK_NAME = "Binder"
COMMENT_MARKER = "<!-- binder-prebuild -->"
# GitHub rejects check-run output fields over 65 535 characters; we count UTF-8
# bytes (never fewer than characters) and keep a little room.
OUTPUT_LIMIT = 65535
_MARGIN = 64
LOG_LINES_IN_PROGRESS = 30
REASON_LIMIT = 300

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@")
_TOKENS = re.compile(r"\b(gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|v1\.[0-9a-f]{40})\b")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+|!~@&])")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
# GitHub links what survives Markdown: @mentions, #123 and owner/repo#123 references,
# bare URLs and e-mail addresses. A zero-width space after the trigger breaks each.
_ZWSP = "\u200b"
_LIVE_TEXT = re.compile(r"(?i)(@|#|://|\bwww\.)")


class CheckStatus(str, enum.Enum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class Conclusion(str, enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    NEUTRAL = "neutral"


class CommentState(str, enum.Enum):
    BUILDING = "building"
    READY = "ready"
    FAILED = "failed"
    SKIPPED = "skipped"
    CLOSED = "closed"


# Links ----------------------------------------------------------------------


def _base(public_url: str) -> str:
    return public_url.rstrip("/")


def launch_url(public_url: str, owner: str, repo: str, ref: str, urlpath: str | None = None) -> str:
    """BinderHub's launch URL; ``urlpath`` becomes its query parameter."""
    url = f"{_base(public_url)}/v2/gh/{quote(owner, safe='')}/{quote(repo, safe='')}/{quote(ref, safe='/')}"
    if urlpath:
        url += "?" + urlencode({"urlpath": urlpath}, quote_via=quote)
    return url


def build_url(public_url: str, owner: str, repo: str, sha: str) -> str:
    """The build's progress page (launcher/build_page.py): the check run's details_url."""
    return f"{_base(public_url)}/builds/gh/{quote(owner, safe='')}/{quote(repo, safe='')}/{sha}"


def badge_url(public_url: str, owner: str, repo: str, ref: str) -> str:
    return f"{_base(public_url)}/badge/gh/{quote(owner, safe='')}/{quote(repo, safe='')}/{quote(ref, safe='/')}.svg"


def commit_url(clone_url: str, sha: str) -> str | None:
    """The web page of a commit, derived from the clone URL GitHub reported (any host)."""
    if not clone_url.startswith(("https://", "http://")):
        return None
    base = _URL_CREDENTIALS.sub(r"\1", clone_url).rstrip("/")
    if base.endswith(".git"):
        base = base[:-4]
    return f"{base}/commit/{sha}"


# Text hygiene -----------------------------------------------------------------


def scrub(line: str) -> str:
    """Remove terminal escapes, control characters and anything that looks like a credential."""
    line = _ANSI.sub("", line)
    line = _CONTROL.sub("", line.replace("\t", "    "))
    line = _URL_CREDENTIALS.sub(r"\1***@", line)
    return _TOKENS.sub("***", line)


def _escape_text(text: str) -> str:
    """Markdown, HTML, entities, mentions, references and autolinks all shown as typed."""
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _LIVE_TEXT.sub(lambda m: m.group(1) + _ZWSP, text)


def plain(text: str, limit: int = REASON_LIMIT) -> str:
    """One line of user-visible prose: scrubbed, whitespace collapsed, Markdown and @mentions inert."""
    text = " ".join(scrub(text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return _escape_text(text)


def inert(text: str, limit: int = REASON_LIMIT) -> str:
    """Our wording with untrusted values inside (config errors, failure reasons), made inert.

    `Code spans` stay code spans (re-fenced, so their content cannot break out) and
    everything else is escaped as by :func:`plain`: nothing a repository or a
    commenter wrote becomes a link, a mention, a reference or HTML.
    """
    text = " ".join(scrub(text).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    out, pos = [], 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape_text(text[pos:m.start()]))
        out.append(code_span(m.group(2)))
        pos = m.end()
    out.append(_escape_text(text[pos:]))
    return "".join(out)


def code_span(text: str) -> str:
    """Inline code that survives backticks inside ``text``."""
    text = " ".join(scrub(text).split())
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def trusted(text: str, limit: int = 1000) -> str:
    """Our own wording (may hold Markdown) with any embedded user text scrubbed and bounded."""
    return " ".join(scrub(text).split())[:limit]


def one_sentence(reason: str | None, default: str = "The build failed.") -> str:
    text = " ".join(scrub(reason or "").split())
    if not text:
        return default
    m = re.search(r"(?<=[.!?])\s", text)
    if m and m.start() >= 20:
        text = text[: m.start()]
    return text


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


def fit(text: str, limit: int = OUTPUT_LIMIT - _MARGIN) -> str:
    """Cut ``text`` to ``limit`` UTF-8 bytes at a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def code_block(lines: Sequence[str], budget: int = OUTPUT_LIMIT - _MARGIN, note_cut: bool = True) -> str:
    """A fenced block with the newest lines that fit in ``budget`` bytes (older ones dropped)."""
    clean = [scrub(x).rstrip() for x in lines]
    longest = max((len(m) for x in clean for m in re.findall(r"`+", x)), default=0)
    fence = "`" * max(3, longest + 1)
    head, tail = f"{fence}text\n", f"\n{fence}"
    room = budget - _utf8_len(head) - _utf8_len(tail) - 80
    kept: list[str] = []
    used = 0
    for line in reversed(clean):
        if len(line) > 2000:  # one enormous line must not crowd out the rest
            line = line[:2000] + " …"
        n = _utf8_len(line) + 1
        if used + n > room:
            break
        kept.append(line)
        used += n
    kept.reverse()
    dropped = len(clean) - len(kept)
    body = "\n".join(kept)
    if dropped and note_cut:
        body = f"… {dropped} earlier line{'s' if dropped != 1 else ''} not shown …\n" + body
    return fit(head + body + tail, budget)


def duration_words(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s} s"
    h, m = divmod(m, 60)
    return f"{h} h {m} min"


# Check runs -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CheckRunView:
    """What one check-run create/update says; ``as_fields()`` is the API body (minus name/sha)."""

    status: CheckStatus
    title: str
    summary: str
    text: str | None = None
    conclusion: Conclusion | None = None
    details_url: str | None = None

    def as_fields(self) -> dict[str, object]:
        output: dict[str, str] = {"title": fit(self.title, 1000), "summary": fit(self.summary)}
        if self.text:
            output["text"] = fit(self.text)
        body: dict[str, object] = {"status": self.status.value, "output": output}
        if self.conclusion is not None:
            body["conclusion"] = self.conclusion.value
        if self.details_url:
            body["details_url"] = self.details_url
        return body


_PHASE_WORDS = {
    Phase.WAITING: "Waiting for a build slot",
    Phase.FETCHING: "Fetching the repository",
    Phase.BUILDING: "Building the image",
    Phase.PUSHING: "Pushing the image to the registry",
}


def check_queued(details_url: str | None, position_note: str = "") -> CheckRunView:
    summary = "The build is queued and starts when a build slot is free."
    if position_note:
        summary += " " + position_note
    return CheckRunView(CheckStatus.QUEUED, "Queued", summary, details_url=details_url)


def check_in_progress(phase: Phase, log_lines: Sequence[str], details_url: str | None,
                      image: str | None = None) -> CheckRunView:
    words = _PHASE_WORDS.get(phase, phase.value.capitalize())
    summary = f"**{words}.**"
    if image:
        summary += f"\n\nImage: `{scrub(image)}`"
    if details_url:
        summary += f"\n\nFollow the build live on [its progress page]({details_url})."
    last = list(log_lines)[-LOG_LINES_IN_PROGRESS:]
    text = ("Last log lines:\n\n" + code_block(last)) if last else None
    return CheckRunView(CheckStatus.IN_PROGRESS, words, summary, text, details_url=details_url)


def check_success(*, image: str, launch: str, duration: float | None, from_cache: bool,
                  details_url: str | None) -> CheckRunView:
    if from_cache:
        title = "Ready (image already built)"
        how = "The image was already in the registry, so nothing was built."
    else:
        title = f"Ready (built in {duration_words(duration)})"
        how = f"Built in {duration_words(duration)}."
    summary = (
        f"The Binder environment for this commit is ready: **[launch it]({launch})**.\n\n"
        f"| | |\n|---|---|\n| Image | `{scrub(image)}` |\n"
        f"| Build time | {'none (from cache)' if from_cache else duration_words(duration)} |\n"
        f"| From cache | {'yes' if from_cache else 'no'} |\n\n{how}"
    )
    return CheckRunView(CheckStatus.COMPLETED, title, summary, conclusion=Conclusion.SUCCESS,
                        details_url=details_url)


def check_failure(*, reason: str | None, log_tail: Sequence[str], details_url: str | None) -> CheckRunView:
    sentence = one_sentence(reason)
    summary = fit(f"{inert(sentence, 1000)}\n\nThe end of the build log is below.", 4000)
    text = code_block(log_tail) if log_tail else "The build left no log lines."
    return CheckRunView(CheckStatus.COMPLETED, "Build failed", summary, text,
                        conclusion=Conclusion.FAILURE, details_url=details_url)


def check_cancelled(*, new_sha: str | None, new_commit_url: str | None, reason: str | None,
                    details_url: str | None) -> CheckRunView:
    if new_sha:
        link = f"[{new_sha[:7]}]({new_commit_url})" if new_commit_url else f"`{new_sha[:7]}`"
        title = "Superseded by a newer commit"
        summary = f"This build was cancelled because a newer commit, {link}, replaced this one."
    else:
        title = "Cancelled"
        summary = trusted(one_sentence(reason, "The build was cancelled."))
    return CheckRunView(CheckStatus.COMPLETED, title, summary, conclusion=Conclusion.CANCELLED,
                        details_url=details_url)


def check_replaced(newer_run_id: int) -> CheckRunView:
    """An older run of ours on a sha that a newer run reports on (left open by a crash)."""
    return CheckRunView(CheckStatus.COMPLETED, "Replaced by a newer Binder check run",
                        f"Check run {int(newer_run_id)} on this commit reports on its build.",
                        conclusion=Conclusion.NEUTRAL)


def check_skipped(reason: str, details_url: str | None = None) -> CheckRunView:
    return CheckRunView(CheckStatus.COMPLETED, "Skipped", trusted(reason),
                        conclusion=Conclusion.SKIPPED, details_url=details_url)


def check_config_error(*, key: str | None, problem: str, line: int | None, column: int | None,
                       path: str = ".github/binder.yml") -> CheckRunView:
    where = f" at line {line}, column {column}" if line is not None else ""
    if key is not None:
        title = f"Invalid {path}: {' '.join(scrub(key).split())[:100]}"
        lead = f"`{path}`{where}: the setting {code_span(key[:100])} {inert(problem, 500)}."
    else:
        title = f"Invalid {path}"
        lead = f"`{path}`{where}: {inert(problem, 500)}."
    summary = (f"{lead}\n\nNothing was built. Fix the file and push again; the accepted settings are "
               "`enabled`, `branches`, `pull_requests`, `forks`, `comment`, `urlpath` and `subdir`.")
    return CheckRunView(CheckStatus.COMPLETED, title, summary, conclusion=Conclusion.FAILURE)


# The PR comment -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CommentView:
    public_url: str
    owner: str
    repo: str
    sha: str
    state: CommentState
    branch: str | None = None  # a base-repository branch to follow; None for forks
    urlpath: str | None = None
    reason: str | None = None
    merged: bool = False


_STATE_LINES = {
    CommentState.BUILDING: "⏳ **Building**: the environment for this commit is being prebuilt.",
    CommentState.READY: "✅ **Ready**: the environment is built; the badge launches it without waiting.",
    CommentState.FAILED: "❌ **Failed**: {reason}",
    CommentState.SKIPPED: "⏭️ **Skipped**: {reason}",
    CommentState.CLOSED: "🔒 **Closed**: this pull request was {closed}; its last built commit still launches.",
}


def comment_body(v: CommentView) -> str:
    """The one PR comment; its first line is the marker we find it again by."""
    launch = launch_url(v.public_url, v.owner, v.repo, v.sha, v.urlpath)
    badge = badge_url(v.public_url, v.owner, v.repo, v.sha)
    if v.state is CommentState.SKIPPED:  # our own wording, which may hold Markdown
        reason = trusted(v.reason or "nothing was built for this commit.", REASON_LIMIT)
    else:
        reason = inert(one_sentence(v.reason, "the build did not finish."), REASON_LIMIT)
    state = _STATE_LINES[v.state].format(
        reason=reason,
        closed="merged" if v.merged else "closed",
    )
    lines = [
        COMMENT_MARKER,
        f"[![Binder]({badge})]({launch})",
        "",
        state,
        "",
        f"- [Launch this commit]({launch}) (`{v.sha[:7]}`)",
    ]
    if v.branch:
        follow = launch_url(v.public_url, v.owner, v.repo, v.branch, v.urlpath)
        lines.append(f"- [Launch the branch {code_span(v.branch[:200])}]({follow}), which follows its newest commit")
    lines += ["", f"<sub>Commit {v.sha} · updated by binder-prebuild on every push</sub>"]
    return "\n".join(lines) + "\n"
