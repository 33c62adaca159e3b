from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from webaccel.errors import ErrorCode, TimeoutError_
from webaccel.metrics import db
from webaccel.metrics.errors import MetricsLockedError, MetricsSchemaError
from webaccel.metrics.schema import LATEST, RECORD_TABLES
from webaccel.metrics.store import MetricsStore, read_query
from webaccel.metrics.writer import spool_dir, write_spool

from .conftest import spawn, tiny_onnx, wait_line


def test_default_path_is_under_webaccel_home(home: Path) -> None:
    with MetricsStore() as store:
        store.record_run_start("t")
    assert store.path == home / "metrics.duckdb"
    assert read_query(store.path, "SELECT kind FROM runs") == [{"kind": "t"}]


def test_real_inferences_land_as_rows(tmp_path: Path, db_path: Path) -> None:
    model = tiny_onnx(tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    store = MetricsStore(db_path)
    run_id = store.record_run_start("test", info={"model": "tiny"})
    store.record_worker("native-0", "native", version=ort.__version__, backends=["cpu"],
                        is_fallback=False)
    seen = []
    rng = np.random.default_rng(1)
    for batch in (1, 2, 4, 8):
        x = rng.standard_normal((batch, 64)).astype(np.float32)
        t0 = time.perf_counter()
        (y,) = session.run(None, {"x": x})
        ms = (time.perf_counter() - t0) * 1000
        assert y.shape == (batch, 64) and (y >= 0).all()
        store.record_inference("tiny", round_trip_ms=ms, worker_id="native-0", browser="native",
                               backend="cpu", precision="fp32", batch=batch, page_ms=ms)
        seen.append((batch, ms))
    store.record_inference("tiny", round_trip_ms=5.0, backend="cpu",
                           error_code=TimeoutError_("too slow"))
    rows = store.query("SELECT * FROM inferences ORDER BY ts, batch")
    store.close()
    assert len(rows) == 5
    ok = [r for r in rows if r["ok"]]
    assert [(r["batch"], r["round_trip_ms"]) for r in ok] == seen
    assert all(r["run_id"] == run_id and r["precision"] == "fp32" for r in ok)
    bad = [r for r in rows if not r["ok"]]
    assert bad[0]["error_code"] == ErrorCode.TIMEOUT == "TIMEOUT"
    (w,) = read_query(db_path, "SELECT * FROM workers")
    assert w["browser_version"] == ort.__version__ and json.loads(w["backends"]) == ["cpu"]
    (run,) = read_query(db_path, "SELECT * FROM runs")
    assert json.loads(run["info"]) == {"model": "tiny"} and run["run_id"] == run_id


def test_every_record_kind_round_trips(db_path: Path) -> None:
    with MetricsStore(db_path) as store:
        store.record_run_start("test")
        store.record_model_load("m", ms=120.5, cid="bafyx", variant="int8", precision="int8",
                                backend="wasm", worker_id="w1", nbytes=1234, tier="network")
        store.record_model_load("m", ms=3.0, tier="browser-cache", error_code="LOAD_FAILED")
        store.record_fetch("bafyblock", nbytes=262144, ms=2.5, tier="peer", peer="http://p1")
        store.record_variant("m", "int4", nbytes=14_700_000, metric="cosine", accuracy=0.948)
        store.record_benchmark({"benchmark": "x", "ratio": 2.0, "ratio_is": "a / b",
                                "figures": {"a": 1}, "at": "2026-11-26T05:00:00+00:00"},
                               better="higher")
        tables = store.tables()
    assert set(tables) == set(RECORD_TABLES)
    loads = tables["model_loads"]
    assert [(r["tier"], r["ok"], r["error_code"], r["bytes"]) for r in loads] == [
        ("network", True, None, 1234), ("browser-cache", False, "LOAD_FAILED", None)]
    assert tables["fetches"][0]["peer"] == "http://p1"
    assert tables["variants"][0]["accuracy"] == pytest.approx(0.948)
    (b,) = tables["benchmarks"]
    assert (b["ratio"], b["better"], b["ts"].isoformat()) == (2.0, "higher", "2026-11-26T05:00:00")
    assert json.loads(b["record"])["figures"] == {"a": 1}


def test_schema_versioned_and_newer_file_refused(db_path: Path) -> None:
    with MetricsStore(db_path) as store:
        store.record_run_start("t")
    rows = read_query(db_path, "SELECT version FROM schema_version")
    assert [r["version"] for r in rows] == list(range(1, LATEST + 1))
    with db.connect(db_path, read_only=False) as con:
        assert db.migrate(con) == LATEST  # idempotent
        con.execute("INSERT INTO schema_version VALUES (?, 'from the future', now())",
                    [LATEST + 1])
    with db.connect(db_path, read_only=False) as con, pytest.raises(MetricsSchemaError):
        db.migrate(con)


def test_get_metrics_aggregates(db_path: Path) -> None:
    with MetricsStore(db_path) as store:
        for ms in (10.0, 20.0, 30.0):
            store.record_inference("a", round_trip_ms=ms, worker_id="w1", browser="chromium",
                                   backend="wasm", batch=2, queue_wait_ms=1.0)
        store.record_inference("b", round_trip_ms=40.0, worker_id="w2", backend="webgpu",
                               error_code="WORKER_LOST", retries=1)
        m = store.get_metrics()
    agg = m["aggregate"]
    assert agg["inferences"] == 4 and agg["errors"] == 1 and agg["items"] == 6
    assert agg["avg_inference_time"] == pytest.approx(0.020)
    assert agg["avg_throughput"] > 0
    assert m["models"]["a"]["avg_inference_time"] == pytest.approx(0.020)
    assert m["models"]["a"]["backends"] == {"wasm": 3}
    assert m["models"]["b"]["errors"] == 1 and m["models"]["b"]["retries"] == 1
    assert m["workers"]["w1"]["browser"] == "chromium" and m["workers"]["w1"]["items"] == 6
    assert set(m["workers"]) == {"w1", "w2"}


def test_recording_does_not_wait_for_a_locked_file(db_path: Path) -> None:
    """A foreign process holds the file: records go on at memory speed, then spool, then merge."""
    MetricsStore(db_path).close()  # create the schema
    holder = spawn("hold", str(db_path), "5")
    try:
        wait_line(holder, "held")
        # The writer waits up to 1 s for the lock on every pass; a record_* call that
        # shared that wait would take >= 1 s.
        store = MetricsStore(db_path, interval=0.1, lock_wait=1.0)
        took = []
        for i in range(2000):
            t0 = time.perf_counter()
            store.record_inference("m", round_trip_ms=1.0, batch=i)
            took.append(time.perf_counter() - t0)
        assert store.flush(10)
        stats = store.stats()
        assert stats["spooled_rows"] == 2000 and stats["committed_rows"] == 0
        assert stats["spool_files"] >= 1 and "locked" in stats["last_error"]
        # Generous bounds: this runs on a loaded 2-core machine beside other test suites.
        assert max(took) < 0.5 and sorted(took)[len(took) // 2] < 0.002
        with pytest.raises(MetricsLockedError):
            read_query(db_path, "SELECT 1", timeout=0.3)
        wait_line(holder, "released", timeout=10)
    finally:
        holder.kill()
        holder.wait()
    rows = store.query("SELECT batch FROM inferences ORDER BY batch")
    store.close()
    assert [r["batch"] for r in rows] == list(range(2000))
    assert not list(spool_dir(db_path).glob("*.jsonl"))


def test_spool_file_is_merged_exactly_once(db_path: Path, tmp_path: Path) -> None:
    """A crash between the merging commit and the unlink must not merge a spool twice."""
    MetricsStore(db_path).close()
    row = (db.utcnow(), "r", "m", None, None, None, None, 7, None, None, 1.5, 0, True, None)
    spool = write_spool(db_path, [("inferences", row)])
    saved = tmp_path / "saved.jsonl"
    shutil.copy(spool, saved)
    assert read_query(db_path, "SELECT count(*) AS n FROM inferences") == [{"n": 1}]
    assert not spool.exists()
    shutil.copy(saved, spool)  # as if the unlink never happened
    assert read_query(db_path, "SELECT count(*) AS n FROM inferences") == [{"n": 1}]
    assert not spool.exists()


def test_interval_flush_without_close(db_path: Path) -> None:
    store = MetricsStore(db_path, interval=0.1)
    store.record_inference("m", round_trip_ms=1.0)
    deadline = time.monotonic() + 5
    while store.stats()["committed_rows"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.stats()["committed_rows"] == 1
    assert read_query(db_path, "SELECT model FROM inferences") == [{"model": "m"}]
    store.close()


def test_a_running_writer_merges_other_processes_spools(db_path: Path) -> None:
    """What a CLI that met the lock spooled is merged by the server's writer on its next pass."""
    server = spawn("server", str(db_path), "2")
    try:
        wait_line(server, "ready")
        rows = [("inferences", (db.utcnow(), "other", "spooled", None, None, None, None, i,
                                None, None, 1.0, 0, True, None)) for i in range(10)]
        write_spool(db_path, rows)
        wait_line(server, "done", timeout=20)
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    assert not list(spool_dir(db_path).glob("*.jsonl"))  # merged by the server, not by us
    got = read_query(db_path, "SELECT batch FROM inferences WHERE model = 'spooled' ORDER BY 1")
    assert [r["batch"] for r in got] == list(range(10))
