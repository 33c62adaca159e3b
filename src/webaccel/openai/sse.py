"""Server-sent events in OpenAI's framing: ``data: <json>\n\n`` per chunk, ending with
``data: [DONE]``; the response cancels its producer as soon as the client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.types import Receive, Scope, Send

DONE = b"data: [DONE]\n\n"


class EventStream:
    """An SSE response that stops its producer as soon as the client goes away.

    Starlette's StreamingResponse only notices a disconnect at its next write
    and then abandons (does not close) the iterator; here a listener task
    watches ``http.disconnect`` and cancels the producer at once, and the
    iterator is always closed, which cancels the generation in the page.
    """

    def __init__(self, events: AsyncIterator[bytes], on_disconnect: Callable[[], None]) -> None:
        self.events = events
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )

        async def pump() -> None:
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = asyncio.ensure_future(pump())
        listener = asyncio.ensure_future(listen())
        try:
            await asyncio.wait({producer, listener}, return_when=asyncio.FIRST_COMPLETED)
            if not producer.done():
                self.on_disconnect()
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await producer
        finally:
            listener.cancel()
            producer.cancel()
            with contextlib.suppress(BaseException):
                await self.events.aclose()  # type: ignore[attr-defined]


def sse(obj: Any) -> bytes:
    """One event (a JSON line; JSON escapes every newline, so one ``data:`` field)."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
