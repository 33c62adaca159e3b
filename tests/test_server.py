"""The server on a real loopback socket: auth, origin, malformed frames, isolation headers."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from webaccel.bridge import frames
from webaccel.bridge.frames import Control, TensorFrame
from webaccel.server import WebAccelServer


@pytest.fixture
async def server(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not really onnx")
    async with WebAccelServer() as srv:
        srv.model_files.add("m/fp32/model.onnx", model)
        yield srv


def ws_url(srv, token=None, worker="w1"):
    token = srv.token if token is None else token
    return f"ws://127.0.0.1:{srv.port}/ws?token={token}&worker={worker}"


async def test_socket_without_or_with_wrong_token_is_refused(server):
    for url in (f"ws://127.0.0.1:{server.port}/ws?worker=w", ws_url(server, token="wrong")):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(url):
                pass
        assert info.value.response.status_code == 403


async def test_socket_from_foreign_origin_is_refused(server):
    with pytest.raises(InvalidStatus):
        async with websockets.connect(ws_url(server), origin="http://evil.example"):
            pass
    async with websockets.connect(
        ws_url(server), origin=server.url
    ) as ws:  # our own origin is fine
        await ws.send(
            frames.encode(
                Control(id="h", type="hello", data={"worker_id": "w1", "capabilities": {}})
            )
        )


async def test_malformed_frames_get_bad_request_and_server_stays_up(server):
    hello = frames.encode(
        Control(id="h", type="hello", data={"worker_id": "w1", "capabilities": {}})
    )
    junk = [
        "this is not json",
        json.dumps({"id": "x", "type": "explode"}),
        b"\x00\x00\x00\xffgarbage",
        b"\x00\x00\x00\x05{bad}",
        b"",
        frames.encode(TensorFrame(id="z", type="run", tensors={"x": np.ones(3, np.float32)}))[:-4],
    ]
    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(hello)
        for message in junk:
            await ws.send(message)
            reply = json.loads(await ws.recv())
            assert reply["type"] == "error" and reply["data"]["code"] == "BAD_REQUEST"
        conn = await server.hub.wait_for("w1", 5)
        assert conn.protocol_errors == len(junk) and conn.open
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{server.url}/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    async with websockets.connect(ws_url(server, worker="w2")) as ws:  # and still accepts workers
        await ws.send(hello.replace('"w1"', '"w2"'))
        assert (await server.hub.wait_for("w2", 5)).open


async def test_worker_page_is_cross_origin_isolated_and_models_need_the_token(server):
    async with httpx.AsyncClient(base_url=server.url) as client:
        page = await client.get("/worker/worker.html")
        assert page.status_code == 200
        assert page.headers["cross-origin-opener-policy"] == "same-origin"
        assert page.headers["cross-origin-embedder-policy"] == "require-corp"
        assert page.headers["cache-control"] == "no-cache"  # persistent profiles revalidate JS
        module = await client.get("/worker/runtime.mjs")
        assert module.headers["content-type"].startswith("text/javascript")
        wasm = await client.head("/worker/vendor/ort/ort-wasm-simd-threaded.wasm")
        assert wasm.headers["content-type"] == "application/wasm"
        assert (await client.get("/models/m/fp32/model.onnx")).status_code == 401
        ok = await client.get(
            "/models/m/fp32/model.onnx", headers={"authorization": f"Bearer {server.token}"}
        )
        assert ok.status_code == 200 and ok.content == b"not really onnx"
        missing = await client.get("/models/nope", params={"token": server.token})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "MODEL_NOT_FOUND"


async def test_reply_for_disconnected_page_fails_with_worker_lost(server):
    from webaccel.errors import WorkerLostError

    async with websockets.connect(ws_url(server)) as ws:
        await ws.send(
            frames.encode(
                Control(id="h", type="hello", data={"worker_id": "w1", "capabilities": {}})
            )
        )
        conn = await server.hub.wait_for("w1", 5)
        import asyncio

        pending = asyncio.create_task(conn.request("load_model", data={"key": "k", "url": "/u"}))
        await ws.recv()  # the page got the request ...
    with pytest.raises(WorkerLostError):  # ... and went away without answering
        await asyncio.wait_for(pending, 5)


async def test_bridge_declines_per_message_deflate(server):
    # Deflating binary tensors cost 32 ms per 600 KB image (see server.py); a
    # client offering the extension (as browsers do) must not get it.
    async with websockets.connect(ws_url(server), compression="deflate") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []


async def test_connections_are_tcp_nodelay(server):
    """Found by schemathesis taking 50 ms a request: the listening socket had proto 0,
    so asyncio left Nagle on for accepted connections, and a response written as head
    then body waited for the client's delayed ACK (+40 ms on every kept-alive request,
    the OpenAI client's and the bridge's case)."""
    import socket
    import time

    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.get("/healthz")).status_code == 200
        conns = list(server._server.server_state.connections)
        assert conns
        for conn in conns:
            sock = conn.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        took = []
        for _ in range(9):  # kept alive: one connection
            start = time.perf_counter()
            await client.get("/healthz")
            took.append(time.perf_counter() - start)
    took.sort()
    assert took[4] < 0.035, took  # the median; a delayed-ACK stall alone is 40 ms


async def test_one_health_check_at_healthz_and_health(server):
    async with httpx.AsyncClient(base_url=server.url) as client:
        a, b = await client.get("/healthz"), await client.get("/health")
        assert a.status_code == b.status_code == 200
        assert a.json() == b.json() == {"status": "ok", "workers": 0}
        server.add_health_check(lambda: {"disk": "full", "problem": "the disk is full"})
        a, b = await client.get("/healthz"), await client.get("/health")
    assert a.status_code == b.status_code == 503
    assert a.json()["status"] == "degraded" and a.json()["problem"] == "the disk is full"
    assert a.json()["disk"] == "full"


async def test_bridge_endpoints_answer_errors_from_the_table(server):
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.get("/models/m/fp32/model.onnx")
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
        assert r.headers["www-authenticate"] == "Bearer"
        assert "Bearer" in r.json()["error"]["message"]
        r = await client.get("/no/such/path")
        assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"


async def test_an_escaped_exception_is_a_500_that_names_nothing_of_it():
    from starlette.routing import Route

    async def broken(request):
        raise RuntimeError("/etc/shadow: permission denied")

    server = WebAccelServer(extra_routes=[Route("/broken", broken)])
    async with server as srv, httpx.AsyncClient(base_url=srv.url) as client:
        r = await client.get("/broken")
    assert r.status_code == 500 and r.json()["error"]["code"] == "INTERNAL"
    assert "shadow" not in r.text
