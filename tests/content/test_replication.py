"""Replication to another webaccel server, availability monitoring, on-demand replication,
and the IPFS Cluster adapter against a local stand-in that records its calls."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from webaccel.content import cid as cidmod
from webaccel.content.add import add_path
from webaccel.content.cluster import ClusterClient
from webaccel.content.config import ContentConfig
from webaccel.content.errors import ReplicationError
from webaccel.content.gateway import Gateway, create_gateway_app
from webaccel.content.replication import Replicator
from webaccel.content.store import BlockStore
from webaccel.content.testing import serve_in_thread

from .conftest import write_random


class ClusterStandIn:
    """Records IPFS Cluster REST calls (POST/DELETE/GET /pins/{cid}, GET /id)."""

    def __init__(self, token: str | None = None) -> None:
        self.calls: list[tuple[str, str, dict[str, str], str | None]] = []
        self.token = token
        self.pins: dict[str, dict[str, object]] = {}

    def app(self) -> Starlette:
        async def pins(request: Request) -> JSONResponse:
            auth = request.headers.get("authorization")
            self.calls.append((request.method, request.url.path, dict(request.query_params), auth))
            if self.token and auth != f"Bearer {self.token}":
                return JSONResponse({"code": 401, "message": "unauthorized"}, status_code=401)
            cid = request.path_params["cid"]
            if request.method == "POST":
                q = request.query_params
                self.pins[cid] = {"cid": cid, "name": q.get("name", ""),
                                  "replication_factor_min": int(q["replication-min"]),
                                  "replication_factor_max": int(q["replication-max"])}
                return JSONResponse(self.pins[cid])
            if request.method == "DELETE":
                return JSONResponse(self.pins.pop(cid, {"cid": cid}))
            if cid not in self.pins:
                return JSONResponse({"code": 404, "message": "not pinned"}, status_code=404)
            return JSONResponse({"cid": cid, "peer_map": {"peer1": {"status": "pinned"}}})

        async def ident(request: Request) -> JSONResponse:
            self.calls.append((request.method, request.url.path, {}, None))
            return JSONResponse({"id": "12D3KooWstandin", "version": "1.1.2"})

        return Starlette(routes=[Route("/pins/{cid}", pins, methods=["GET", "POST", "DELETE"]),
                                 Route("/id", ident)])


async def test_cluster_adapter_calls(tmp_path: Path) -> None:
    standin = ClusterStandIn(token="jwt")
    srv = serve_in_thread(standin.app())
    try:
        cid = cidmod.to_str(cidmod.make(b"w", cidmod.RAW, 1))
        c = ClusterClient(srv.url, token="jwt")
        pin = await c.pin(cid, replication_min=2, replication_max=3, name="minilm")
        assert pin["replication_factor_min"] == 2
        assert (await c.status(cid))["peer_map"]["peer1"]["status"] == "pinned"
        assert (await c.id())["id"].startswith("12D3")
        await c.unpin(cid)
        with pytest.raises(ReplicationError) as ei:
            await c.status(cid)
        assert ei.value.details["status"] == 404
        await c.aclose()
        bad = ClusterClient(srv.url, token="wrong")
        with pytest.raises(ReplicationError):
            await bad.pin(cid)
        await bad.aclose()
    finally:
        srv.stop()
    method, path, params, auth = standin.calls[0]
    assert (method, path, auth) == ("POST", f"/pins/{cid}", "Bearer jwt")
    assert params == {"replication-min": "2", "replication-max": "3", "name": "minilm"}
    assert [c[0] for c in standin.calls[:4]] == ["POST", "GET", "GET", "DELETE"]


async def test_replicate_push_monitor_and_cluster(tmp_path: Path) -> None:
    local = BlockStore(tmp_path / "local")
    f = write_random(tmp_path / "m.onnx", 900_000, 5)
    root = add_path(f, "kubo-v1", store=local, pin=True)
    remote_a = BlockStore(tmp_path / "a")
    remote_b = BlockStore(tmp_path / "b")
    a = serve_in_thread(create_gateway_app(remote_a, upload_token="tok-a"))
    b = serve_in_thread(create_gateway_app(remote_b, upload_token="tok-b"))
    standin = ClusterStandIn()
    cl = serve_in_thread(standin.app())
    try:
        cfg = ContentConfig(replicate_to=[{"url": a.url, "token": "tok-a"},
                                          {"url": b.url, "token": "wrong"}],
                            replication_min=2, replication_max=2, cluster={"url": cl.url})
        rep = Replicator(local, cfg, status_path=tmp_path / "status.json")
        before = await rep.monitor()
        assert before[0].available_on == [] and not before[0].ok
        report = await rep.replicate(root, name="minilm")
        assert report["pushed"] == [a.url] and b.url in report["failed"]
        assert report["cluster"]["replication_factor_min"] == 2
        assert remote_a.is_pinned(root) and not remote_b.has(root)
        assert b"".join(remote_a.read_file(root)) == f.read_bytes()
        after = await rep.monitor(deep=True)
        assert after[0].available_on == [a.url] and not after[0].ok  # 1 of min 2
        assert rep.last_status()[0]["available_on"] == [a.url]
        again = await rep.replicate(root)
        assert again["already"] == [a.url]
        await rep.aclose()
    finally:
        for s in (a, b, cl):
            s.stop()
    # each replicate() (re)pins in the cluster; Cluster treats a repeated pin as an update
    assert [c[1] for c in standin.calls if c[0] == "POST"] == [f"/pins/{root}"] * 2


async def test_hot_root_is_replicated_on_demand(tmp_path: Path) -> None:
    local = BlockStore(tmp_path / "local")
    root = add_path(write_random(tmp_path / "m", 300_000, 6), "kubo-v1", store=local)
    remote = BlockStore(tmp_path / "r")
    r_srv = serve_in_thread(create_gateway_app(remote, upload_token="t"))
    try:
        cfg = ContentConfig(replicate_to=[{"url": r_srv.url, "token": "t"}], hot_fetches=3)
        rep = Replicator(local, cfg, status_path=tmp_path / "s.json")
        gw = Gateway(local, on_serve=rep.note_fetch)
        import httpx

        from webaccel.content.gateway import gateway_routes

        app = Starlette(routes=gateway_routes(local, gateway=gw))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
            for _ in range(2):
                assert (await c.get(f"/ipfs/{root}")).status_code == 200
            assert not rep.tasks and not remote.has(root)
            assert (await c.get(f"/ipfs/{root}")).status_code == 200
            await asyncio.gather(*rep.tasks)
        assert remote.is_pinned(root) and local.is_pinned(root)
        await rep.aclose()
    finally:
        r_srv.stop()
