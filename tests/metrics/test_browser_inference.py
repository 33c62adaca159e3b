"""Real inferences in headless Chromium (onnxruntime-web, wasm) land as the right DuckDB rows."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from webaccel.errors import BackendUnavailableError
from webaccel.metrics.store import MetricsStore
from webaccel.pool.transport import ModelRef

from .conftest import tiny_onnx

pytestmark = pytest.mark.browser


async def test_browser_inferences_are_recorded(db_path: Path, tmp_path: Path) -> None:
    from webaccel.browsers import launch_worker
    from webaccel.server import WebAccelServer

    model = tiny_onnx(tmp_path / "tiny.onnx", dim=64)
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)  # as tiny_onnx
    store = MetricsStore(db_path)
    run_id = store.record_run_start("test")
    server = WebAccelServer()
    try:
        await server.start()
    except BackendUnavailableError as exc:
        pytest.skip(f"no onnxruntime-web assets: {exc.message}")
    expected = []
    try:
        worker = await launch_worker(server, "chromium")
        try:
            caps = worker.capabilities
            webgpu = caps.get("webgpu") if isinstance(caps.get("webgpu"), dict) else {}
            store.record_worker(worker.id, worker.browser, version=caps.get("userAgent"),
                                backends=worker.available_backends(), adapter=webgpu,
                                is_fallback=webgpu.get("isFallbackAdapter"))
            url = server.url + server.model_files.add("tiny", model)
            ref = ModelRef(key="tiny:wasm:fp32", name="tiny", url=url, backend="wasm")
            t0 = time.perf_counter()
            info = await worker.load_model(ref)
            store.record_model_load("tiny", ms=info.load_ms, backend=info.backend,
                                    worker_id=worker.id, precision="fp32", tier=info.source,
                                    nbytes=model.stat().st_size)
            assert (time.perf_counter() - t0) * 1000 >= info.load_ms * 0.5
            rng = np.random.default_rng(3)
            for batch in (1, 2, 4, 8, 1, 1):
                x = rng.standard_normal((batch, 64)).astype(np.float32)
                res = await worker.run(ref.key, {"x": x})
                (y,) = res.outputs.values()
                np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-4, atol=1e-4)
                store.record_inference("tiny", round_trip_ms=res.round_trip_ms,
                                       page_ms=res.page_ms, worker_id=worker.id,
                                       browser=worker.browser, backend="wasm", precision="fp32",
                                       batch=batch)
                expected.append((batch, res.page_ms, res.round_trip_ms))
        finally:
            await worker.close()
    finally:
        await server.stop()
    rows = store.query("SELECT * FROM inferences ORDER BY ts")
    loads = store.query("SELECT * FROM model_loads")
    workers = store.query("SELECT * FROM workers")
    store.close()
    assert [(r["batch"], r["page_ms"], r["round_trip_ms"]) for r in rows] == expected
    assert all(r["run_id"] == run_id and r["ok"] and r["browser"] == "chromium" for r in rows)
    assert all(0 < r["page_ms"] <= r["round_trip_ms"] for r in rows)
    assert loads[0]["model"] == "tiny" and loads[0]["ms"] > 0 and loads[0]["backend"] == "wasm"
    assert "Chrome" in workers[0]["browser_version"]
