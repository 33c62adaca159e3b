"""SSE framing (byte level) and disconnect -> close, without a browser."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from webaccel.openai.sse import DONE, event_stream, sse


def test_events_are_openai_bytes():
    obj = {"id": "chatcmpl-1", "choices": [{"delta": {"content": "é\n\"x\""}}], "usage": None}
    want = b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    assert sse(obj) == want
    assert b"\n" not in sse(obj)[:-2]  # one data: line, whatever the text holds
    assert DONE == b"data: [DONE]\n\n"


async def _serve(response: Any, disconnect_after: int) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    bodies = asyncio.Event()

    async def receive() -> dict[str, Any]:
        while sum(1 for m in sent if m.get("body")) < disconnect_after:
            await asyncio.sleep(0.01)
        bodies.set()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"},
             "http_version": "1.1", "method": "POST", "path": "/", "headers": []}
    await asyncio.wait_for(response(scope, receive, send), 10)
    return sent


async def test_whole_stream_bytes_and_headers():
    closed: list[bool] = []

    async def events():
        yield sse({"n": 1})
        yield sse({"n": 2})
        yield DONE

    async def close() -> None:
        closed.append(True)

    sent = await _serve(event_stream(events(), lambda: None, close), disconnect_after=99)
    start = sent[0]
    headers = dict(start["headers"])
    assert start["status"] == 200
    assert headers[b"content-type"].startswith(b"text/event-stream")
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert body == b'data: {"n":1}\n\ndata: {"n":2}\n\ndata: [DONE]\n\n'  # no pings, LF only
    assert closed == [True]


async def test_a_client_that_leaves_cancels_the_producer_and_closes_the_generation():
    closed: list[str] = []
    left: list[bool] = []

    async def events():
        yield sse({"n": 1})
        await asyncio.sleep(3600)  # a generation that would go on
        yield sse({"n": 2})

    async def close() -> None:
        await asyncio.sleep(0.05)  # awaits inside the cancelled scope still complete
        closed.append("closed")

    sent = await _serve(event_stream(events(), lambda: left.append(True), close),
                        disconnect_after=1)
    assert b"".join(m.get("body", b"") for m in sent[1:]) == b'data: {"n":1}\n\n'
    assert closed == ["closed"] and left == [True]
