"""Metrics: DuckDB store, Prometheus exposition, live dashboard, reports.

Public API (everything else is internal)::

    from webaccel.metrics.store import MetricsStore, default_path, read_query
        MetricsStore(path=None, *, interval=1.0, lock_wait=0.5, read_timeout=30.0, prom=None)
          .record_run_start(kind, info=None) -> run_id
          .record_worker(worker_id, browser, *, version, backends, adapter, is_fallback, info)
          .record_model_load(model, *, ms, cid, variant, precision, backend, worker_id,
                             nbytes, tier, error_code, rss_delta_bytes)
          .record_worker_memory(worker_id, browser, *, rss_bytes, resident, trigger)
          .record_recovery(seconds, *, worker_id, lost_worker_id, browser, reason)
          .record_inference(model, *, round_trip_ms, worker_id, browser, backend, precision,
                            batch, queue_wait_ms, page_ms, retries, error_code)
          .record_fetch(cid, *, nbytes, ms, tier, peer, error_code)
          .record_variant(model, variant, *, nbytes, precision, metric, accuracy,
                          latency_ms, cid)
          .record_benchmark(result_dict, *, better=None)
          .get_metrics() -> dict          # aggregate / models / workers / loads / fetches /
                                          # generations / efficiency
          .recent(n) -> list[dict]        # last inferences of this process
          .query(sql, params=None) -> list[dict]
          .stats() -> dict                # writer health
          .flush(timeout) / .close()
        .prom: webaccel.metrics.prom.PromMetrics (own CollectorRegistry)
    webaccel.metrics.http.metrics_routes(store, live_snapshot) -> list[starlette Route]
    webaccel.metrics.report.build_report(path_or_store, out_dir) -> Report
    webaccel.metrics.cli.register(app: typer.Typer)   # `bench` and `report`
    webaccel.bench.runner.run_benchmarks(names, *, repeat, warmup, store) -> Iterator[dict]

Several processes can share the file (see :mod:`webaccel.metrics.db`).
"""
from __future__ import annotations

from webaccel.metrics.errors import MetricsLockedError, MetricsSchemaError, MetricsStoreError

__all__ = ["MetricsLockedError", "MetricsSchemaError", "MetricsStoreError"]
