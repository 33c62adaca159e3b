"""In-memory figures of this process, for ``get_metrics()`` and the dashboard.

Updated on every recorded inference (a lock and a few additions), read by
:meth:`LiveStats.snapshot`, whose shape is what ``WebAccelerator.get_metrics()``
returns::

    {"aggregate": {"inferences", "items", "errors", "error_rate",
                   "avg_inference_time",   # seconds, mean round trip of ok requests
                   "avg_throughput",       # items/s over the busy window (first start..last end)
                   "p50_ms", "p95_ms", "avg_queue_wait_ms", "avg_page_ms", "retries"},
     "models":  {model:  {same keys, plus "backends": {backend: count}}},
     "workers": {worker: {same keys, plus "browser"}},
     "loads":   {"count", "errors", "by_tier": {tier: {"count", "bytes", "avg_ms"}}},
     "fetches": {"count", "errors", "bytes", "by_tier": {...}},
     "since": ISO time}
"""
from __future__ import annotations

import datetime as dt
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

RECENT = 500


@dataclass
class _Agg:
    inferences: int = 0
    items: int = 0
    errors: int = 0
    retries: int = 0
    rt_sum_ms: float = 0.0
    ok: int = 0
    wait_sum_ms: float = 0.0
    wait_n: int = 0
    page_sum_ms: float = 0.0
    page_n: int = 0
    first_start: float | None = None
    last_end: float | None = None
    recent_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, end: float, rt_ms: float, items: int, ok: bool, retries: int,
            wait_ms: float | None, page_ms: float | None) -> None:
        self.inferences += 1
        self.retries += retries
        start = end - rt_ms / 1000.0
        self.first_start = start if self.first_start is None else min(self.first_start, start)
        self.last_end = end if self.last_end is None else max(self.last_end, end)
        if not ok:
            self.errors += 1
            return
        self.ok += 1
        self.items += items
        self.rt_sum_ms += rt_ms
        self.recent_ms.append(rt_ms)
        if wait_ms is not None:
            self.wait_sum_ms += wait_ms
            self.wait_n += 1
        if page_ms is not None:
            self.page_sum_ms += page_ms
            self.page_n += 1

    def view(self) -> dict[str, Any]:
        window = 0.0
        if self.first_start is not None and self.last_end is not None:
            window = self.last_end - self.first_start
        recent = sorted(self.recent_ms)
        out: dict[str, Any] = {
            "inferences": self.inferences,
            "items": self.items,
            "errors": self.errors,
            "error_rate": self.errors / self.inferences if self.inferences else 0.0,
            "avg_inference_time": (self.rt_sum_ms / self.ok / 1000.0) if self.ok else 0.0,
            "avg_throughput": self.items / window if window > 0 else 0.0,
            "p50_ms": statistics.median(recent) if recent else None,
            "p95_ms": recent[min(len(recent) - 1, int(0.95 * len(recent)))] if recent else None,
            "avg_queue_wait_ms": self.wait_sum_ms / self.wait_n if self.wait_n else None,
            "avg_page_ms": self.page_sum_ms / self.page_n if self.page_n else None,
            "retries": self.retries,
        }
        out.update({k: dict(v) if isinstance(v, dict) else v for k, v in self.extra.items()})
        return out


class LiveStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = dt.datetime.now(dt.UTC)
        self._all = _Agg()
        self._models: dict[str, _Agg] = {}
        self._workers: dict[str, _Agg] = {}
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT)
        self._loads: dict[str, dict[str, float]] = {}
        self._load_count = self._load_errors = 0
        self._fetches: dict[str, dict[str, float]] = {}
        self._fetch_count = self._fetch_errors = 0

    def inference(self, *, end: float, model: str, worker_id: str | None, browser: str | None,
                  backend: str | None, precision: str | None, batch: int, round_trip_ms: float,
                  queue_wait_ms: float | None, page_ms: float | None, retries: int,
                  error_code: str | None) -> None:
        ok = error_code is None
        args = (end, round_trip_ms, batch, ok, retries, queue_wait_ms, page_ms)
        with self._lock:
            self._all.add(*args)
            m = self._models.get(model)
            if m is None:
                m = self._models[model] = _Agg(extra={"backends": {}})
            m.add(*args)
            if backend:
                m.extra["backends"][backend] = m.extra["backends"].get(backend, 0) + 1
            if worker_id is not None:
                w = self._workers.get(worker_id)
                if w is None:
                    w = self._workers[worker_id] = _Agg(extra={"browser": browser})
                w.add(*args)
            self._recent.append({
                "t": end, "model": model, "worker": worker_id, "backend": backend,
                "precision": precision, "batch": batch, "round_trip_ms": round_trip_ms,
                "queue_wait_ms": queue_wait_ms, "page_ms": page_ms, "ok": ok,
                "error_code": error_code,
            })

    def load(self, *, tier: str | None, nbytes: int | None, ms: float, ok: bool) -> None:
        with self._lock:
            self._load_count += 1
            if not ok:
                self._load_errors += 1
                return
            t = self._loads.setdefault(tier or "unknown", {"count": 0, "bytes": 0, "ms": 0.0})
            t["count"] += 1
            t["bytes"] += nbytes or 0
            t["ms"] += ms

    def fetch(self, *, tier: str | None, nbytes: int | None, ms: float, ok: bool) -> None:
        with self._lock:
            self._fetch_count += 1
            if not ok:
                self._fetch_errors += 1
                return
            t = self._fetches.setdefault(tier or "unknown", {"count": 0, "bytes": 0, "ms": 0.0})
            t["count"] += 1
            t["bytes"] += nbytes or 0
            t["ms"] += ms

    def recent(self, n: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._recent)
        return items[-n:] if n else []

    def snapshot(self) -> dict[str, Any]:
        def tiers(d: dict[str, dict[str, float]]) -> dict[str, Any]:
            return {k: {"count": int(v["count"]), "bytes": int(v["bytes"]),
                        "avg_ms": v["ms"] / v["count"] if v["count"] else None}
                    for k, v in sorted(d.items())}

        with self._lock:
            return {
                "aggregate": self._all.view(),
                "models": {k: v.view() for k, v in sorted(self._models.items())},
                "workers": {k: v.view() for k, v in sorted(self._workers.items())},
                "loads": {"count": self._load_count, "errors": self._load_errors,
                          "by_tier": tiers(self._loads)},
                "fetches": {"count": self._fetch_count, "errors": self._fetch_errors,
                            "bytes": int(sum(v["bytes"] for v in self._fetches.values())),
                            "by_tier": tiers(self._fetches)},
                "since": self._since.isoformat(),
            }
