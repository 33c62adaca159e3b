"""A quarantined worker shows in Prometheus and in the workers table, with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
from prometheus_client.parser import text_string_to_metric_families

from webaccel.metrics.store import MetricsStore


def test_quarantine_is_counted_and_recorded(tmp_path: Path) -> None:
    db = tmp_path / "m.duckdb"
    with MetricsStore(db) as store:
        store.record_quarantine("w-1", "chromium", reason="cosine 0.14 against the reference")
        text = store.prom.exposition().decode()
        store.flush()
    samples = {
        (s.name, s.labels.get("browser")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("webaccel_workers_quarantined_total", "chromium")] == 1.0
    with duckdb.connect(str(db), read_only=True) as con:
        (info,) = con.execute("SELECT info FROM workers WHERE worker_id = 'w-1'").fetchone()
    assert "cosine 0.14" in json.loads(info)["quarantined"]
