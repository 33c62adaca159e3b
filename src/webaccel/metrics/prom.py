"""Prometheus metrics, on a registry of our own (never the global one).

Counters and histograms are updated by :class:`webaccel.metrics.store.MetricsStore`
as records arrive; gauges that describe the pool right now (queue depth,
workers by state, in-flight requests) are read at scrape time from the
snapshot function the server passes to :meth:`PromMetrics.set_snapshot`.

Names (all prefixed ``webaccel_``)::

    requests_total{model,backend,outcome}          counter  outcome = ok | <ERROR_CODE>
    request_latency_seconds{model,backend}         histogram, round trip of ok requests
    queue_wait_seconds{model}                      histogram
    page_time_seconds{model,backend}               histogram, inference time inside the page
    model_loads_total{model,tier,outcome}          counter
    model_load_seconds{tier}                       histogram
    cache_hits_total{tier}                         counter, reads served by that tier
    cache_bytes_total{tier}                        counter
    fetches_total{tier,outcome}                    counter
    generation_requests_total{model,backend,outcome,finish_reason}
                                                   counter, one per stream/session that ended
    generation_prompt_tokens_total{model,backend}  counter
    generation_completion_tokens_total{model,backend}
                                                   counter, tokens generated (decoded for speech)
    generation_ttft_seconds{model,backend}         histogram, submit to first token (ok only)
    generation_tokens_per_second{model,backend}    histogram, decode rate (ok only)
    generation_duration_seconds{model,backend}     histogram, whole stream (ok only)
    generation_failovers_total{model,backend}      counter, streams replayed on another worker
    queue_depth{model}                             gauge (snapshot)
    workers{state}                                 gauge (snapshot)
    worker_inflight{worker}                        gauge (snapshot)
    metrics_pending_records                        gauge, records not yet durable
    metrics_spooled_records_total                  counter-like gauge

Generation streams also feed ``queue_wait_seconds``.  No ``*_created`` series
are exposed: they double the series count and nobody reads them.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_RATE_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0,
                      1000.0)

# prometheus-client's switch is process-wide (it is read at exposition time); webaccel
# owns the process it serves /metrics from.
disable_created_metrics()


def _label(value: str | None) -> str:
    return value if value else "unknown"


class _SnapshotCollector(Collector):
    def __init__(self, owner: PromMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("webaccel_queue_depth", "Requests waiting per model queue",
                                  labels=["model"])
        workers = GaugeMetricFamily("webaccel_workers", "Workers by lifecycle state",
                                    labels=["state"])
        inflight = GaugeMetricFamily("webaccel_worker_inflight", "Requests running on a worker",
                                     labels=["worker"])
        pending = GaugeMetricFamily("webaccel_metrics_pending_records",
                                    "Metric records not yet committed to DuckDB")
        spooled = GaugeMetricFamily("webaccel_metrics_spooled_records",
                                    "Records spooled because the DuckDB file was locked")
        snap: dict[str, Any] = {}
        if self.owner.snapshot is not None:
            try:
                snap = self.owner.snapshot() or {}
            except Exception:  # a scrape must not fail because the pool is busy
                log.exception("live snapshot failed during scrape")
        for model, n in sorted((snap.get("queues") or {}).items()):
            depth.add_metric([str(model)], float(n))
        states: dict[str, int] = {}
        for w in snap.get("workers") or []:
            state = str(w.get("state") or "unknown")
            states[state] = states.get(state, 0) + 1
            inflight.add_metric([str(w.get("id"))], float(w.get("inflight") or 0))
        for state, n in sorted(states.items()):
            workers.add_metric([state], float(n))
        store_stats = self.owner.store_stats() if self.owner.store_stats else {}
        pending.add_metric([], float(store_stats.get("pending", 0)))
        spooled.add_metric([], float(store_stats.get("spooled_rows", 0)))
        yield from (depth, workers, inflight, pending, spooled)


class PromMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("webaccel_requests", "Inference requests by outcome",
                                ["model", "backend", "outcome"], registry=r)
        self.latency = Histogram("webaccel_request_latency_seconds",
                                 "Round trip of successful inference requests",
                                 ["model", "backend"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("webaccel_queue_wait_seconds", "Time spent queued",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.page_time = Histogram("webaccel_page_time_seconds", "Inference time inside the page",
                                   ["model", "backend"], buckets=LATENCY_BUCKETS, registry=r)
        self.loads = Counter("webaccel_model_loads", "Model loads by source tier and outcome",
                             ["model", "tier", "outcome"], registry=r)
        self.load_time = Histogram("webaccel_model_load_seconds", "Model load time by tier",
                                   ["tier"], buckets=LOAD_BUCKETS, registry=r)
        self.cache_hits = Counter("webaccel_cache_hits", "Reads served by each cache tier",
                                  ["tier"], registry=r)
        self.cache_bytes = Counter("webaccel_cache_bytes", "Bytes served by each cache tier",
                                   ["tier"], registry=r)
        self.fetches = Counter("webaccel_fetches", "Block/file fetches by tier and outcome",
                               ["tier", "outcome"], registry=r)
        mb = ["model", "backend"]
        self.gen_requests = Counter(
            "webaccel_generation_requests", "Generation streams and multi-step sessions that "
            "ended, by outcome and finish reason", ["model", "backend", "outcome", "finish_reason"],
            registry=r)
        self.gen_prompt_tokens = Counter("webaccel_generation_prompt_tokens",
                                         "Prompt tokens of generation requests", mb, registry=r)
        self.gen_completion_tokens = Counter(
            "webaccel_generation_completion_tokens",
            "Tokens generated (decoded tokens for speech to text)", mb, registry=r)
        self.gen_ttft = Histogram("webaccel_generation_ttft_seconds",
                                  "Time to first token from submit, successful generations",
                                  mb, buckets=LATENCY_BUCKETS, registry=r)
        self.gen_rate = Histogram("webaccel_generation_tokens_per_second",
                                  "Decode rate after the first token, successful generations",
                                  mb, buckets=TOKEN_RATE_BUCKETS, registry=r)
        self.gen_duration = Histogram("webaccel_generation_duration_seconds",
                                      "Submit to last token, successful generations", mb,
                                      buckets=LOAD_BUCKETS, registry=r)
        self.gen_failovers = Counter("webaccel_generation_failovers",
                                     "Generation streams replayed on another worker", mb,
                                     registry=r)
        self.quarantined = Counter(
            "webaccel_workers_quarantined",
            "Workers taken out of service because an answer failed its check", ["browser"],
            registry=r)
        # labels() costs ~10 us a call; the hot path looks children up here instead.
        self._children: dict[tuple[Any, ...], Any] = {}
        self.snapshot: Callable[[], dict[str, Any]] | None = None
        self.store_stats: Callable[[], dict[str, Any]] | None = None
        r.register(_SnapshotCollector(self))

    def set_snapshot(self, fn: Callable[[], dict[str, Any]] | None) -> None:
        """Read queue depth, workers by state and in-flight counts from ``fn()`` at scrape time."""
        self.snapshot = fn

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def inference(self, *, model: str, backend: str | None, round_trip_ms: float,
                  queue_wait_ms: float | None, page_ms: float | None,
                  error_code: str | None) -> None:
        b = _label(backend)
        self._child(self.requests, model, b, error_code or "ok").inc()
        if error_code is None:
            self._child(self.latency, model, b).observe(round_trip_ms / 1000.0)
            if page_ms is not None:
                self._child(self.page_time, model, b).observe(page_ms / 1000.0)
        if queue_wait_ms is not None:
            self._child(self.queue_wait, model).observe(queue_wait_ms / 1000.0)

    def generation(self, *, model: str, backend: str | None, prompt_tokens: int,
                   completion_tokens: int, ttft_ms: float | None, total_ms: float,
                   tokens_per_s: float | None, queue_wait_ms: float | None, failovers: int,
                   finish_reason: str | None, error_code: str | None) -> None:
        b = _label(backend)
        self._child(self.gen_requests, model, b, error_code or "ok", _label(finish_reason)).inc()
        # Tokens are work done even when the stream failed or was cancelled part way.
        self._child(self.gen_prompt_tokens, model, b).inc(max(0, prompt_tokens))
        self._child(self.gen_completion_tokens, model, b).inc(max(0, completion_tokens))
        self._child(self.gen_failovers, model, b).inc(max(0, failovers))
        if error_code is None:
            if ttft_ms is not None:
                self._child(self.gen_ttft, model, b).observe(ttft_ms / 1000.0)
            if tokens_per_s is not None:
                self._child(self.gen_rate, model, b).observe(tokens_per_s)
            self._child(self.gen_duration, model, b).observe(total_ms / 1000.0)
        if queue_wait_ms is not None:
            self._child(self.queue_wait, model).observe(queue_wait_ms / 1000.0)

    def quarantine(self, *, browser: str) -> None:
        self._child(self.quarantined, _label(browser)).inc()

    def model_load(self, *, model: str, tier: str | None, ms: float, nbytes: int | None,
                   error_code: str | None) -> None:
        t = _label(tier)
        self._child(self.loads, model, t, error_code or "ok").inc()
        if error_code is None:
            self._child(self.load_time, t).observe(ms / 1000.0)
            self._child(self.cache_hits, t).inc()
            self._child(self.cache_bytes, t).inc(nbytes or 0)

    def fetch(self, *, tier: str | None, nbytes: int | None, error_code: str | None) -> None:
        t = _label(tier)
        self._child(self.fetches, t, error_code or "ok").inc()
        if error_code is None:
            self._child(self.cache_hits, t).inc()
            self._child(self.cache_bytes, t).inc(nbytes or 0)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
