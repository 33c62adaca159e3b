"""The asyncio driver: a malformed frame is answered with BAD_REQUEST and the socket stays."""

from __future__ import annotations

import json
import struct

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from webaccel.bridge.endpoint import WorkerHub


def _binary(header: object) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head


BAD = {
    "absurd shape": _binary(
        {
            "id": "a",
            "type": "result",
            "tensors": [
                {"name": "x", "dtype": "float32", "shape": [0, 2**100], "offset": 0, "length": 0}
            ],
        }
    ),
    "binary hello": _binary(
        {"id": "h", "type": "hello", "tensors": [], "data": {"worker_id": "w", "capabilities": {}}}
    ),
    "type is a list": '{"id": "a", "type": []}',
    "not json": "{nope",
    "random bytes": b"\xff\x00\x00\x00\x01",
}


def _app(hub: WorkerHub) -> Starlette:
    async def ws_route(ws: WebSocket) -> None:
        await ws.accept()
        await hub.serve(ws, "w1")

    return Starlette(routes=[WebSocketRoute("/ws", ws_route)])


@pytest.mark.parametrize("message", BAD.values(), ids=BAD.keys())
def test_malformed_frame_is_answered_and_the_socket_keeps_serving(message):
    hub = WorkerHub()
    with TestClient(_app(hub)) as client, client.websocket_connect("/ws") as ws:
        for _ in range(2):  # twice: the first answer did not end the connection
            if isinstance(message, bytes):
                ws.send_bytes(message)
            else:
                ws.send_text(message)
            answer = json.loads(ws.receive_text())
            assert answer["type"] == "error"
            assert answer["data"]["code"] == "BAD_REQUEST" and answer["data"]["message"]
        hello = {
            "id": "h",
            "type": "hello",
            "data": {"worker_id": "w1", "capabilities": {"wasm": {}}},
            "options": {},
        }
        ws.send_text(json.dumps(hello))
        # A heartbeat round trip proves the hello was processed on the same socket.
        ws.send_text(json.dumps({"id": "phb1", "type": "heartbeat", "data": {}}))
        ws.send_text("{still bad")
        assert json.loads(ws.receive_text())["data"]["code"] == "BAD_REQUEST"
        conn = hub.connections["w1"]
        assert conn.open and conn.protocol_errors == 3
        assert conn.capabilities == {"wasm": {}}
