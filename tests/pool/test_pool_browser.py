"""The pool over real headless Chromium workers (marked ``browser``).

Three models served concurrently with correct answers, and a chaos run that
SIGKILLs browsers while requests flow and finds every request answered.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.browser

onnx = pytest.importorskip("onnx")

from webaccel.bench.pool_saturation import write_mlp  # noqa: E402

MODELS = {"mlp16": (16, "text_embedding"), "mlp32": (32, "vision"), "mlp48": (48, "audio")}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, dict[str, Any]]]:
    try:
        from webaccel.browsers import launch_worker
        from webaccel.browsers.chromium import find_chromium
        from webaccel.server import WebAccelServer

        find_chromium(None)
    except Exception as exc:  # noqa: BLE001 - no browser stack here
        pytest.skip(f"needs Chromium and the browser launcher: {exc}")
    from webaccel.pool import ResolvedModel, StaticResolver
    from webaccel.pool.transport import ModelRef

    server = WebAccelServer()
    await server.start()
    weights: dict[str, Any] = {}
    resolver = StaticResolver()
    for i, (name, (width, mtype)) in enumerate(MODELS.items()):
        weights[name] = (width, *write_mlp(tmp_path / f"{name}.onnx", width, i))
        path = server.model_files.add(name, tmp_path / f"{name}.onnx")
        ref = ModelRef(key=f"{name}:wasm:fp32", name=name, url=f"{server.url}{path}")
        resolver.register(ResolvedModel(name, mtype, (ref,)))

    async def launch(family: str) -> Any:
        return await launch_worker(server, family)

    try:
        yield launch, resolver, weights
    finally:
        await server.stop()


async def _warm_every_worker(pool: Any, rng: np.random.Generator, limit: float = 90) -> None:
    """Warm every worker before measuring: a page's first load compiles
    onnxruntime-web's WASM, which takes seconds on a busy 2-core machine.
    The pool places models itself (one per free worker, and it prefers
    waiting for a loaded worker to loading a copy), so the warm state is:
    every worker holds a model and every model is loaded somewhere."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        loaded = [set(w["loaded"]) for w in pool.stats()["workers"].values()]
        everywhere = set().union(*loaded) if loaded else set()
        if (
            len(loaded) == len(pool.workers)
            and all(loaded)
            and len({k.split(":")[0] for k in everywhere}) == len(MODELS)
        ):
            return
        items = [
            (name, {"x": rng.standard_normal((1, width)).astype(np.float32)})
            for name, (width, _) in MODELS.items()
            for _ in range(4 * len(pool.workers))
        ]
        await pool.execute_concurrent(items, return_exceptions=False)
    raise AssertionError("workers did not all load every model in time")


def _want(weights: dict[str, Any], name: str, x: np.ndarray) -> np.ndarray:
    _, w1, w2 = weights[name]
    return np.maximum(x @ w1, 0) @ w2


async def test_three_models_concurrently(served: tuple[Any, Any, dict[str, Any]]) -> None:
    from webaccel.pool import ResourcePool

    launch, resolver, weights = served
    rng = np.random.default_rng(0)
    items = []
    for i in range(60):
        name = list(MODELS)[i % 3]
        items.append((name, {"x": rng.standard_normal((1, MODELS[name][0])).astype(np.float32)}))
    async with ResourcePool(
        max_connections=2,
        adaptive_scaling=False,
        launcher=launch,
        resolver=resolver,
        launchable=["chromium"],
        connection_timeout=60,
    ) as pool:
        results = await pool.execute_concurrent(items, return_exceptions=False)
        assert len(pool.workers) == 2
    for (name, inp), r in zip(items, results, strict=True):
        np.testing.assert_allclose(r.outputs["y"], _want(weights, name, inp["x"]), atol=1e-4)
        assert r.browser == "chromium" and r.backend == "wasm"
    from webaccel.browsers.process import live_pids

    assert live_pids() == []


