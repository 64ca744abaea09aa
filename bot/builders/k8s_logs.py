"""Reading a build pod's log as plain data: lines cut to a bounded length, and where a reconnect resumes.

The follow loop itself (``KubernetesBuilder._follow_logs``) is I/O; these pieces are pure
or stream-shaped, and tested on their own.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from bot.builders.r2d_logs import LogReader
from bot.model import Phase

LOG_GIVE_UP = 8  # consecutive log attempts that bring nothing new
LOG_READ_TIMEOUT = 120.0  # a following log silent this long is reopened (half-open connections)
MAX_LOG_LINE = 64 * 1024  # longer log lines are cut here


async def cut_lines(content: Any) -> Any:
    """Lines of a stream, each cut at MAX_LOG_LINE (the rest of an over-long line is dropped)."""
    buf = b""
    skipping = False
    async for chunk in content.iter_any():
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_LOG_LINE:
                    if not skipping:
                        yield buf[:MAX_LOG_LINE] + b" [line cut]"
                    skipping, buf = True, b""
                break
            line, buf = buf[: nl + 1], buf[nl + 1:]
            if skipping:
                skipping = False
                continue
            yield line if len(line) <= MAX_LOG_LINE else line[:MAX_LOG_LINE] + b" [line cut]"
    if buf and not skipping:
        yield buf


@dataclasses.dataclass
class LogCursor:
    """Where the log was read up to: the node's timestamp of the last line, and our clock then."""

    last: tuple[str, int] | None = None
    read_at: float | None = None  # our monotonic clock when that line arrived
    lines: int = 0

    def since(self, now: float) -> int | None:
        if self.read_at is None:
            return None
        return max(1, int(now - self.read_at) + 2)  # our clock only: the node's may be off

    def feed(self, raw: bytes, now: float, reader: LogReader) -> tuple[Phase, str] | None:
        stamp, text = _split_timestamp(raw)
        if stamp is not None:
            if self.last is not None and stamp <= self.last:
                return None  # already read before the reconnect
            self.last, self.read_at = stamp, now
        self.lines += 1
        return reader.feed(text)


def _split_timestamp(raw: bytes) -> tuple[tuple[str, int] | None, str]:
    """``2024-01-01T00:00:00.123456789Z text`` -> ((seconds part, nanoseconds), text)."""
    line = raw.decode("utf-8", "replace").rstrip("\n")
    stamp, sep, text = line.partition(" ")
    if not sep or not stamp.endswith("Z") or "T" not in stamp:
        return None, line
    base, _, frac = stamp[:-1].partition(".")
    nanos = int((frac + "000000000")[:9]) if frac.isdigit() else 0
    return (base, nanos), text
