"""``pool-saturation``: how busy a real pool keeps its workers under sustained overload.

Ratio: busy-worker fraction = (time each worker had a run in flight: the union
of its runs' round trips, so pipelined runs are not counted twice) / (workers x window)
while more clients than the pool can serve send back to back; higher is
better (1.0 = no worker ever idles while requests wait).  Figures: p50/p99
queue wait, throughput and the spread over windows; then a burst of 10x
``max_pending`` requests at once: how many were refused with OVERLOADED and
how fast (admission must fail fast, never hang).

It measures real browser workers (``webaccel.browsers.launch_worker``) on a
tiny MLP built here (so no model download is needed) and checks the first
answers against numpy.  Without a real launcher, browser or onnxruntime-web
assets it raises :class:`BenchmarkUnavailable` -- the fake worker in
:mod:`webaccel.pool.fake` is never measured.

Options (``ctx.options``): ``workers`` (default 2: docs/FACTS.md found one
single-thread browser per core best), ``window_s`` (2.0), ``windows``
(``min(ctx.repeat, 5)``), ``overload`` (clients per worker, 8),
``max_pending`` (= clients: the windows measure a full queue, not refusals;
clients spinning on refusals would steal the browsers' CPU on a small machine),
``slots`` (runs in flight per worker; default: the Engine's, 2),
``adaptive_depth`` (default true: the pool may pipeline a short model's runs
deeper than ``slots``, see ``PoolState.run_depth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)
from webaccel.errors import BackendUnavailableError, OverloadedError, WebAccelError

HIDDEN = 64


def write_mlp(path: Path, width: int = HIDDEN, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x[N,width] -> relu(x @ W1) @ W2; written as ONNX, returns the weights for checking."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((width, width)).astype(np.float32) / 8
    w2 = rng.standard_normal((width, width)).astype(np.float32) / 8
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        f"mlp{width}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w1, w2


def _launcher_available() -> Any:
    try:
        from webaccel.browsers import launch_worker
    except ImportError as exc:
        raise BenchmarkUnavailable(f"needs browser workers ({exc})") from None
    return launch_worker


async def _measure(ctx: BenchContext, launch_worker: Any) -> Measurement:
    from webaccel.engine import PIPELINE_SLOTS
    from webaccel.pool import ResolvedModel, ResourcePool, StaticResolver
    from webaccel.pool.transport import ModelRef
    from webaccel.server import WebAccelServer

    opts = ctx.options
    n_workers = int(opts.get("workers", 2))
    window = float(opts.get("window_s", 2.0))
    windows = int(opts.get("windows", max(1, min(ctx.repeat, 5))))
    clients = n_workers * int(opts.get("overload", 8))
    max_pending = int(opts.get("max_pending", clients))

    tmp = Path(tempfile.mkdtemp(prefix="webaccel-bench-"))
    w1, w2 = write_mlp(tmp / "mlp.onnx")
    server = WebAccelServer()
    try:
        await server.start()
    except BackendUnavailableError as exc:
        raise BenchmarkUnavailable(f"needs browser workers: {exc.message}") from None
    try:
        path = server.model_files.add("bench-mlp", tmp / "mlp.onnx")
        ref = ModelRef(key="bench-mlp:wasm:fp32", name="bench-mlp", url=f"{server.url}{path}")
        resolver = StaticResolver(
            {"bench-mlp": ResolvedModel("bench-mlp", "text_embedding", (ref,))}
        )

        async def launch(family: str) -> Any:
            return await launch_worker(server, family)

        pool = ResourcePool(
            max_connections=n_workers,
            adaptive_scaling=False,
            launcher=launch,
            resolver=resolver,
            launchable=["chromium"],
            max_pending=max_pending,
            request_timeout=30.0,
            connection_timeout=60.0,
            slots_per_worker=int(ctx.options.get("slots", PIPELINE_SLOTS)),
            adaptive_depth=bool(ctx.options.get("adaptive_depth", True)),
        )
        try:
            async with pool:
                return await _drive(pool, n_workers, window, windows, clients, w1, w2, max_pending)
        except BackendUnavailableError as exc:  # no browser binary here
            raise BenchmarkUnavailable(f"needs browser workers: {exc.message}") from None
    finally:
        await server.stop()


async def _drive(
    pool: Any,
    n_workers: int,
    window: float,
    windows: int,
    clients: int,
    w1: np.ndarray,
    w2: np.ndarray,
    max_pending: int,
) -> Measurement:
    rng = np.random.default_rng(1)

    # Warm up every worker (V8 tiers WASM up over ~20 runs, docs/FACTS.md) and check answers.
    warm = [rng.standard_normal((1, HIDDEN)).astype(np.float32) for _ in range(20 * n_workers)]
    results = []
    for i in range(0, len(warm), max_pending):  # stay under the admission bound
        results += await pool.execute_concurrent(
            [("bench-mlp", {"x": v}) for v in warm[i : i + max_pending]], return_exceptions=False
        )
    for v, r in zip(warm, results, strict=True):
        want = np.maximum(v @ w1, 0) @ w2
        if not np.allclose(r.outputs["y"], want, atol=1e-4):
            raise WebAccelError("pool-saturation: a worker returned a wrong answer")
    if len(pool.workers) < n_workers:
        raise BenchmarkUnavailable(f"only {len(pool.workers)} of {n_workers} workers started")
    # Affinity keeps traffic on workers that loaded the model; make sure all did,
    # or a cold load (ORT WASM compile: seconds) would land in the measured window.
    for _ in range(50):
        loaded = [w["loaded"] for w in pool.stats()["workers"].values()]
        if len(loaded) >= n_workers and all(loaded):
            break
        extra = [rng.standard_normal((1, HIDDEN)).astype(np.float32) for _ in range(max_pending)]
        await pool.execute_concurrent([("bench-mlp", {"x": v}) for v in extra])

    fractions: list[float] = []
    page_fractions: list[float] = []
    waits: list[float] = []
    done_total = 0
    refused_total = 0
    for _ in range(windows):
        busy: dict[str, list[tuple[float, float]]] = {}  # worker -> round-trip intervals
        page_ms = 0.0
        done = 0
        refused = 0
        start = time.perf_counter()
        end = start + window

        async def client(
            end: float = end, busy: dict[str, list[tuple[float, float]]] = busy
        ) -> None:
            nonlocal page_ms, done, refused
            x = rng.standard_normal((1, HIDDEN)).astype(np.float32)
            while time.perf_counter() < end:
                try:
                    r = await pool.run_inference("bench-mlp", {"x": x})
                except OverloadedError:
                    refused += 1
                    await asyncio.sleep(0.001)  # a real client backs off
                    continue
                t = time.perf_counter()
                busy.setdefault(r.worker_id, []).append((t - r.run_ms / 1000, t))
                page_ms += r.page_ms or 0.0
                done += 1
                waits.append(r.queue_ms)

        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - start
        # A worker is busy while it has at least one run in flight: the union of
        # its runs' round trips (runs pipelined into one page overlap; counting
        # them twice would flatter the pool).
        busy_s = sum(_union(iv, start, start + elapsed) for iv in busy.values())
        fractions.append(min(1.0, busy_s / (n_workers * elapsed)))
        page_fractions.append(min(1.0, page_ms / (n_workers * elapsed * 1000)))
        done_total += done
        refused_total += refused
    burst = await _burst(pool, rng, 10 * max_pending)
    spread = summarize(fractions)
    wait = summarize(waits) if waits else {}
    ordered = sorted(waits)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else None
    return Measurement(
        ratio=spread["median"],
        figures={
            "busy_fraction": spread,
            "page_compute_fraction": summarize(page_fractions),
            "slots_per_worker": pool.slots_per_worker,
            "run_depth": pool.run_depth("bench-mlp"),
            "queue_wait_ms_p50": wait.get("median"),
            "queue_wait_ms_p99": p99,
            "throughput_per_s": done_total / (window * windows),
            "completed": done_total,
            "refused_overloaded": refused_total,
            "workers": n_workers,
            "clients": clients,
            "max_pending": max_pending,
            "window_s": window,
            "windows": windows,
            "model": f"MLP {HIDDEN}x{HIDDEN}x{HIDDEN} fp32 wasm, batch 1",
            "burst": burst,
            "stats": pool.stats()["counters"],
        },
    )


def _union(intervals: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Seconds of [lo, hi] covered by at least one of ``intervals``."""
    total = 0.0
    current: tuple[float, float] | None = None  # the run of overlapping intervals so far
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if b <= a:
            continue
        if current is None or a > current[1]:
            if current is not None:
                total += current[1] - current[0]
            current = (a, b)
        else:
            current = (current[0], max(current[1], b))
    if current is not None:
        total += current[1] - current[0]
    return total


async def _burst(pool: Any, rng: np.random.Generator, n: int) -> dict[str, Any]:
    """Offer ``n`` requests at once: the excess must be refused at once, not queued."""
    x = rng.standard_normal((1, HIDDEN)).astype(np.float32)
    refusal_ms: list[float] = []

    async def one() -> bool:
        t0 = time.perf_counter()
        try:
            await pool.run_inference("bench-mlp", {"x": x})
        except OverloadedError:
            refusal_ms.append((time.perf_counter() - t0) * 1000)
            return False
        return True

    start = time.perf_counter()
    ok = await asyncio.gather(*(one() for _ in range(n)))
    return {
        "offered": n,
        "accepted": sum(ok),
        "refused": len(refusal_ms),
        "refusal_ms": summarize(refusal_ms) if refusal_ms else None,
        "burst_s": time.perf_counter() - start,
    }


@benchmark(
    "pool-saturation",
    ratio_is="busy worker time / (workers x wall time) under overload",
    better="higher",
)
def pool_saturation(ctx: BenchContext) -> Measurement:
    launch_worker = _launcher_available()
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        raise BenchmarkUnavailable("call pool-saturation outside a running event loop")
    return asyncio.run(_measure(ctx, launch_worker))
