"""Launch credentials, session secrets and one socket per worker id, on a real loopback server."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from webaccel.bridge import frames
from webaccel.bridge.credentials import SECRET_SUBPROTOCOL_PREFIX, SUBPROTOCOL
from webaccel.bridge.frames import Control
from webaccel.server import WebAccelServer


@pytest.fixture
async def server(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model bytes")
    async with WebAccelServer() as srv:
        srv.model_files.add("m/fp32/model.onnx", model)
        yield srv


def hello(worker_id: str) -> str:
    return frames.encode(
        Control(id="h", type="hello", data={"worker_id": worker_id, "capabilities": {}})
    )


def launch_of(url: str) -> tuple[str, str]:
    query = parse_qs(urlsplit(url).query)
    return query["worker"][0], query["launch"][0]


async def redeem(server: WebAccelServer, worker: str, launch: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{server.url}/bridge/session",
            json={"worker": worker, "launch": launch},
            headers={"origin": server.url},
        )


def ws_url(server: WebAccelServer, worker: str, token: str | None = None) -> str:
    query = f"token={token}&" if token else ""
    return f"ws://127.0.0.1:{server.port}/ws?{query}worker={worker}"


def with_secret(secret: str) -> list[str]:
    return [SUBPROTOCOL, SECRET_SUBPROTOCOL_PREFIX + secret]


async def test_page_url_carries_a_launch_credential_not_the_master_token(server):
    url = server.worker_page_url("w1", threads=1)
    assert server.token not in url
    worker, launch = launch_of(url)
    assert worker == "w1" and len(launch) >= 40
    assert launch != server.worker_page_url("w1") and server.credentials.bound("w1")


async def test_credential_redeems_once_and_the_secret_opens_the_bridge(server):
    worker, launch = launch_of(server.worker_page_url("w1"))
    first = await redeem(server, worker, launch)
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    secret = first.json()["secret"]
    again = await redeem(server, worker, launch)
    assert again.status_code == 403
    assert again.json()["error"]["code"] == "FORBIDDEN"  # 403 in the one error table
    assert "already redeemed" in again.json()["error"]["message"]
    async with websockets.connect(
        ws_url(server, worker), subprotocols=with_secret(secret)
    ) as ws:
        assert ws.subprotocol == SUBPROTOCOL
        await ws.send(hello(worker))
        assert (await server.hub.wait_for(worker, 5)).open
    # The secret also opens model bytes, as a Bearer header.
    async with httpx.AsyncClient() as client:
        model = await client.get(
            f"{server.url}/models/m/fp32/model.onnx", headers={"authorization": f"Bearer {secret}"}
        )
        assert model.status_code == 200 and model.content == b"model bytes"
        wrong = await client.get(
            f"{server.url}/models/m/fp32/model.onnx", headers={"authorization": f"Bearer {launch}"}
        )
        assert wrong.status_code == 401


async def test_expired_credential_is_refused(server):
    server.credentials.launch_ttl_s = 0.0
    worker, launch = launch_of(server.worker_page_url("w1"))
    resp = await redeem(server, worker, launch)
    assert resp.status_code == 403 and "expired" in resp.json()["error"]["message"]


async def test_credential_of_another_worker_and_foreign_origin_are_refused(server):
    _, launch = launch_of(server.worker_page_url("w1"))
    assert (await redeem(server, "w2", launch)).status_code == 403
    async with httpx.AsyncClient() as client:
        foreign = await client.post(
            f"{server.url}/bridge/session",
            json={"worker": "w1", "launch": launch},
            headers={"origin": "http://evil.example"},
        )
    assert foreign.status_code == 403
    assert (await redeem(server, "w1", launch)).status_code == 200  # neither consumed it


async def refused(url: str, **kwargs) -> int:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url, **kwargs):
            pass
    return info.value.response.status_code


async def test_master_token_cannot_take_a_launched_worker_id(server):
    worker, launch = launch_of(server.worker_page_url("w1"))
    # Before the page came, while it is live, and after it dropped: never.
    assert await refused(ws_url(server, worker, server.token)) == 403
    secret = (await redeem(server, worker, launch)).json()["secret"]
    async with websockets.connect(ws_url(server, worker), subprotocols=with_secret(secret)) as ws:
        await ws.send(hello(worker))
        await server.hub.wait_for(worker, 5)
        assert await refused(ws_url(server, worker, server.token)) == 403
    assert await refused(ws_url(server, worker, server.token)) == 403
    # Another page's secret does not open this id either.
    _, launch2 = launch_of(server.worker_page_url("w2"))
    secret2 = (await redeem(server, "w2", launch2)).json()["secret"]
    assert await refused(ws_url(server, worker), subprotocols=with_secret(secret2)) == 403


async def test_second_connection_for_a_live_worker_id_is_refused(server):
    async with websockets.connect(ws_url(server, "node-1", server.token)) as ws:
        await ws.send(hello("node-1"))
        first = await server.hub.wait_for("node-1", 5)
        assert await refused(ws_url(server, "node-1", server.token)) == 403
        assert first.open and server.hub.connections["node-1"] is first
    # Once the first socket closed, the id is free again.
    for _ in range(50):
        if not server.hub.live("node-1"):
            break
        await asyncio.sleep(0.05)
    async with websockets.connect(ws_url(server, "node-1", server.token)) as ws:
        await ws.send(hello("node-1"))
        assert (await server.hub.wait_for("node-1", 5)).open


async def test_same_page_reconnect_replaces_its_half_open_socket(server):
    worker, launch = launch_of(server.worker_page_url("w1"))
    secret = (await redeem(server, worker, launch)).json()["secret"]
    old = await websockets.connect(ws_url(server, worker), subprotocols=with_secret(secret))
    await old.send(hello(worker))
    first = await server.hub.wait_for(worker, 5)
    # The page lost its socket without the server noticing, and reconnects.
    async with websockets.connect(ws_url(server, worker), subprotocols=with_secret(secret)) as ws:
        await ws.send(hello(worker))
        for _ in range(50):
            conn = server.hub.connections.get(worker)
            if conn is not None and conn is not first:
                break
            await asyncio.sleep(0.05)
        assert conn is not first and conn.open and not first.open
        await asyncio.wait_for(old.wait_closed(), 5)
        assert old.close_code == 4001
        # The new socket carries the worker's traffic.
        await ws.send(json.dumps({"id": "phb1", "type": "heartbeat", "data": {}}))


async def test_forgotten_worker_secret_opens_nothing(server):
    worker, launch = launch_of(server.worker_page_url("w1"))
    secret = (await redeem(server, worker, launch)).json()["secret"]
    server.credentials.forget(worker)
    assert await refused(ws_url(server, worker), subprotocols=with_secret(secret)) == 403
