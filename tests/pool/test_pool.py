"""ResourcePool with fake workers (scheduler unit tests: no browser here by design)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from webaccel.errors import (
    BackendUnavailableError,
    CancelledError_,
    ModelNotFoundError,
    OverloadedError,
    TimeoutError_,
)
from webaccel.pool import (
    FakeLauncher,
    FakeWorker,
    InferenceResult,
    ResolvedModel,
    ResourcePool,
    ScalingPolicy,
    StaticResolver,
)
from webaccel.pool.transport import ModelRef, WorkerTransport


def ref(name: str, backend: str = "wasm", precision: str = "fp32") -> ModelRef:
    return ModelRef(
        key=f"{name}:{backend}:{precision}",
        name=name,
        url=f"/models/{name}",
        backend=backend,
        precision=precision,
    )


RESOLVER = StaticResolver(
    {
        "emb": ResolvedModel("emb", "text_embedding", (ref("emb"),)),
        "vit": ResolvedModel("vit", "vision", (ref("vit", "webgpu"), ref("vit"))),
        "asr": ResolvedModel("asr", "audio", (ref("asr"),)),
        "batchy": ResolvedModel(
            "batchy",
            "text_embedding",
            (ref("batchy"),),
            batchable=True,
            max_batch=4,
            max_wait_ms=30,
        ),
        "pre": ResolvedModel(
            "pre",
            "text_embedding",
            (ref("pre"),),
            preprocess=lambda text: {"x": np.array([[len(text)]], np.float32)},
            postprocess=lambda out, text: f"{text}:{int(out['y'][0, 0])}",
        ),
    }
)


def x(i: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), i, dtype=np.float32)}


def make_pool(launcher: FakeLauncher, **kw: Any) -> ResourcePool:
    kw.setdefault("heartbeat_interval", 0.01)
    kw.setdefault("connection_timeout", 2.0)
    kw.setdefault("request_timeout", 5.0)
    kw.setdefault("launchable", list(launcher.families))
    return ResourcePool(launcher=launcher, resolver=RESOLVER, **kw)


async def until(cond: Callable[[], bool], timeout: float = 2.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


async def pump(
    launcher: FakeLauncher, tasks: list[asyncio.Task[Any]], timeout: float = 3.0
) -> None:
    """Complete manual runs on live workers until every task is done."""
    end = time.monotonic() + timeout
    while not all(t.done() for t in tasks):
        for w in launcher.live():
            w.release()
        if time.monotonic() > end:
            raise AssertionError("tasks did not finish")
        await asyncio.sleep(0.001)


# ---------------------------------------------------------------------------
async def test_many_concurrent_requests_over_several_models_all_answered() -> None:
    launcher = FakeLauncher(
        {
            "chromium": {"backends": ("webgpu", "wasm"), "run_latency": 0.001},
            "firefox": {"backends": ("wasm",), "run_latency": 0.001},
        }
    )
    async with make_pool(
        launcher, max_connections=3, adaptive_scaling=False, launchable=["chromium", "firefox"]
    ) as pool:
        items = [(("emb", "vit", "asr")[i % 3], x(i)) for i in range(300)]
        results = await pool.execute_concurrent(items)
    assert len(results) == 300
    for i, r in enumerate(results):
        assert isinstance(r, InferenceResult), r
        np.testing.assert_array_equal(r.outputs["y"], np.full((1, 3), 2 * i, np.float32))
        assert r.attempts == 1
    served = {w.id: len(w.calls) for w in launcher.workers}
    assert sum(served.values()) == 300
    assert all(w.closed for w in launcher.workers)  # close() left nothing running


async def test_worker_killed_mid_request_nothing_lost() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(launcher, max_connections=2, adaptive_scaling=False) as pool:
        tasks = [asyncio.create_task(pool.run_inference("emb", x(i))) for i in range(10)]
        await until(lambda: sum(len(w.pending) for w in launcher.workers) == 2)
        victim = next(w for w in launcher.workers if w.pending)
        victim_inputs = float(victim.pending[0].inputs["x"][0, 0])
        victim.kill()
        await pump(launcher, tasks)
        results = [t.result() for t in tasks]
        await until(lambda: len(pool.workers) == 2)  # replaced (fixed-size pool)
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.outputs["y"], np.full((1, 3), 2 * i, np.float32))
        assert r.worker_id != victim.id
    moved = results[int(victim_inputs)]
    assert moved.attempts == 2
    assert len(pool.stats()["recovery_s"]) == 1
    assert len(launcher.workers) == 3


async def test_hung_worker_is_declared_lost_and_its_request_retried() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(
        launcher, max_connections=2, adaptive_scaling=False, request_timeout=0.05
    ) as pool:
        t = asyncio.create_task(pool.run_inference("emb", x(7), timeout=2.0))
        await until(lambda: any(w.pending for w in launcher.workers))
        stuck = next(w for w in launcher.workers if w.pending)
        stuck.hang()  # looks alive, never answers (a killed renderer)
        healthy = [w for w in launcher.workers if w is not stuck]
        await until(lambda: any(w.pending for w in healthy), timeout=2)
        for w in healthy:
            w.release()
        r = await t
    assert r.attempts == 2 and r.worker_id != stuck.id


async def test_full_pool_raises_overloaded_at_once() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(
        launcher, max_connections=1, adaptive_scaling=False, max_pending=5
    ) as pool:
        tasks = [asyncio.create_task(pool.run_inference("emb", x(i))) for i in range(5)]
        await until(lambda: pool.stats()["admitted"] == 5)
        t0 = time.perf_counter()
        with pytest.raises(OverloadedError):
            await pool.run_inference("emb", x(99))
        assert time.perf_counter() - t0 < 0.05
        await pump(launcher, tasks)
        assert all(t.result().outputs["y"][0, 0] == 2 * i for i, t in enumerate(tasks))
        assert pool.stats()["admitted"] == 0


async def test_ten_x_overload_fails_fast_and_stays_bounded() -> None:
    launcher = FakeLauncher({"chromium": {"run_latency": 0.002}})
    async with make_pool(
        launcher, max_connections=2, adaptive_scaling=False, max_pending=20
    ) as pool:
        results = await pool.execute_concurrent([("emb", x(i)) for i in range(200)])
        assert pool.stats()["pending"] <= 20
    ok = [r for r in results if isinstance(r, InferenceResult)]
    over = [r for r in results if isinstance(r, OverloadedError)]
    assert len(ok) + len(over) == 200 and len(over) >= 150 and ok


async def test_deadline_passes_while_queued() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(launcher, max_connections=1, adaptive_scaling=False) as pool:
        first = asyncio.create_task(pool.run_inference("emb", x(1)))
        await until(lambda: bool(launcher.workers[0].pending))
        t0 = time.perf_counter()
        with pytest.raises(TimeoutError_) as info:
            await pool.run_inference("emb", x(2), timeout=0.03)
        assert info.value.code == "TIMEOUT" and time.perf_counter() - t0 < 0.5
        launcher.workers[0].release()
        await first
        assert len(launcher.workers[0].calls) == 1  # the expired one never ran


async def test_priorities_are_respected() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(launcher, max_connections=1, adaptive_scaling=False) as pool:
        w: FakeWorker
        blocker = asyncio.create_task(pool.run_inference("emb", x(0)))
        await until(lambda: bool(launcher.workers[0].pending))
        w = launcher.workers[0]
        low = [
            asyncio.create_task(pool.run_inference("emb", x(10 + i), priority=0)) for i in range(3)
        ]
        await asyncio.sleep(0.005)
        high = asyncio.create_task(pool.run_inference("asr", x(99), priority=5))
        await until(lambda: pool.stats()["admitted"] == 5)
        await pump(launcher, [blocker, *low, high])
    order = [float(c.inputs["x"][0, 0]) for c in w.calls]
    assert order == [0, 99, 10, 11, 12]


async def test_batching_merges_and_splits() -> None:
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, max_connections=1, adaptive_scaling=False) as pool:
        results = await pool.execute_concurrent(
            [("batchy", x(i, rows=1)) for i in range(3)] + [("batchy", x(7, rows=1))]
        )
    w = launcher.workers[0]
    assert len(w.calls) == 1 and w.calls[0].inputs["x"].shape == (4, 3)
    for r, v in zip(results, [0, 1, 2, 7], strict=True):
        assert r.batch_size == 4
        np.testing.assert_array_equal(r.outputs["y"], np.full((1, 3), 2 * v, np.float32))


async def test_scaling_up_on_queue_and_down_when_idle() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    scaling = ScalingPolicy(
        min_workers=1, max_workers=4, queue_per_worker=2, max_queue_wait=10, idle_timeout=0.05
    )
    async with make_pool(launcher, scaling=scaling) as pool:
        assert len(pool.workers) == 1
        tasks = [asyncio.create_task(pool.run_inference("emb", x(i))) for i in range(10)]
        await until(lambda: len(pool.workers) == 4)
        await pump(launcher, tasks)
        await until(lambda: len(pool.workers) == 1, timeout=2)
        kinds = [e[1] for e in pool.events]
        assert kinds.count("launch") == 4 and kinds.count("drain") == 3
        await until(lambda: len(launcher.live()) == 1)  # retired workers were closed


async def test_cancel_frees_the_slot_and_never_runs() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(
        launcher, max_connections=1, adaptive_scaling=False, max_pending=2
    ) as pool:
        first = asyncio.create_task(pool.run_inference("emb", x(1)))
        await until(lambda: bool(launcher.workers[0].pending))
        doomed = asyncio.create_task(pool.run_inference("emb", x(2)))
        await until(lambda: pool.stats()["admitted"] == 2)
        doomed.cancel()
        await until(lambda: pool.stats()["admitted"] == 1)
        third = asyncio.create_task(pool.run_inference("emb", x(3)))  # fits again
        await pump(launcher, [first, third])
    assert [float(c.inputs["x"][0, 0]) for c in launcher.workers[0].calls] == [1, 3]


async def test_lease_holds_a_worker() -> None:
    launcher = FakeLauncher({"chromium": {"backends": ("webgpu", "wasm")}})
    async with make_pool(launcher, max_connections=1, adaptive_scaling=False) as pool:
        async with pool.get_connection("vision", "webgpu") as lease:
            assert isinstance(lease.worker, WorkerTransport)
            assert lease.backend == "webgpu" and lease.browser == "chromium"
            waiting = asyncio.create_task(pool.run_inference("emb", x(1)))
            await asyncio.sleep(0.02)
            assert not waiting.done()  # the only worker is leased
        r = await waiting
        assert r.outputs["y"][0, 0] == 2


async def test_preprocess_and_postprocess_through_the_resolver() -> None:
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, max_connections=1) as pool:
        r = await pool.run_inference("pre", "hello")
    assert r.outputs == "hello:10"


async def test_unknown_model_and_impossible_constraints_fail_fast() -> None:
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, max_connections=2) as pool:
        with pytest.raises(ModelNotFoundError):
            await pool.run_inference("nope", x(1))
        with pytest.raises(BackendUnavailableError):
            await pool.run_inference("emb", x(1), browser="firefox", timeout=2)


async def test_missing_preferred_browser_falls_back_to_default_and_says_why() -> None:
    launcher = FakeLauncher({"chromium": {}}, broken={"firefox"})
    async with make_pool(
        launcher, max_connections=2, min_connections=0, launchable=["chromium", "firefox"]
    ) as pool:
        r = await pool.run_inference("asr", x(1))
        assert r.browser == "chromium"
        assert any("no firefox worker" in why for why in r.reasons)
        info = await pool.explain("asr")
        assert info["preferred_browser"] == "firefox" and info["candidates"]
    assert "firefox" in launcher.attempts


async def test_close_cancels_pending_and_closes_every_worker() -> None:
    launcher = FakeLauncher({"chromium": {"manual": True}})
    pool = make_pool(launcher, max_connections=2, adaptive_scaling=False)
    await pool.start()
    tasks = [asyncio.create_task(pool.run_inference("emb", x(i))) for i in range(4)]
    await until(lambda: pool.stats()["admitted"] == 4)
    await pool.close(drain=False)
    for t in tasks:
        with pytest.raises(CancelledError_):
            await t
    assert all(w.closed for w in launcher.workers)
    with pytest.raises(BackendUnavailableError):
        await pool.run_inference("emb", x(1))


async def test_backend_that_keeps_failing_is_routed_away() -> None:
    launcher = FakeLauncher(
        {"chromium": {"backends": ("webgpu", "wasm"), "fail_backends": {"webgpu"}}}
    )
    async with make_pool(
        launcher, max_connections=1, adaptive_scaling=False, max_retries=3
    ) as pool:
        first = await pool.run_inference("vit", x(1))
        assert first.backend == "wasm" and first.attempts == 4  # 3 webgpu load failures
        again = await pool.run_inference("vit", x(2))
        assert again.backend == "wasm" and again.attempts == 1
        assert any("circuit open" in r for r in again.reasons)
        assert pool.stats()["counters"]["circuit_opened"] == 1


async def test_lru_eviction_with_a_memory_budget() -> None:
    sized = StaticResolver(
        {
            n: ResolvedModel(n, "text_embedding", (ModelRef(f"{n}:k", n, "/m", size_bytes=100),))
            for n in ("m1", "m2", "m3")
        }
    )
    launcher = FakeLauncher({"chromium": {}})
    pool = ResourcePool(
        launcher=launcher,
        resolver=sized,
        max_connections=1,
        adaptive_scaling=False,
        memory_budget_bytes=250,
        launchable=["chromium"],
        heartbeat_interval=0.01,
    )
    async with pool:
        for n in ("m1", "m2", "m3", "m2"):
            await pool.run_inference(n, x(1))
    w = launcher.workers[0]
    assert w.unloads == ["m1:k"] and w.loads == ["m1:k", "m2:k", "m3:k"]


async def test_close_during_launch_leaves_no_worker_behind() -> None:
    launcher = FakeLauncher({"chromium": {}}, launch_latency=0.05)
    pool = make_pool(launcher, max_connections=2, adaptive_scaling=False)
    await pool.start(wait=False)
    await asyncio.sleep(0.01)  # launches in flight
    await pool.close()
    await asyncio.sleep(0.08)
    assert all(w.closed for w in launcher.workers)


async def test_cancelled_lease_waiter_does_not_leak_the_worker() -> None:
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, max_connections=1, adaptive_scaling=False) as pool:
        async with pool.get_connection("vision", None):
            waiter = asyncio.create_task(pool.get_connection("vision", None).__aenter__())
            await asyncio.sleep(0.01)
            waiter.cancel()
        r = await pool.run_inference("emb", x(3), timeout=1)
        assert r.outputs["y"][0, 0] == 6


class _Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def record_inference(self, *a: Any, **k: Any) -> None:
        self.calls.append(("inference", a, k))

    def record_model_load(self, *a: Any, **k: Any) -> None:
        self.calls.append(("load", a, k))

    def record_worker(self, *a: Any, **k: Any) -> None:
        self.calls.append(("worker", a, k))


async def test_metrics_sink_sees_workers_loads_inferences_and_errors() -> None:
    sink = _Sink()
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(
        launcher, max_connections=1, adaptive_scaling=False, metrics=sink, max_pending=1
    ) as pool:
        t = asyncio.create_task(pool.run_inference("emb", x(1)))
        await until(lambda: bool(launcher.workers[0].pending))
        with pytest.raises(OverloadedError):
            await pool.run_inference("emb", x(2))
        launcher.workers[0].release()
        await t
    kinds = [c[0] for c in sink.calls]
    assert kinds.count("worker") == 1 and kinds.count("load") == 1
    inf = [c for c in sink.calls if c[0] == "inference"]
    assert {c[2].get("error_code") for c in inf} == {None, "OVERLOADED"}
    ok = next(c for c in inf if c[2].get("error_code") is None)
    assert ok[1] == ("emb",) and ok[2]["backend"] == "wasm" and ok[2]["retries"] == 0


async def test_inference_records_count_each_requests_rows_as_its_items(tmp_path: Any) -> None:
    # Seen on a real accelerator: accelerate(["a", "b"]) then accelerate("c") showed
    # items 2, as each record carried the requests merged into its run, not its rows.
    from webaccel.metrics.store import MetricsStore

    sink = _Sink()
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, max_connections=1, adaptive_scaling=False, metrics=sink) as pool:
        await pool.run_inference("batchy", x(1, rows=2))
        await pool.run_inference("batchy", x(2, rows=1))
        merged = await pool.execute_concurrent([("batchy", x(i, rows=1)) for i in range(4)])
    assert {r.batch_size for r in merged} == {4}  # the four ran as one batch...
    inf = [c[2]["batch"] for c in sink.calls if c[0] == "inference"]
    assert inf == [2, 1, 1, 1, 1, 1]  # ...yet each is one item, not four
    store = MetricsStore(tmp_path / "m.duckdb")
    try:
        for batch in inf:
            store.record_inference("batchy", round_trip_ms=1.0, batch=batch)
        agg = store.get_metrics()["aggregate"]
        assert (agg["inferences"], agg["items"]) == (6, 7)
    finally:
        store.close()


async def test_a_callers_run_timeout_outlasts_the_pools_hang_detection() -> None:
    # The pool counts a worker silent past request_timeout as hung; a caller that
    # knows its run is long (run_timeout) keeps the worker and gets its answer.
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(
        launcher, max_connections=1, adaptive_scaling=False, request_timeout=0.05
    ) as pool:
        t = asyncio.create_task(pool.run_inference("emb", x(3), timeout=5.0, run_timeout=2.0))
        await until(lambda: any(w.pending for w in launcher.workers))
        await asyncio.sleep(0.3)  # six times the pool's own run timeout
        (w,) = launcher.workers
        w.release()
        r = await t
        assert r.attempts == 1 and r.worker_id == w.id and r.outputs["y"][0, 0] == 6
        assert pool.stats()["counters"].get("worker_lost", 0) == 0


@pytest.mark.parametrize("slots", [1, 2, 3])
async def test_pipelined_dispatch_respects_the_in_flight_bound(slots: int) -> None:
    """Each worker holds up to ``slots_per_worker`` runs (the next one already in
    the page while the current one runs) and never more; a request cancelled while
    queued never reaches a worker."""
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(
        launcher, max_connections=2, adaptive_scaling=False, slots_per_worker=slots
    ) as pool:
        await until(lambda: len(launcher.live()) == 2)
        tasks = [asyncio.create_task(pool.run_inference("emb", x(i))) for i in range(20)]
        # Both workers fill up to the bound, and stop there while the rest queue.
        await until(lambda: all(len(w.pending) == slots for w in launcher.live()))
        await asyncio.sleep(0.02)
        assert [len(w.pending) for w in launcher.live()] == [slots, slots]
        assert pool.stats()["admitted"] == 20
        # Cancel queued requests (not the ones in the pages).
        doomed = [tasks[i] for i in range(2 * slots + 1, 20, 3)]
        doomed_ids = {float(i) for i in range(2 * slots + 1, 20, 3)}
        for t in doomed:
            t.cancel()
        await until(lambda: pool.stats()["admitted"] == 20 - len(doomed))
        # Finish runs one at a time: each completion lets exactly one more in.
        live = [t for t in tasks if t not in doomed]
        while not all(t.done() for t in live):
            for w in launcher.live():
                w.release(1)
            await asyncio.sleep(0.002)
            for w in launcher.live():
                assert len(w.pending) <= slots
    ran = [float(c.inputs["x"][0, 0]) for w in launcher.workers for c in w.calls]
    assert sorted(ran) == sorted(float(i) for i in range(20) if float(i) not in doomed_ids)
    assert not doomed_ids & set(ran)
    assert [w.peak_in_flight for w in launcher.workers] == [slots, slots]
    assert all(t.cancelled() for t in doomed)
    for i, t in enumerate(tasks):
        if t not in doomed:
            assert float(t.result().outputs["y"][0, 0]) == 2 * i



async def test_a_model_is_warmed_up_on_load_before_it_takes_traffic() -> None:
    dummy = {"x": np.full((1, 3), -1.0, np.float32)}
    warm = StaticResolver(
        {"emb": ResolvedModel("emb", "text_embedding", (ref("emb"),), warmup_inputs=(dummy,))}
    )
    launcher = FakeLauncher({"chromium": {}})
    async with ResourcePool(
        launcher=launcher,
        resolver=warm,
        max_connections=1,
        warmup_runs=5,
        heartbeat_interval=0.01,
        launchable=["chromium"],
    ) as pool:
        out = await pool.run_inference("emb", x(7))
        await pool.run_inference("emb", x(8))
        why = await pool.explain("emb")
    calls = [float(c.inputs["x"][0, 0]) for c in launcher.workers[0].calls]
    assert calls == [-1.0] * 5 + [7.0, 8.0]  # five dummy runs, then the traffic
    assert float(out.outputs["y"][0, 0]) == 14.0
    assert why["warmup"]["runs_on_load"] == 5
    (record,) = why["warmup"]["workers"][launcher.workers[0].id].values()
    assert record["runs"] == 5 and record["shapes"] == [{"x": [1, 3]}]


async def test_no_warm_up_when_turned_off_or_not_declared() -> None:
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, max_connections=1, warmup_runs=5) as pool:
        await pool.run_inference("emb", x(7))  # RESOLVER's emb declares no warm-up
        why = await pool.explain("emb")
    assert [float(c.inputs["x"][0, 0]) for c in launcher.workers[0].calls] == [7.0]
    assert why["warmup"]["runs_on_load"] == 0 and why["warmup"]["workers"] == {}


async def test_warm_up_stops_at_its_time_budget() -> None:
    dummy = {"x": np.full((1, 3), -1.0, np.float32)}
    warm = StaticResolver(
        {"emb": ResolvedModel("emb", "text_embedding", (ref("emb"),), warmup_inputs=(dummy,))}
    )
    launcher = FakeLauncher({"chromium": {"run_latency": 0.05}})
    async with ResourcePool(
        launcher=launcher,
        resolver=warm,
        max_connections=1,
        warmup_runs=100,
        warmup_budget_s=0.12,
        heartbeat_interval=0.01,
        launchable=["chromium"],
    ) as pool:
        await pool.run_inference("emb", x(7))
        why = await pool.explain("emb")
    (record,) = why["warmup"]["workers"][launcher.workers[0].id].values()
    assert 1 <= record["runs"] <= 5  # ~0.12 s of 0.05 s runs (fewer on a busy box), not 100
    assert len(launcher.workers[0].calls) == record["runs"] + 1
