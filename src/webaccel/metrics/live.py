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
     "generations": {"aggregate": {"generations", "errors", "error_rate",
                                   "prompt_tokens", "completion_tokens",
                                   "avg_ttft_ms", "p50_ttft_ms",   # time to first token, ok ones
                                   "avg_tokens_per_s",             # mean decode rate, ok ones
                                   "avg_total_ms", "failovers", "finish_reasons": {reason: n}},
                     "models": {model: {same keys, plus "task", "backends": {backend: n}}}},
     "efficiency": {
         "memory": {"workers": {worker: {"browser", "measured", "peak_rss_bytes",
                                         "last_rss_bytes", "samples", "why"}},
                    "models": {model: {"loads_measured", "median_rss_growth_bytes",
                                       "max_rss_growth_bytes"}}},
         "connections": {"opened", "requests_served", "requests_per_connection"},
         "cache": {"loads": {"reads", "hits", "hit_rate", "bytes_saved", "network_bytes",
                             "by_tier": {tier: {"reads", "bytes", "share", "cache"}}},
                   "fetches": {same}},
         "errors": {"requests", "errors", "error_rate"},   # inferences and generations
         "recovery": {"count", "median_s", "max_s"}},
     "since": ISO time}

Generation streams and multi-step sessions (Whisper) are counted under
``generations`` only, not in the inference figures.
"""
from __future__ import annotations

import datetime as dt
import statistics
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from webaccel.metrics import efficiency as eff

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


@dataclass
class _GenAgg:
    """Figures of ended generation streams / multi-step sessions."""

    generations: int = 0
    errors: int = 0
    failovers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ok: int = 0
    total_sum_ms: float = 0.0
    ttft_sum_ms: float = 0.0
    ttft_n: int = 0
    rate_sum: float = 0.0
    rate_n: int = 0
    recent_ttft_ms: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    finish_reasons: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, *, prompt_tokens: int, completion_tokens: int, ttft_ms: float | None,
            total_ms: float, tokens_per_s: float | None, failovers: int,
            finish_reason: str | None, ok: bool) -> None:
        self.generations += 1
        self.failovers += failovers
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        reason = finish_reason or "unknown"
        self.finish_reasons[reason] = self.finish_reasons.get(reason, 0) + 1
        if not ok:
            self.errors += 1
            return
        self.ok += 1
        self.total_sum_ms += total_ms
        if ttft_ms is not None:
            self.ttft_sum_ms += ttft_ms
            self.ttft_n += 1
            self.recent_ttft_ms.append(ttft_ms)
        if tokens_per_s is not None:
            self.rate_sum += tokens_per_s
            self.rate_n += 1

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "generations": self.generations,
            "errors": self.errors,
            "error_rate": self.errors / self.generations if self.generations else 0.0,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "avg_ttft_ms": self.ttft_sum_ms / self.ttft_n if self.ttft_n else None,
            "p50_ttft_ms": statistics.median(self.recent_ttft_ms) if self.recent_ttft_ms
            else None,
            "avg_tokens_per_s": self.rate_sum / self.rate_n if self.rate_n else None,
            "avg_total_ms": self.total_sum_ms / self.ok if self.ok else None,
            "failovers": self.failovers,
            "finish_reasons": dict(sorted(self.finish_reasons.items())),
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
        self._gen_all = _GenAgg()
        self._gen_models: dict[str, _GenAgg] = {}
        # Resource efficiency: workers seen (connections opened), their memory,
        # each model's RSS growth at load, recoveries after a lost worker.
        self._seen: dict[str, str] = {}  # worker id -> browser
        self._memory: dict[str, dict[str, Any]] = {}
        self._growth: dict[str, deque[int]] = {}
        self._recoveries: deque[float] = deque(maxlen=RECENT)

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

    def generation(self, *, model: str, task: str, backend: str | None, prompt_tokens: int,
                   completion_tokens: int, ttft_ms: float | None, total_ms: float,
                   tokens_per_s: float | None, failovers: int, finish_reason: str | None,
                   error_code: str | None) -> None:
        figures: dict[str, Any] = {"prompt_tokens": prompt_tokens,
                   "completion_tokens": completion_tokens,
                   "ttft_ms": ttft_ms, "total_ms": total_ms, "tokens_per_s": tokens_per_s,
                   "failovers": failovers, "finish_reason": finish_reason,
                   "ok": error_code is None}
        with self._lock:
            self._gen_all.add(**figures)
            m = self._gen_models.get(model)
            if m is None:
                m = self._gen_models[model] = _GenAgg(extra={"task": task, "backends": {}})
            m.add(**figures)
            if backend:
                m.extra["backends"][backend] = m.extra["backends"].get(backend, 0) + 1

    def load(self, *, tier: str | None, nbytes: int | None, ms: float, ok: bool,
             model: str | None = None, rss_delta_bytes: int | None = None) -> None:
        with self._lock:
            self._load_count += 1
            if not ok:
                self._load_errors += 1
                return
            if model is not None and rss_delta_bytes is not None:
                self._growth.setdefault(model, deque(maxlen=RECENT)).append(int(rss_delta_bytes))
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

    def worker(self, *, worker_id: str, browser: str | None) -> None:
        with self._lock:
            self._seen.setdefault(worker_id, browser or "?")

    def memory(self, *, worker_id: str, browser: str | None, rss_bytes: int | None) -> None:
        with self._lock:
            m = self._memory.setdefault(worker_id, {"browser": browser, "peak": None,
                                                    "last": None, "samples": 0,
                                                    "unmeasurable": False})
            if rss_bytes is None:
                m["unmeasurable"] = True
                return
            m["samples"] += 1
            m["last"] = int(rss_bytes)
            m["peak"] = max(m["peak"] or 0, int(rss_bytes))

    def recovery(self, seconds: float) -> None:
        with self._lock:
            self._recoveries.append(float(seconds))

    def _efficiency(self) -> dict[str, Any]:
        """The efficiency block of :meth:`snapshot` (called with the lock held)."""
        workers: dict[str, Any] = {}
        for wid in sorted(set(self._seen) | set(self._memory)):
            m = self._memory.get(wid)
            measured = m is not None and m["samples"] > 0
            workers[wid] = {
                "browser": (m or {}).get("browser") or self._seen.get(wid),
                "measured": measured,
                "peak_rss_bytes": m["peak"] if measured and m else None,
                "last_rss_bytes": m["last"] if measured and m else None,
                "samples": m["samples"] if m else 0,
                "why": None if measured
                else eff.NOT_MEASURED if m is not None and m["unmeasurable"] else eff.NO_SAMPLE,
            }
        requests = self._all.inferences + self._gen_all.generations
        errors = self._all.errors + self._gen_all.errors

        def tiers(d: dict[str, dict[str, float]]) -> dict[str, tuple[int, int]]:
            return {k: (int(v["count"]), int(v["bytes"])) for k, v in d.items()}

        return {
            "memory": {
                "workers": workers,
                "models": {k: eff.growth_figures(v) for k, v in sorted(self._growth.items())},
            },
            "connections": eff.connection_figures(len(self._seen),
                                                  self._all.ok + self._gen_all.ok),
            "cache": {"loads": eff.cache_figures(tiers(self._loads)),
                      "fetches": eff.cache_figures(tiers(self._fetches))},
            "errors": eff.error_figures(requests, errors),
            "recovery": eff.recovery_figures(list(self._recoveries)),
        }

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
                "generations": {"aggregate": self._gen_all.view(),
                                "models": {k: v.view()
                                           for k, v in sorted(self._gen_models.items())}},
                "efficiency": self._efficiency(),
                "since": self._since.isoformat(),
            }
