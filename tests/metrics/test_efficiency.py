"""Resource efficiency: migration 3, ``get_metrics()["efficiency"]`` and the report's
"Resource efficiency" section, from hand-written records."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from webaccel.metrics import db, efficiency
from webaccel.metrics.report import build_report
from webaccel.metrics.schema import LATEST, MIGRATIONS
from webaccel.metrics.store import MetricsStore, read_query

from .conftest import scientific

MB = 1_000_000
BLOCK = 262_144


def test_migration_3_adds_memory_and_recoveries_to_a_version_2_file(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db_path))  # a file as webaccel with schema 2 left it
    con.execute("CREATE TABLE schema_version (version INTEGER, description VARCHAR,"
                " applied_at TIMESTAMP)")
    for version, description, statements in MIGRATIONS[:2]:
        for sql in statements:
            con.execute(sql)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [version, description])
    con.execute("INSERT INTO model_loads VALUES (now(), 'old', 'minilm', NULL, 'fp32', 'fp32',"
                " 'wasm', 'w0', 90000000, 'network', 800.0, true, NULL)")
    con.close()
    assert LATEST == 3
    with MetricsStore(db_path) as store:
        store.record_model_load("minilm", ms=40.0, worker_id="w1", nbytes=90 * MB,
                                tier="browser-cache", rss_delta_bytes=101 * MB)
        store.record_worker_memory("w1", "chromium", rss_bytes=640 * MB,
                                   resident=["minilm/fp32/wasm"], trigger="load")
        store.record_worker_memory("j1", "firefox", rss_bytes=None)
        store.record_recovery(3.5, worker_id="w2", lost_worker_id="w1", browser="chromium",
                              reason="worker reports it is no longer alive")
        tables = store.tables()
    versions = read_query(db_path, "SELECT version FROM schema_version ORDER BY version")
    assert [v["version"] for v in versions] == [1, 2, 3]
    loads = tables["model_loads"]
    assert [(x["run_id"] == "old", x["rss_delta_bytes"]) for x in loads] == [
        (True, None), (False, 101 * MB)]
    mem = tables["worker_memory"]
    assert [(x["worker_id"], x["rss_bytes"], x["trigger"]) for x in mem] == [
        ("w1", 640 * MB, "load"), ("j1", None, "interval")]
    assert json.loads(mem[0]["resident"]) == ["minilm/fp32/wasm"]
    (rec,) = tables["recoveries"]
    assert (rec["lost_worker_id"], rec["worker_id"], rec["seconds"]) == ("w1", "w2", 3.5)
    with db.connect(db_path, read_only=False) as c:
        assert db.migrate(c) == 3  # idempotent


def _seed(store: MetricsStore) -> None:
    """One run: four workers (one joined from elsewhere, one never sampled), loads of two
    models from three tiers, block fetches, inferences, generations and recoveries."""
    store.record_run_start("test")
    for wid in ("w1", "w2", "j1", "w3"):
        store.record_worker(wid, "chromium", backends=["wasm"])
    for rss, trigger in ((300 * MB, "interval"), (450 * MB, "load"), (400 * MB, "interval")):
        store.record_worker_memory("w1", "chromium", rss_bytes=rss, trigger=trigger)
    store.record_worker_memory("w2", "chromium", rss_bytes=250 * MB, trigger="load")
    store.record_worker_memory("j1", "chromium", rss_bytes=None)
    for model, wid, tier, nbytes, delta in (
            ("minilm", "w1", "network", 90 * MB, 120 * MB),
            ("minilm", "w2", "browser-cache", 90 * MB, 100 * MB),
            ("minilm", "j1", "memory", 90 * MB, None),
            ("vit", "w1", "network", 350 * MB, 400 * MB)):
        store.record_model_load(model, ms=100.0, worker_id=wid, tier=tier, nbytes=nbytes,
                                rss_delta_bytes=delta)
    store.record_model_load("vit", ms=0.0, worker_id="w2", error_code="LOAD_FAILED",
                            rss_delta_bytes=5 * MB)  # a failed load is no model's memory
    for tier, n in (("memory", 3), ("disk", 1), ("peer", 4)):
        for i in range(n):
            store.record_fetch(f"bafy{tier}{i}", nbytes=BLOCK, ms=1.0, tier=tier)
    store.record_fetch("bafylost", nbytes=None, ms=9.0, tier="peer", error_code="TIMEOUT")
    for i in range(7):
        store.record_inference("minilm", round_trip_ms=10.0, worker_id=f"w{1 + i % 2}",
                               browser="chromium", backend="wasm")
    store.record_inference("minilm", round_trip_ms=0.0, error_code="TIMEOUT")
    for code in (None, None, "WORKER_LOST"):
        store.record_generation("smollm2", task="text_generation", worker_id="w1",
                                completion_tokens=4, total_ms=50.0, error_code=code)
    for seconds in (2.0, 4.0, 9.0):
        store.record_recovery(seconds, worker_id="w2", lost_worker_id="w1", browser="chromium")


def test_get_metrics_gives_the_efficiency_figures(db_path: Path) -> None:
    with MetricsStore(db_path) as store:
        _seed(store)
        e = store.get_metrics()["efficiency"]
    workers = e["memory"]["workers"]
    assert workers["w1"] == {"browser": "chromium", "measured": True,
                             "peak_rss_bytes": 450 * MB, "last_rss_bytes": 400 * MB,
                             "samples": 3, "why": None}
    assert workers["w2"]["peak_rss_bytes"] == 250 * MB
    assert workers["j1"]["measured"] is False and workers["j1"]["peak_rss_bytes"] is None
    assert workers["j1"]["why"] == efficiency.NOT_MEASURED
    assert workers["w3"]["why"] == efficiency.NO_SAMPLE
    assert e["memory"]["models"] == {
        "minilm": {"loads_measured": 2, "median_rss_growth_bytes": 110 * MB,
                   "max_rss_growth_bytes": 120 * MB},
        "vit": {"loads_measured": 1, "median_rss_growth_bytes": 400 * MB,
                "max_rss_growth_bytes": 400 * MB}}
    assert e["connections"] == {"opened": 4, "requests_served": 9,
                                "requests_per_connection": 2.25}
    loads = e["cache"]["loads"]
    assert (loads["reads"], loads["hits"], loads["hit_rate"]) == (4, 2, 0.5)
    assert (loads["bytes_saved"], loads["network_bytes"]) == (180 * MB, 440 * MB)
    assert loads["by_tier"]["network"] == {"reads": 2, "bytes": 440 * MB, "share": 0.5,
                                           "cache": False}
    assert loads["by_tier"]["browser-cache"]["share"] == 0.25
    assert loads["by_tier"]["browser-cache"]["cache"] is True
    fetches = e["cache"]["fetches"]
    assert (fetches["reads"], fetches["hits"], fetches["hit_rate"]) == (8, 4, 0.5)
    assert fetches["bytes_saved"] == 4 * BLOCK and fetches["network_bytes"] == 4 * BLOCK
    assert {t: v["share"] for t, v in fetches["by_tier"].items()} == {
        "peer": 0.5, "memory": 0.375, "disk": 0.125}
    assert e["errors"] == {"requests": 11, "errors": 2, "error_rate": 2 / 11}
    assert e["recovery"] == {"count": 3, "median_s": 4.0, "max_s": 9.0}


def test_get_metrics_efficiency_of_an_empty_store(db_path: Path) -> None:
    with MetricsStore(db_path) as store:
        e = store.get_metrics()["efficiency"]
    assert e["memory"] == {"workers": {}, "models": {}}
    assert e["connections"]["requests_per_connection"] is None
    assert e["cache"]["loads"]["hit_rate"] is None and e["errors"]["error_rate"] is None
    assert e["recovery"] == {"count": 0, "median_s": None, "max_s": None}


def _md_rows(md: str, section: str) -> list[str]:
    body = md.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in body.splitlines() if line.startswith("| ")]


def test_report_shows_resource_efficiency(db_path: Path, tmp_path: Path,
                                          plot_texts: list[list[str]]) -> None:
    with MetricsStore(db_path) as store:
        _seed(store)
        live = store.get_metrics()["efficiency"]
    rep = build_report(db_path, tmp_path / "r")
    assert "efficiency" in rep.plots and rep.plots["efficiency"].exists()
    md = rep.markdown.read_text()
    rows = _md_rows(md, "Resource efficiency")
    for want in (
        "| peak memory of one worker (MB) | 450.0 | w1 (chromium) |",
        "| largest memory growth at a model load (MB) | 400.0 | vit |",
        "| browser connections opened | 4 | 1 run(s) |",
        "| requests served | 9 |",
        "| requests per connection | 2.25 |",
        "| model loads served by a cache | 50.0 % | 2 of 4 |",
        "| network MB saved by caches (model loads) | 180.0 | 440.0 MB still came over",
        "| block fetches served by a cache | 50.0 % | 4 of 8 |",
        "| network MB saved by caches (block fetches) | 1.049 |",
        "| error rate | 18.2 % | 2 of 11 requests failed |",
        "| recoveries after a lost worker | 3 |",
        "| recovery time, median s | 4 | max 9 s |",
        # tables
        "| w1 | chromium | 450.0 | 3 |",
        "| w2 | chromium | 250.0 | 1 |",
        "| j1 | chromium | not measured | 0 |",
        "| minilm | 2 | 110.0 | 120.0 |",
        "| vit | 1 | 400.0 | 400.0 |",
        "| model loads | network | no | 2 | 50.0 % | 440.0 |",
        "| model loads | browser-cache | yes | 1 | 25.0 % | 90.0 |",
        "| block fetches | memory | yes | 3 | 37.5 % | 0.7864 |",
        "| block fetches | peer | no | 4 | 50.0 % | 1.049 |",
    ):
        assert any(want in row for row in rows), want
    assert any(row.endswith("| 4 | 9 | 2.25 |") for row in rows)  # connection reuse per run
    assert "1 worker(s) not measured: no local browser process" in md
    assert "1 worker(s) have no memory sample" in md
    assert "**Peak memory per worker**" in md and "<h3>Memory per model" in rep.html.read_text()
    # The report (over the file) and get_metrics() (this process) agree on one run.
    data = rep.data["efficiency"]
    for key in ("connections", "errors", "recovery"):
        assert data[key] == live[key], key
    assert data["cache"] == live["cache"]
    assert data["memory"]["models"] == live["memory"]["models"]
    texts = next(t for t in plot_texts if "Resource efficiency: memory" in t)
    assert "450 MB" in texts and "  110 MB (max 120, n=2)" in texts
    assert "w1 (chromium)" in texts and "minilm" in texts
    assert scientific(texts) == []


def test_plot_draws_memory_with_plain_numbers(tmp_path: Path,
                                              plot_texts: list[list[str]]) -> None:
    from webaccel.metrics import plots

    workers: list[dict[str, Any]] = [{"label": "w1 (chromium)", "peak_mb": 3154.9},
                                     {"label": "w2 (firefox)", "peak_mb": 0.004}]
    models: list[dict[str, Any]] = [{"model": "smollm2", "median_mb": 1250.0, "max_mb": 2100.0,
                                     "n": 3}]
    assert plots.resource_memory(workers, models, tmp_path / "m.png") is not None
    assert plots.resource_memory([], [], tmp_path / "none.png") is None
    (texts,) = plot_texts
    assert "3,155 MB" in texts and "0.004 MB" in texts
    assert "  1,250 MB (max 2,100, n=3)" in texts
    assert scientific(texts) == []


@pytest.mark.parametrize("tier, hit", [("memory", True), ("disk", True),
                                       ("browser-cache", True), ("network", False),
                                       ("peer", False), ("gateway", False), (None, None),
                                       ("unknown", None)])
def test_a_hit_is_a_read_from_a_local_tier(tier: str | None, hit: bool | None) -> None:
    assert efficiency.is_hit(tier) is hit
