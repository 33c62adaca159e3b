"""Server-sent events in OpenAI's framing, through sse-starlette.

OpenAI's streams are ``data: <json>\\n\\n`` per chunk, ending with ``data: [DONE]``;
sse-starlette's :class:`~sse_starlette.EventSourceResponse` does the response
(headers, framing, watching for ``http.disconnect`` and cancelling the producer
as soon as the client goes away) and :class:`~sse_starlette.JSONServerSentEvent`
the event (compact JSON, which escapes every newline, so one ``data:`` field).
``sep="\\n"`` (sse-starlette defaults to CRLF) and no keep-alive comments keep the
bytes those of OpenAI's API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from sse_starlette import EventSourceResponse, JSONServerSentEvent, ServerSentEvent

SEP = "\n"
DONE = ServerSentEvent(data="[DONE]", sep=SEP).encode()


def sse(obj: Any) -> bytes:
    """One event: ``data: <compact JSON>\\n\\n``."""
    return JSONServerSentEvent(obj, sep=SEP).encode()


def event_stream(
    events: AsyncIterator[bytes],
    on_disconnect: Callable[[], None],
    close: Callable[[], Any],
) -> EventSourceResponse:
    """An SSE response over ``events``; when the client leaves, sse-starlette cancels
    the producer and ``close()`` (awaited, shielded from that cancellation) stops
    the generation in the page."""

    async def produce() -> AsyncIterator[bytes]:
        finished = False
        try:
            async for chunk in events:
                yield chunk
            finished = True
        finally:
            if not finished:
                on_disconnect()
            with anyio.CancelScope(shield=True):
                await close()

    return EventSourceResponse(
        produce(),
        sep=SEP,
        ping=0,  # no ": ping" comments: OpenAI's streams have none
        media_type="text/event-stream; charset=utf-8",
        headers={"cache-control": "no-cache"},
    )
