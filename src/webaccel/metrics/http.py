"""HTTP routes for live metrics: ``/metrics``, ``/healthz``, ``/dashboard``.

    routes = metrics_routes(store, live_snapshot)
    app = Starlette(routes=routes)

``live_snapshot()`` is the pool's view right now::

    {"workers": [{"id", "browser", "state", "backends", "models", "inflight"}, ...],
     "queues": {model: depth}, "recent": [...optional, else the store's]}

Routes:

- ``GET /metrics``: Prometheus text (the store's own registry; queue depth and
  workers by state come from ``live_snapshot`` at scrape time).
- ``GET /healthz``: ``{"status": "ok" | "degraded", "metrics": store.stats()}``;
  503 when the metrics writer stopped or the snapshot function fails.
- ``GET /dashboard``: one self-contained HTML page (no CDN) polling
- ``GET /dashboard/snapshot.json``: ``live_snapshot()`` plus the store's live
  ``metrics`` (get_metrics()) and ``recent`` inferences.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from webaccel.metrics.dashboard import DASHBOARD_HTML
from webaccel.metrics.prom import CONTENT_TYPE

if TYPE_CHECKING:
    from webaccel.metrics.store import MetricsStore

log = logging.getLogger(__name__)


def metrics_routes(
    store: MetricsStore, live_snapshot: Callable[[], dict[str, Any]] | None = None
) -> list[Route]:
    snapshot_fn = live_snapshot or (lambda: {})
    store.prom.set_snapshot(snapshot_fn)

    async def metrics(request: Request) -> Response:
        body = await asyncio.to_thread(store.prom.exposition)
        return Response(body, media_type=CONTENT_TYPE)

    async def healthz(request: Request) -> Response:
        stats = store.stats()
        status, code, problem = "ok", 200, None
        try:
            snapshot_fn()
        except Exception as exc:
            status, code, problem = "degraded", 503, f"live snapshot failed: {exc}"
        if not stats["writer_alive"]:
            status, code, problem = "degraded", 503, "metrics writer is not running"
        body: dict[str, Any] = {"status": status, "metrics": stats}
        if problem:
            body["problem"] = problem
        return JSONResponse(body, status_code=code)

    async def dashboard(request: Request) -> Response:
        return HTMLResponse(DASHBOARD_HTML, headers={"cache-control": "no-store"})

    async def snapshot(request: Request) -> Response:
        try:
            snap = dict(snapshot_fn() or {})
        except Exception as exc:
            log.exception("live snapshot failed")
            snap = {"error": f"{type(exc).__name__}: {exc}"}
        snap.setdefault("workers", [])
        snap.setdefault("queues", {})
        if not snap.get("recent"):
            snap["recent"] = store.recent(200)
        snap["metrics"] = store.get_metrics()
        snap["store"] = store.stats()
        snap["now"] = time.time()
        return JSONResponse(snap, headers={"cache-control": "no-store"})

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/dashboard", dashboard, methods=["GET"]),
        Route("/dashboard/snapshot.json", snapshot, methods=["GET"]),
    ]
