"""``pipeline``: a split model with micro-batches in flight vs the same split one batch at a time.

MiniLM is split into ``stages`` (default 2) stage models, each placed by the
pool on its own worker (WASM, one thread): a Chromium page, or with
``browser=node-webgpu`` the same page runtime in Node (the GPU machine has no
browser; scripts/gpu/run.sh pipeline).  The same micro-batches
(``micro_batches`` of ``batch`` texts; by default 16 per stage boundary, see
``fill_drain_ceiling`` in the figures) go through it three ways, the modes
interleaved in every repeat so the machine's load drifts over all of them alike:

* ``pipelined``: up to 2 x stages micro-batches in flight, so every stage is busy;
* ``one_at_a_time``: the same split, each micro-batch through all stages before
  the next starts (in_flight = 1);
* ``unsplit``: the whole model in one session on one worker, one micro-batch at a time.

The ratio is the throughput pipelined / one at a time (DESIGN.md); pipelined /
unsplit is in the figures.  Outputs are checked: pipelined and one-at-a-time
results are identical, and equal the unsplit model's.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import numpy as np

from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)

WORDS = [
    "music", "guitar", "crowd", "stage", "light", "song",
    "night", "city", "river", "bridge", "morning", "coffee",
]


def _texts(n: int) -> list[str]:
    return [
        f"Sentence {i}: the {WORDS[i % len(WORDS)]} and the {WORDS[(3 * i) % len(WORDS)]} "
        + " ".join(WORDS[: 4 + i % 8])
        for i in range(n)
    ]


@benchmark(
    "pipeline",
    ratio_is="throughput of the split model with micro-batches in flight / the same split "
    "one batch at a time",
    better="higher",
)
def pipeline(ctx: BenchContext) -> Measurement:
    if ctx.options.get("browser", "chromium") == "chromium":
        try:
            from webaccel.browsers.chromium import find_chromium

            find_chromium(None)
        except Exception as exc:  # noqa: BLE001 - no browser here
            raise BenchmarkUnavailable(f"needs Chromium: {exc}") from None
    return asyncio.run(_measure(ctx))


async def _measure(ctx: BenchContext) -> Measurement:
    from webaccel.engine import Engine
    from webaccel.models import registry
    from webaccel.sharding.run import Pipeline
    from webaccel.sharding.stages import split_model

    stages = int(ctx.options.get("stages", 2))
    # Filling and draining the pipeline costs stages - 1 steps, so n micro-batches can
    # go at most n x stages / (n + stages - 1) times faster: 16 per stage boundary
    # keeps that ceiling within ~6% of the stage count (4 stages: 48 -> 3.76).
    n_mb = int(ctx.options.get("micro_batches", 16 * max(1, stages - 1)))
    batch = int(ctx.options.get("batch", 4))
    platform = ctx.options.get("platform", "wasm")
    browser = ctx.options.get("browser", "chromium")
    repeats = max(1, ctx.repeat)
    spec = registry.get("minilm")
    split = await asyncio.to_thread(split_model, "minilm", stages)
    proc = spec.processor()
    texts = _texts(n_mb * batch)
    feeds = [proc.preprocess(texts[i : i + batch], {}).tensors for i in range(0, len(texts), batch)]
    engine = Engine(max_connections=stages, adaptive_scaling=False,
                    default_platform=platform, default_browser=browser)
    await engine.start()
    times: dict[str, list[float]] = {"pipelined": [], "one_at_a_time": [], "unsplit": []}
    try:
        async with Pipeline(engine.pool, split, platform=platform, browser=browser) as pipe, \
                engine.pool.session("minilm", precision="fp32", platform=platform,
                                    browser=browser, record=False) as whole:

            async def unsplit() -> list[dict[str, np.ndarray]]:
                out = []
                for f in feeds:
                    res = await whole.run(whole.variant.key, f, timeout=300)
                    out.append(dict(res.outputs))
                return out

            modes: dict[str, Any] = {
                "pipelined": lambda: pipe.run(feeds),
                "one_at_a_time": lambda: pipe.run(feeds, in_flight=1),
                "unsplit": unsplit,
            }
            results: dict[str, list[dict[str, np.ndarray]]] = {}
            for name, fn in modes.items():  # warm-up: V8's WASM tiering, first-run allocations
                for _ in range(max(1, min(ctx.warmup, 2))):
                    results[name] = await fn()
            order = list(modes)
            for r in range(repeats):
                for name in order[r % 3 :] + order[: r % 3]:
                    t = time.perf_counter()
                    results[name] = await modes[name]()
                    times[name].append(time.perf_counter() - t)
            report = pipe.report()
            whole_worker = whole.worker_id
    finally:
        await engine.close()
    key = split.stages[-1].outputs[0]
    same = all(
        np.array_equal(a[key], b[key])
        for a, b in zip(results["pipelined"], results["one_at_a_time"], strict=True)
    )
    diff = max(
        float(np.abs(a[key] - b[key]).max())
        for a, b in zip(results["pipelined"], results["unsplit"], strict=True)
    )
    if not same or diff > 1e-5:
        raise AssertionError(f"outputs differ: pipelined == one at a time: {same}; "
                             f"max abs diff to unsplit {diff}")
    med = {k: summarize(v)["median"] for k, v in times.items()}
    items = n_mb * batch
    return Measurement(
        ratio=med["one_at_a_time"] / med["pipelined"],
        figures={
            "stages": stages,
            "layers_per_stage": list(split.sizes),
            "micro_batches": n_mb,
            "fill_drain_ceiling": n_mb * stages / (n_mb + stages - 1),
            "batch": batch,
            "in_flight": 2 * stages,
            "items_per_s": {k: items / v for k, v in med.items()},
            "seconds": {k: summarize(v) for k, v in times.items()},
            "pipelined_over_unsplit": med["unsplit"] / med["pipelined"],
            "one_at_a_time_over_unsplit": med["unsplit"] / med["one_at_a_time"],
            "max_abs_diff_vs_unsplit": diff,
            "stage_workers": [s["worker_id"] for s in report],
            "unsplit_worker": whole_worker,
            "platform": platform,
            "browser": browser,
            "load_avg": os.getloadavg(),
            "cores": os.cpu_count(),
        },
    )
