from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY as GLOBAL_REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from webaccel.metrics.http import metrics_health, metrics_routes
from webaccel.metrics.store import MetricsStore
from webaccel.server import health_routes


def snapshot() -> dict[str, Any]:
    return {
        "workers": [
            {"id": "w1", "browser": "chromium", "state": "busy", "backends": ["wasm", "webgpu"],
             "models": ["minilm"], "inflight": 2},
            {"id": "w2", "browser": "firefox", "state": "ready", "backends": ["wasm"],
             "models": [], "inflight": 0},
            {"id": "w3", "browser": "chromium", "state": "busy", "backends": ["wasm"],
             "models": ["minilm"], "inflight": 1},
        ],
        "queues": {"minilm": 5, "whisper": 0},
    }


@pytest.fixture
def store(db_path: Path):  # type: ignore[no-untyped-def]
    s = MetricsStore(db_path)
    yield s
    s.close()


def _seed(store: MetricsStore) -> None:
    for ms in (4.0, 8.0, 30.0):
        store.record_inference("minilm", round_trip_ms=ms, worker_id="w1", backend="wasm",
                               queue_wait_ms=0.5, page_ms=ms - 1)
    store.record_inference("minilm", round_trip_ms=100.0, backend="webgpu",
                           error_code="WORKER_LOST")
    store.record_model_load("minilm", ms=900.0, tier="network", nbytes=1000)
    store.record_model_load("minilm", ms=40.0, tier="browser-cache", nbytes=1000)
    store.record_fetch("bafyblock", nbytes=4096, ms=1.0, tier="disk")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_prometheus_text_parses_with_the_right_values(store: MetricsStore) -> None:
    _seed(store)
    app = Starlette(routes=metrics_routes(store, snapshot))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    s = _samples(r.text)
    ok = (("backend", "wasm"), ("model", "minilm"), ("outcome", "ok"))
    assert s[("webaccel_requests_total", ok)] == 3
    lost = (("backend", "webgpu"), ("model", "minilm"), ("outcome", "WORKER_LOST"))
    assert s[("webaccel_requests_total", lost)] == 1
    lat = (("backend", "wasm"), ("model", "minilm"))
    assert s[("webaccel_request_latency_seconds_count", lat)] == 3
    assert s[("webaccel_request_latency_seconds_sum", lat)] == pytest.approx(0.042)
    assert s[("webaccel_request_latency_seconds_bucket", (*lat[:1], ("le", "0.005"),
                                                         *lat[1:]))] == 1
    assert s[("webaccel_queue_depth", (("model", "minilm"),))] == 5
    assert s[("webaccel_workers", (("state", "busy"),))] == 2
    assert s[("webaccel_workers", (("state", "ready"),))] == 1
    assert s[("webaccel_worker_inflight", (("worker", "w1"),))] == 2
    assert s[("webaccel_cache_hits_total", (("tier", "browser-cache"),))] == 1
    assert s[("webaccel_cache_hits_total", (("tier", "disk"),))] == 1
    assert s[("webaccel_cache_bytes_total", (("tier", "network"),))] == 1000
    assert s[("webaccel_model_load_seconds_count", (("tier", "network"),))] == 1
    # Our own registry: nothing leaks into prometheus-client's global one.
    assert GLOBAL_REGISTRY.get_sample_value("webaccel_requests_total", dict(ok)) is None


def app_with_health(store: MetricsStore, snap) -> Starlette:  # type: ignore[no-untyped-def]
    """The metrics routes plus the server's one /healthz carrying the metrics check."""
    return Starlette(routes=[*metrics_routes(store, snap),
                             *health_routes(lambda: [metrics_health(store, snap)])])


async def test_healthz_dashboard_and_snapshot(store: MetricsStore) -> None:
    _seed(store)
    app = app_with_health(store, snapshot)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        h = await c.get("/healthz")
        d = await c.get("/dashboard")
        j = await c.get("/dashboard/snapshot.json")
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert h.json()["metrics"]["writer_alive"] is True and h.json()["metrics_writer_alive"]
    assert d.status_code == 200 and d.headers["content-type"].startswith("text/html")
    # Self-contained: no external scripts, styles or fonts.
    assert "http://" not in d.text and "https://" not in d.text and "<script src" not in d.text
    snap = j.json()
    assert [w["id"] for w in snap["workers"]] == ["w1", "w2", "w3"]
    assert snap["queues"] == {"minilm": 5, "whisper": 0}
    assert [x["round_trip_ms"] for x in snap["recent"]] == [4.0, 8.0, 30.0, 100.0]
    assert snap["metrics"]["aggregate"]["inferences"] == 4
    json.dumps(snap)


async def test_healthz_degraded_when_snapshot_fails_or_writer_stopped(db_path: Path) -> None:
    store = MetricsStore(db_path)

    def broken() -> dict[str, Any]:
        raise RuntimeError("pool gone")

    app = app_with_health(store, broken)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        r = await c.get("/healthz")
        assert r.status_code == 503 and "pool gone" in r.json()["problem"]
        m = await c.get("/metrics")  # a scrape still works
        assert m.status_code == 200
        snap = (await c.get("/dashboard/snapshot.json")).json()
        assert "pool gone" in snap["error"]
    store.close()
    app = app_with_health(store, snapshot)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        r = await c.get("/healthz")
    assert r.status_code == 503 and r.json()["problem"] == "metrics writer is not running"


async def test_metrics_routes_no_longer_define_healthz(store: MetricsStore) -> None:
    """One /healthz: the server's (webaccel.server.health_routes); metrics adds a check."""
    paths = [r.path for r in metrics_routes(store, snapshot)]
    assert "/healthz" not in paths and "/health" not in paths
    app = app_with_health(store, snapshot)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as c:
        a, b = (await c.get("/healthz")).json(), (await c.get("/health")).json()
    assert a["status"] == b["status"] == "ok" and a.keys() == b.keys()
