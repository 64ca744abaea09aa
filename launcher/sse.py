"""Server-sent events on the wire: ``id:`` + ``data: {json}`` blocks, ``:keepalive`` comments."""
from __future__ import annotations

import json
from typing import Any

KEEPALIVE = b":keepalive\n\n"
RETRY = b"retry: 2000\n\n"  # how long EventSource waits before reconnecting (ms)


def format_event(data: dict[str, Any], event_id: int | str | None = None) -> bytes:
    """One event; JSON never contains a raw newline, so one ``data:`` line suffices."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def parse_last_event_id(value: str | None) -> int:
    """The ``Last-Event-ID`` a reconnecting EventSource sends (0 when absent or not ours)."""
    try:
        n = int((value or "").strip())
    except ValueError:
        return 0
    return n if n > 0 else 0