@pytest.mark.slow
async def test_chaos_sigkill_browsers_nothing_lost(
    served: tuple[Any, Any, dict[str, Any]], tmp_path: Path
) -> None:
    from webaccel.browsers.process import live_pids
    from webaccel.metrics.store import MetricsStore
    from webaccel.pool import ResourcePool

    launch, resolver, weights = served
    size, kills, duration = 3, 3, 6.0
    store = MetricsStore(tmp_path / "chaos.duckdb")
    pool = ResourcePool(
        metrics=store,
        max_connections=size,
        adaptive_scaling=False,
        launcher=launch,
        resolver=resolver,
        launchable=["chromium"],
        connection_timeout=60,
        heartbeat_interval=0.1,
        max_retries=5,
        request_timeout=20,
    )
    rng = np.random.default_rng(1)
    answered: list[tuple[str, np.ndarray, Any]] = []
    errors: list[BaseException] = []
    killed: list[tuple[float, str, int]] = []
    async with pool:
        await _warm_every_worker(pool, rng)
        end = time.monotonic() + duration

        async def client(k: int) -> None:
            name = list(MODELS)[k % 3]
            while time.monotonic() < end:
                x = rng.standard_normal((1, MODELS[name][0])).astype(np.float32)
                try:
                    r = await pool.run_inference(name, {"x": x})
                except Exception as exc:  # noqa: BLE001 - counted, the test asserts none
                    errors.append(exc)
                    continue
                answered.append((name, x, r))

        async def killer() -> None:
            chooser = random.Random(7)
            for _ in range(kills):
                await asyncio.sleep(duration / (kills + 1))
                victims = [w for w in pool.workers.values() if getattr(w, "process", None)]
                w = chooser.choice(victims)
                pid = w.process.pid
                killed.append((time.monotonic(), w.id, pid))
                os.killpg(pid, signal.SIGKILL)  # the whole browser, like a crash

        await asyncio.gather(killer(), *(client(k) for k in range(12)))
        # Back to its size: every killed browser was replaced.
        deadline = time.monotonic() + 30
        while len(pool.workers) < size and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(pool.workers) == size
        events = list(pool.events)
        counters = pool.stats()["counters"]
        assert len(pool.stats()["recovery_s"]) == kills
    assert not errors, errors[:3]
    assert len(answered) >= 200
    for name, x, r in answered:
        np.testing.assert_allclose(r.outputs["y"], _want(weights, name, x), atol=1e-4)
    killed_ids = {wid for _, wid, _ in killed}
    lost = [e for e in events if e[1] == "lost"]
    assert {e[2].split(":")[0] for e in lost} >= killed_ids
    # Recovery: each kill -> the next worker ready after it.
    ready_times = [t for t, kind, _ in events if kind == "ready"]
    recovery = [
        min((r for r in ready_times if r > t), default=float("inf")) - t for t, _, _ in killed
    ]
    assert all(r < 15 for r in recovery), recovery
    print(
        f"chaos: {len(answered)} answered, 0 lost, {counters.get('retried', 0)} retried, "
        f"recovery s: {[round(r, 2) for r in recovery]}"
    )
    # Recovery time and error rate land in the metrics store beside every inference.
    store.record_benchmark(
        {
            "benchmark": "chaos",
            "ratio": len(errors) / max(1, len(answered) + len(errors)),
            "ratio_is": "failed / all requests while browsers were SIGKILLed",
            "figures": {
                "recovery_s": recovery,
                "kills": kills,
                "answered": len(answered),
                "retried": counters.get("retried", 0),
            },
        },
        better="lower",
    )
    store.flush(10)
    (row,) = store.query("SELECT ratio, figures FROM benchmarks WHERE benchmark = 'chaos'")
    assert row["ratio"] == 0.0 and "recovery_s" in row["figures"]
    (n,) = store.query("SELECT count(*) AS n FROM inferences WHERE ok")
    assert n["n"] >= len(answered)
    store.close()
    await asyncio.sleep(0.5)
    assert live_pids() == []
    for _, _, pid in killed:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
