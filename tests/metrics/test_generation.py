"""Generation streams and multi-step sessions (chat completions, Whisper) in every metrics view:
the DuckDB table, /metrics, live figures, the dashboard snapshot and the report."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

from webaccel.errors import ErrorCode, TimeoutError_
from webaccel.metrics import db, plots, schema
from webaccel.metrics.http import metrics_routes
from webaccel.metrics.report import _fmt, build_report
from webaccel.metrics.store import MetricsStore, read_query
from webaccel.metrics.writer import spool_dir

from .conftest import scientific, spawn, wait_line

# (model, task, backend, prompt, completion, ttft_ms, total_ms, failovers, finish, error)
STREAMS: list[tuple[Any, ...]] = [
    ("smollm2", "text_generation", "webgpu", 12, 33, 100.0, 900.0, 0, "stop", None),
    ("smollm2", "text_generation", "webgpu", 20, 65, 140.0, 1740.0, 1, "length", None),
    ("smollm2", "text_generation", "webgpu", 8, 17, 120.0, 520.0, 0, "cancelled", None),
    ("smollm2", "text_generation", "wasm", 12, 9, 400.0, 2000.0, 0, "stop", None),
    ("smollm2", "text_generation", "webgpu", 30, 0, None, 30000.0, 2, None, "TIMEOUT"),
    ("whisper-tiny-en", "speech_to_text", "wasm", 0, 41, 650.0, 1450.0, 0, "stop", None),
]


def _record(store: MetricsStore) -> None:
    for model, task, backend, prompt, completion, ttft, total, fo, finish, err in STREAMS:
        store.record_generation(model, task=task, worker_id="w1", browser="chromium",
                                backend=backend, precision="fp32", prompt_tokens=prompt,
                                completion_tokens=completion, ttft_ms=ttft, total_ms=total,
                                queue_wait_ms=2.0, failovers=fo, finish_reason=finish,
                                error_code=TimeoutError_("slow") if err else None)


def _rate(completion: int, ttft: float | None, total: float) -> float | None:
    """The decode rate as the brief defines it, computed here independently."""
    if ttft is None or completion < 2:
        return None
    return (completion - 1) / ((total - ttft) / 1000.0)


def test_generations_land_as_rows(db_path: Path) -> None:
    with MetricsStore(db_path) as store:
        run_id = store.record_run_start("test")
        _record(store)
        store.record_generation("smollm2", task="text_generation", backend="webgpu",
                                completion_tokens=5, ttft_ms=50.0, total_ms=450.0,
                                tokens_per_s=99.5, finish_reason="stop")  # rate given: kept
        store.record_inference("minilm", round_trip_ms=5.0, backend="wasm")
        rows = store.query("SELECT * FROM generations ORDER BY ts")
    assert len(rows) == len(STREAMS) + 1
    for row, (model, task, backend, prompt, completion, ttft, total, fo, finish, err) in zip(
            rows, STREAMS, strict=False):
        assert (row["model"], row["task"], row["backend"], row["prompt_tokens"],
                row["completion_tokens"], row["ttft_ms"], row["total_ms"], row["failovers"],
                row["finish_reason"]) == (model, task, backend, prompt, completion, ttft, total,
                                          fo, finish)
        assert row["run_id"] == run_id and row["worker_id"] == "w1"
        assert row["browser"] == "chromium" and row["precision"] == "fp32"
        assert row["queue_wait_ms"] == 2.0
        assert row["ok"] is (err is None) and row["error_code"] == err
        expected = _rate(completion, ttft, total)
        assert row["tokens_per_s"] == (None if expected is None else pytest.approx(expected))
    assert rows[0]["tokens_per_s"] == pytest.approx(40.0)  # 32 tokens after the first in 0.8 s
    assert rows[-1]["tokens_per_s"] == 99.5
    assert rows[4]["error_code"] == ErrorCode.TIMEOUT
    # Generations are not inferences.
    assert read_query(db_path, "SELECT model FROM inferences") == [{"model": "minilm"}]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_generation_series_and_no_created(db_path: Path) -> None:
    with MetricsStore(db_path) as store:
        _record(store)
        store.record_inference("minilm", round_trip_ms=5.0, backend="wasm")
        text = store.prom.exposition().decode()
    s = _samples(text)
    gpu = (("backend", "webgpu"), ("model", "smollm2"))
    wasm = (("backend", "wasm"), ("model", "smollm2"))
    whisper = (("backend", "wasm"), ("model", "whisper-tiny-en"))

    def req(labels: tuple[tuple[str, str], ...], outcome: str, finish: str) -> float:
        key = tuple(sorted((*labels, ("outcome", outcome), ("finish_reason", finish))))
        return s[("webaccel_generation_requests_total", key)]

    assert req(gpu, "ok", "stop") == 1 and req(gpu, "ok", "length") == 1
    assert req(gpu, "ok", "cancelled") == 1 and req(gpu, "TIMEOUT", "unknown") == 1
    assert req(wasm, "ok", "stop") == 1 and req(whisper, "ok", "stop") == 1
    assert s[("webaccel_generation_prompt_tokens_total", gpu)] == 12 + 20 + 8 + 30
    assert s[("webaccel_generation_completion_tokens_total", gpu)] == 33 + 65 + 17
    assert s[("webaccel_generation_completion_tokens_total", whisper)] == 41
    assert s[("webaccel_generation_failovers_total", gpu)] == 3
    assert s[("webaccel_generation_failovers_total", wasm)] == 0
    # TTFT and decode rate: successful streams only.
    assert s[("webaccel_generation_ttft_seconds_count", gpu)] == 3
    assert s[("webaccel_generation_ttft_seconds_sum", gpu)] == pytest.approx(0.36)
    assert s[("webaccel_generation_ttft_seconds_bucket", (*gpu[:1], ("le", "0.1"),
                                                          *gpu[1:]))] == 1
    assert s[("webaccel_generation_tokens_per_second_count", gpu)] == 3
    assert s[("webaccel_generation_tokens_per_second_sum", gpu)] == pytest.approx(
        40.0 + 40.0 + 40.0)
    assert s[("webaccel_generation_tokens_per_second_bucket", (*whisper[:1], ("le", "50.0"),
                                                               *whisper[1:]))] == 1
    assert s[("webaccel_generation_duration_seconds_count", whisper)] == 1
    assert s[("webaccel_queue_wait_seconds_count", (("model", "smollm2"),))] == 5
    # Inference series are untouched by generations.
    ok = (("backend", "wasm"), ("model", "minilm"), ("outcome", "ok"))
    assert s[("webaccel_requests_total", ok)] == 1
    assert not any(name.startswith("webaccel_requests") and dict(lbl).get("model") == "smollm2"
                   for name, lbl in s)
    # No *_created series, for any metric (issue 16).
    created = [line for line in text.splitlines() if "_created" in line]
    assert created == []


def test_live_figures_and_dashboard_snapshot(db_path: Path) -> None:
    store = MetricsStore(db_path)
    try:
        _record(store)
        m = store.get_metrics()
        g = m["generations"]
        sm = g["models"]["smollm2"]
        assert sm["generations"] == 5 and sm["errors"] == 1 and sm["task"] == "text_generation"
        assert sm["prompt_tokens"] == 82 and sm["completion_tokens"] == 124
        assert sm["avg_ttft_ms"] == pytest.approx((100 + 140 + 120 + 400) / 4)
        assert sm["p50_ttft_ms"] == pytest.approx(130.0)
        assert sm["avg_tokens_per_s"] == pytest.approx((40 + 40 + 40 + 5) / 4)
        assert sm["failovers"] == 3 and sm["backends"] == {"webgpu": 4, "wasm": 1}
        assert sm["finish_reasons"] == {"cancelled": 1, "length": 1, "stop": 2, "unknown": 1}
        wh = g["models"]["whisper-tiny-en"]
        assert wh["task"] == "speech_to_text" and wh["completion_tokens"] == 41
        assert wh["avg_tokens_per_s"] == pytest.approx(50.0)
        assert g["aggregate"]["generations"] == 6 and g["aggregate"]["completion_tokens"] == 165
        assert m["aggregate"]["inferences"] == 0  # not counted as inferences

        async def fetch() -> dict[str, Any]:
            app = Starlette(routes=metrics_routes(store, lambda: {}))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://t") as c:
                page = (await c.get("/dashboard")).text
                assert 'id="generations"' in page and "data-generation" in page
                return (await c.get("/dashboard/snapshot.json")).json()

        import asyncio

        snap = asyncio.run(fetch())
        assert snap["metrics"]["generations"]["models"]["smollm2"]["completion_tokens"] == 124
        json.dumps(snap)
    finally:
        store.close()


def test_report_generation_section_and_plot(db_path: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    expect: dict[tuple[str, str], dict[str, list[float]]] = {}
    with MetricsStore(db_path) as store:
        for model, task, backend, base_ttft, n in (
                ("smollm2", "text_generation", "webgpu", 90.0, 30),
                ("smollm2", "text_generation", "wasm", 420.0, 12),
                ("whisper-tiny-en", "speech_to_text", "wasm", 1900.0, 8)):
            e = expect.setdefault((model, backend), {"ttft": [], "tps": []})
            for k in range(n):
                ttft = float(base_ttft * rng.uniform(0.8, 1.4))
                tokens = int(rng.integers(8, 64))
                total = ttft + float(rng.uniform(5.0, 40.0)) * (tokens - 1)
                store.record_generation(model, task=task, backend=backend, prompt_tokens=10,
                                        completion_tokens=tokens, ttft_ms=ttft, total_ms=total,
                                        finish_reason="stop", failovers=1 if k == 0 else 0)
                e["ttft"].append(ttft)
                e["tps"].append((tokens - 1) / ((total - ttft) / 1000.0))
        store.record_generation("smollm2", task="text_generation", backend="webgpu",
                                prompt_tokens=10, total_ms=900000.0, error_code="WORKER_LOST")
    out = tmp_path / "report"
    rep = build_report(db_path, out)
    assert "generation" in rep.plots
    with Image.open(rep.plots["generation"]) as img:
        assert img.format == "PNG" and img.width >= 800 and img.height >= 200
    md = rep.markdown.read_text()
    page = rep.html.read_text()
    assert "## Generation" in md and "<section id='generation'>" in page
    assert "](plots/generation.png)" in md and "src='plots/generation.png'" in page
    for (model, backend), e in expect.items():
        row = next(line for line in md.splitlines() if line.startswith(f"| {model} | {backend} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        n = len(e["ttft"]) + (1 if (model, backend) == ("smollm2", "webgpu") else 0)
        assert cells[3] == _fmt(n), (row, n)
        assert cells[6] == _fmt(float(np.median(e["ttft"]))), row
        assert cells[7] == _fmt(float(np.percentile(e["ttft"], 95))), row
        assert cells[8] == _fmt(float(np.median(e["tps"]))), row
        assert cells[9] == "1"  # failovers
        assert cells[10] == ("1" if (model, backend) == ("smollm2", "webgpu") else "0")
    assert "failed generations: WORKER_LOST × 1" in md
    assert "whisper-tiny-en finished: stop × 8" in md
    assert "generations 51" in md  # record counts line


def test_generation_plot_labels_are_plain(tmp_path: Path, plot_texts: list[list[str]]) -> None:
    """Widely spread values must not turn into 1e6 / offset / 10^n labels."""
    rows = [{"model": "whisper-tiny-en", "backend": "wasm", "ttft_p50": 2_400_000.0,
             "ttft_p95": 3_100_000.0, "tps_p50": 0.00042},
            {"model": "smollm2", "backend": "webgpu", "ttft_p50": 12.5, "ttft_p95": 30.0,
             "tps_p50": 120_000.0}]
    assert plots.generation_speed(rows, tmp_path / "g.png") is not None
    (labels,) = plot_texts
    assert "2,400,000 ms (p95 3,100,000)" in labels and "120,000 tokens/s" in labels
    assert "0.00042 tokens/s" in labels and "smollm2 / webgpu" in labels
    assert "time to first token, ms (median; whisker to p95)" in labels
    assert "decode rate, tokens/s (median)" in labels
    assert "1,000,000" in labels  # a tick label, written out
    assert scientific(labels) == []
    assert plots.generation_speed([], tmp_path / "none.png") is None


def test_plain_numbers() -> None:
    assert [plots.plain(v) for v in (0, 1e6, 2_400_000.0, 450.0, 45.6, 1.5, 0.012, 0.00042)] == [
        "0", "1,000,000", "2,400,000", "450", "45.6", "1.5", "0.012", "0.00042"]


def test_old_store_file_upgrades_in_place(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file made by schema version 1 gains the generations table, keeping its rows."""
    previous = 1  # migration 2 added generations
    with monkeypatch.context() as m:  # exactly what the previous release's migrate() did
        m.setattr(db, "MIGRATIONS", [x for x in schema.MIGRATIONS if x[0] <= previous])
        m.setattr(db, "LATEST", previous)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        with db.connect(db_path, read_only=False) as con:
            assert db.migrate(con) == previous
            con.execute("INSERT INTO inferences (ts, run_id, model, round_trip_ms, ok) "
                        "VALUES (now(), 'old', 'minilm', 12.5, true)")
    with db.connect(db_path, read_only=True) as con:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables").fetchall()}
    assert "generations" not in tables and "inferences" in tables
    # A reader alone upgrades the file (as `webaccel report` on an old file would).
    assert read_query(db_path, "SELECT count(*) AS n FROM generations") == [{"n": 0}]
    with MetricsStore(db_path) as store:
        store.record_generation("smollm2", task="text_generation", completion_tokens=3,
                                ttft_ms=10.0, total_ms=30.0)
    versions = read_query(db_path, "SELECT version FROM schema_version ORDER BY version")
    assert [v["version"] for v in versions] == list(range(1, schema.LATEST + 1))
    assert read_query(db_path, "SELECT run_id, model, round_trip_ms FROM inferences") == [
        {"run_id": "old", "model": "minilm", "round_trip_ms": 12.5}]
    (g,) = read_query(db_path, "SELECT model, completion_tokens, tokens_per_s FROM generations")
    assert g == {"model": "smollm2", "completion_tokens": 3, "tokens_per_s": pytest.approx(100.0)}


def test_generations_spool_while_locked_then_merge(db_path: Path) -> None:
    """The generations table takes the inferences' path: a locked file spools, then merges."""
    MetricsStore(db_path).close()
    holder = spawn("hold", str(db_path), "3")
    try:
        wait_line(holder, "held")
        store = MetricsStore(db_path, interval=0.1, lock_wait=0.3)
        for i in range(50):
            store.record_generation("smollm2", task="text_generation", completion_tokens=i,
                                    total_ms=1.0)
        assert store.flush(10)
        st = store.stats()
        assert st["spooled_rows"] == 50 and st["committed_rows"] == 0 and st["spool_files"] >= 1
        wait_line(holder, "released", timeout=10)
    finally:
        holder.kill()
        holder.wait()
    rows = store.query("SELECT completion_tokens FROM generations ORDER BY completion_tokens")
    store.close()
    assert [r["completion_tokens"] for r in rows] == list(range(50))
    assert not list(spool_dir(db_path).glob("*.jsonl"))
