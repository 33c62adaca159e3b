"""HTTP routes for live metrics: ``/metrics``, ``/dashboard``; and the metrics part of
the server's one ``/healthz``.

    routes = metrics_routes(store, live_snapshot)
    server.add_health_check(metrics_health(store, live_snapshot))

``live_snapshot()`` is the pool's view right now::

    {"workers": [{"id", "browser", "state", "backends", "models", "inflight"}, ...],
     "queues": {model: depth}, "recent": [...optional, else the store's]}

Routes:

- ``GET /metrics``: Prometheus text (the store's own registry; queue depth and
  workers by state come from ``live_snapshot`` at scrape time).
- :func:`metrics_health` (a check for :func:`webaccel.server.health_routes`):
  ``{"metrics": store.stats(), "metrics_writer_alive": bool}``, with a
  ``problem`` (so ``/healthz`` answers 503) when the metrics writer stopped
  or the snapshot function fails.
- ``GET /dashboard``: one self-contained HTML page (no CDN) polling
- ``GET /dashboard/snapshot.json``: ``live_snapshot()`` plus the store's live
  ``metrics`` (get_metrics()) and ``recent`` inferences.

A route that fails answers ``{"error": {"code", "message"}}`` with the status
from the one table (:func:`webaccel.errors.json_error_response`).
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from webaccel.errors import (
    INTERNAL_MESSAGE,
    InternalError,
    UnauthorizedError,
    WebAccelError,
    json_error_response,
)
from webaccel.metrics.dashboard import DASHBOARD_HTML
from webaccel.metrics.prom import CONTENT_TYPE

if TYPE_CHECKING:
    from webaccel.metrics.store import MetricsStore

log = logging.getLogger(__name__)


def metrics_health(
    store: MetricsStore, live_snapshot: Callable[[], dict[str, Any]] | None = None
) -> Callable[[], dict[str, Any]]:
    """A ``/healthz`` check: the store's stats; a ``problem`` when its writer stopped or
    the live snapshot fails."""
    snapshot_fn = live_snapshot or (lambda: {})

    def metrics_health() -> dict[str, Any]:
        stats = store.stats()
        out: dict[str, Any] = {"metrics": stats, "metrics_writer_alive": stats["writer_alive"]}
        problems = []
        try:
            snapshot_fn()
        except Exception as exc:
            problems.append(f"live snapshot failed: {exc}")
        if not stats["writer_alive"]:
            problems.append("metrics writer is not running")
        if problems:
            out["problem"] = "; ".join(problems)
        return out

    return metrics_health


def _answering_errors(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except WebAccelError as exc:
            return json_error_response(exc)
        except Exception:
            log.exception("%s failed", request.url.path)
            return json_error_response(InternalError(INTERNAL_MESSAGE))

    return endpoint


def _require_key(request: Request, api_key: str | None) -> None:
    """The Bearer key, when the server has one (compared in constant time)."""
    if api_key is None:
        return
    header = request.headers.get("authorization", "")
    presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
    if not presented or not secrets.compare_digest(presented.encode(), api_key.encode()):
        raise UnauthorizedError(
            "this route shows request data: send 'Authorization: Bearer <key>' with the "
            "key webaccel serve printed (the dashboard takes it as /dashboard#key=<key>)"
        )


def metrics_routes(
    store: MetricsStore,
    live_snapshot: Callable[[], dict[str, Any]] | None = None,
    *,
    api_key: str | None = None,
    open_metrics: bool = True,
) -> list[Route]:
    """``api_key``: what the dashboard's data needs (and ``/metrics`` unless
    ``open_metrics``: on loopback Prometheus scrapes it without one, as vLLM and
    Triton allow).  The dashboard page itself holds no data."""
    snapshot_fn = live_snapshot or (lambda: {})
    store.prom.set_snapshot(snapshot_fn)

    async def metrics(request: Request) -> Response:
        if not open_metrics:
            _require_key(request, api_key)
        body = await asyncio.to_thread(store.prom.exposition)
        return Response(body, media_type=CONTENT_TYPE)

    async def dashboard(request: Request) -> Response:
        return HTMLResponse(DASHBOARD_HTML, headers={"cache-control": "no-store"})

    async def snapshot(request: Request) -> Response:
        _require_key(request, api_key)
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
        Route("/metrics", _answering_errors(metrics), methods=["GET"]),
        Route("/dashboard", _answering_errors(dashboard), methods=["GET"]),
        Route("/dashboard/snapshot.json", _answering_errors(snapshot), methods=["GET"]),
    ]
