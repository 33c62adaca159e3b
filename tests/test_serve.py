"""``webaccel serve`` end to end: one port, every surface, a real browser worker."""
from __future__ import annotations

import asyncio
import hashlib

import httpx
import numpy as np
import pytest

from webaccel.serve import serve_forever

pytestmark = pytest.mark.browser


@pytest.fixture
async def served(tmp_path, monkeypatch):
    monkeypatch.setenv("WEBACCEL_METRICS_DB", str(tmp_path / "metrics.duckdb"))
    ready: asyncio.Future = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(serve_forever("127.0.0.1", 0, 1, api_key="sk-test", ready=ready,
                                             stop=stop))
    engine = await asyncio.wait_for(ready, 120)
    yield engine
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_one_port_serves_api_gateway_metrics_and_dashboard(served, tmp_path):
    engine = served
    auth = {"authorization": "Bearer sk-test"}
    async with httpx.AsyncClient(base_url=engine.server.url, timeout=120) as client:
        health = (await client.get("/healthz")).json()
        assert health["status"] == "ok" and health["metrics_writer_alive"]

        assert (await client.post("/v1/embeddings", json={"input": "x"})).status_code == 401
        body = {"model": "minilm", "input": ["a guitar on stage", "music with a guitar"]}
        resp = await client.post("/v1/embeddings", json=body, headers=auth)
        assert resp.status_code == 200, resp.text
        vectors = np.array([d["embedding"] for d in resp.json()["data"]])
        direct = await engine.accelerate("minilm", body["input"])
        assert np.allclose(vectors, direct["embeddings"], atol=1e-5)

        metrics = (await client.get("/metrics")).text
        assert 'webaccel_requests_total{backend="wasm",model="minilm",outcome="ok"}' in metrics
        # The dashboard's data (worker ids, recent requests) needs the key; /metrics
        # answers Prometheus without one because this server is on loopback.
        refused = await client.get("/dashboard/snapshot.json")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "UNAUTHORIZED"
        snapshot = (await client.get("/dashboard/snapshot.json", headers=auth)).json()
        assert snapshot["workers"] and snapshot["workers"][0]["browser"] == "chromium"
        assert (await client.get("/dashboard")).status_code == 200  # the page: no data in it
        # DNS rebinding: a request for another site's name is refused, on every route.
        for path in ("/healthz", "/metrics", "/v1/models", "/dashboard"):
            evil = {**auth, "host": f"evil.example:{engine.server.port}"}
            r = await client.get(path, headers=evil)
            assert r.status_code == 400 and "Host" in r.json()["error"]["message"], path

        data = b"model weights " * 100_000
        path = tmp_path / "weights.bin"
        path.write_bytes(data)
        root = await asyncio.to_thread(_add, path)
        got = await client.get(f"/ipfs/{root}")
        assert got.status_code == 200 and hashlib.sha256(got.content).digest() == \
            hashlib.sha256(data).digest()
        raw = await client.get(f"/ipfs/{root}", headers={"accept": "application/vnd.ipld.car"})
        assert raw.headers["content-type"].startswith("application/vnd.ipld.car")


def _add(path) -> str:
    from webaccel.content.add import add_path
    from webaccel.content.store import BlockStore

    return str(add_path(path, store=BlockStore.default()))


async def test_listening_off_loopback_needs_an_explicit_key(monkeypatch) -> None:
    from webaccel.errors import InvalidInputError

    monkeypatch.delenv("WEBACCEL_API_KEY", raising=False)
    with pytest.raises(InvalidInputError, match="explicit key"):
        await serve_forever("0.0.0.0", 0, 0, api_key=None)
