"""repo2docker's ``--json-logs`` output, read as phases and log lines (pure).

repo2docker's JSON formatter (python-json-logger) writes one object per line,
``{"message": "...", "phase": "fetching"}``; ``phase`` is one of fetching,
building, pushing, running or failed, and is absent on lines logged without it
(e.g. "Picked Git content provider."). Since repo2docker 2025 the push happens
inside ``docker buildx build --push``, so there is no separate "pushing" line
any more: buildx's own "pushing layers" / "pushing manifest" lines (logged in
the building phase) mark it instead, and so does our PodmanEngine's
``Pushing image <tag>`` (it runs ``podman push`` after ``podman build``).
Anything that is not JSON (an engine or git message on stderr) is passed
through as a plain line.

Both builders (Kubernetes pods and the local engine) use these.
"""
from __future__ import annotations

import collections
import json
import re
from collections.abc import Iterable

from bot.model import Phase

_R2D_PHASES = {
    "fetching": Phase.FETCHING,
    "building": Phase.BUILDING,
    "pushing": Phase.PUSHING,
    "failed": Phase.FAILED,
    "failure": Phase.FAILED,
}
_PUSH_LINE = re.compile(r"\bpushing (layers|manifest)\b|^Successfully pushed\b|^Pushing image \S", re.IGNORECASE)
_ORDER = {Phase.WAITING: 0, Phase.FETCHING: 1, Phase.BUILDING: 2, Phase.PUSHING: 3}
MAX_LINE = 4000


def parse_line(raw: str | bytes) -> tuple[Phase | None, str]:
    """One output line -> (phase it announces, or None; the human-readable message).

    ``running`` (repo2docker running the image) maps to None: builds use --no-run.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    line = raw.rstrip("\r\n")
    text = line.strip()
    phase: Phase | None = None
    message = line
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and "message" in data:
            message = str(data.get("message") or "")
            phase = _R2D_PHASES.get(str(data.get("phase") or "").lower())
    message = message.rstrip("\r\n").replace("\r", "")
    if len(message) > MAX_LINE:
        message = message[:MAX_LINE] + " …"
    if phase in (None, Phase.BUILDING) and _PUSH_LINE.search(message):
        phase = Phase.PUSHING
    return phase, message


def advance(current: Phase, new: Phase | None) -> Phase:
    """Phases only move forward (fetching < building < pushing); FAILED is not a phase change.

    A failure line is kept as the reason by the caller; the outcome, not a log
    line, ends a build.
    """
    if new is None or new not in _ORDER:
        return current
    return new if _ORDER[new] > _ORDER.get(current, 0) else current


def redact(message: str, secrets: Iterable[str | None]) -> str:
    """Replace any secret that made it into a line (it should never, but logs are public)."""
    for s in secrets:
        if s and len(s) >= 4 and s in message:
            message = message.replace(s, "***")
    return message


class LogTail:
    """The last ``maxlen`` log lines of one build (bounded, whatever the build prints)."""

    __slots__ = ("_lines",)

    def __init__(self, maxlen: int = 200) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=maxlen)

    def append(self, line: str) -> None:
        if line:
            self._lines.append(line)

    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def __len__(self) -> int:
        return len(self._lines)


class LogReader:
    """Stateful reading of one build's lines: current phase, tail, last failure message."""

    def __init__(self, tail_lines: int = 200, secrets: Iterable[str | None] = ()) -> None:
        self.phase = Phase.FETCHING
        self.tail = LogTail(tail_lines)
        self.failure: str | None = None
        self._secrets = tuple(s for s in secrets if s)

    def feed(self, raw: str | bytes) -> tuple[Phase, str] | None:
        """-> (phase to report, message) for a non-empty line, else None."""
        new, message = parse_line(raw)
        if self._secrets:
            message = redact(message, self._secrets)
        if not message.strip() and new is None:
            return None
        if new is Phase.FAILED and message.strip():
            self.failure = message.strip()
        self.phase = advance(self.phase, new)
        self.tail.append(message)
        return self.phase, message
