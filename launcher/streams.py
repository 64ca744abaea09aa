"""Writing a launch's events to a client: the page's stream and BinderHub's API share this.

The wire format is BinderHub's: ``data: {json}`` blocks with ``phase`` and ``message``,
``:keepalive`` comments while nothing happens, and the stream ends after ``ready``,
``failed`` or ``cancelled``. A refusal is a ``failed`` event on a 200 stream (an
EventSource cannot read the body of an error status), carrying ``status_code`` as
BinderHub's ``send_error`` does.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from launcher import sse
from launcher.launch import TERMINAL, Launch

HEADERS_WAIT = 1.0  # seconds the headers may wait for the first events (then they go with a keepalive)
STREAM_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
                  "X-Accel-Buffering": "no"}


def failed_event(message: str, status: int, retry_after: int | None = None, limit: str | None = None) -> bytes:
    """The single event of a refused request (pure); ``limit`` and ``retryAfter`` as a refused launch has them."""
    data: dict[str, object] = {"phase": "failed", "message": message, "status_code": status}
    if limit:
        data["limit"] = limit
    if retry_after:
        data["retryAfter"] = retry_after
    return sse.format_event(data)


def refused(message: str, status: int, retry_after: int | None = None, limit: str | None = None
            ) -> web.Response:
    """A whole (short) stream that says why nothing was started."""
    headers = {"Cache-Control": "no-cache"}
    if retry_after:
        headers["Retry-After"] = str(retry_after)
    return web.Response(body=sse.RETRY + failed_event(message, status, retry_after, limit), status=200,
                        content_type="text/event-stream", headers=headers)


async def follow(request: web.Request, launch: Launch, after: int, keepalive: float,
                 event_id: Callable[[int], str] = str) -> web.StreamResponse:
    """Replay ``launch``'s events after ``after``, then follow it live to its terminal event.

    The headers go out with the first events (or a keepalive after ``HEADERS_WAIT``), so the
    launch's own first steps run before this stream writes anything. What is there at once
    goes out in one write (a prebuilt image's launch emits two events together, then
    ``ready``, which goes out with the end of the stream): each write is a send and a
    wake-up of the client.
    """
    resp = web.StreamResponse(headers=STREAM_HEADERS)
    head = sse.RETRY  # goes out with the first batch
    with contextlib.suppress(ConnectionError, asyncio.CancelledError):
        async with contextlib.aclosing(launch.follow(after, keepalive, HEADERS_WAIT)) as batches:
            async for batch in batches:
                data = head + (b"".join(sse.format_event(msg, event_id(seq)) for seq, msg in batch)
                               if batch else sse.KEEPALIVE)
                head = b""
                if not resp.prepared:
                    await resp.prepare(request)
                if batch and batch[-1][1]["phase"] in TERMINAL:
                    await resp.write_eof(data)
                    return resp
                await resp.write(data)
        if not resp.prepared:
            await resp.prepare(request)
        await resp.write_eof(head)
    return resp
