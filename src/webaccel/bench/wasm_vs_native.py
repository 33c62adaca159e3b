"""``wasm-vs-native``: a model in a Chromium page on WASM vs native onnxruntime CPU.

For each of MiniLM, the NSFW CNN and the ViT saliency model whose weights are
available, the same ONNX file (``ensure_onnx("fp32")``) runs on the same
tensors (the model's own preprocessing) in two places, one thread each:

* a headless Chromium page, onnxruntime-web's WASM EP (``page_ms``: the time
  inside the page, without the bridge);
* native onnxruntime's CPU EP in this process (``session.run`` time), with
  ``intra_op_num_threads = inter_op_num_threads = 1``.

Both are warmed up (at least 20 runs: V8 tiers WASM code slowly), then page
and native runs alternate in the measured loop so machine load hits both
alike.  The ratio is the median over models of page median / native median.
``ctx.options["models"]`` (a comma list) restricts the models.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from webaccel.bench.concurrency import CANDIDATES, _available_models, _inputs
from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)

THREADS = 1
MIN_WARMUP = 20


def _wanted(ctx: BenchContext) -> list[str]:
    raw = ctx.options.get("models")
    if not raw:
        return list(CANDIDATES)
    names = [n.strip() for n in str(raw).split(",") if n.strip()]
    unknown = [n for n in names if n not in CANDIDATES]
    if unknown:
        raise BenchmarkUnavailable(f"unknown models {unknown}; choose from {list(CANDIDATES)}")
    return names


@benchmark(
    "wasm-vs-native",
    ratio_is="in-browser WASM latency / native onnxruntime CPU, same model and threads",
    better="lower",
)
def wasm_vs_native(ctx: BenchContext) -> Measurement:
    wanted = _wanted(ctx)
    models = [m for m in _available_models(len(CANDIDATES)) if m in wanted]
    if len(models) < 1:
        raise BenchmarkUnavailable(
            f"needs at least 1 registered model with weights among {wanted}; have none"
        )
    return asyncio.run(_measure(models, ctx))


class _Native:
    """One single-threaded native CPU session on the model's fp32 file, fed its own tensors."""

    def __init__(self, name: str) -> None:
        import onnxruntime as ort

        from webaccel.models import registry

        spec = registry.get(name)
        so = ort.SessionOptions()
        so.intra_op_num_threads = THREADS
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            str(spec.ensure_onnx("fp32")), so, providers=["CPUExecutionProvider"]
        )
        self.feeds = spec.processor().preprocess(_inputs(name), {}).tensors
        # The page fetches only the spec's outputs; fetch the same here.
        self.outputs = list(spec.output_names) if spec.output_names else None

    def run_ms(self) -> float:
        start = time.perf_counter()
        self.session.run(self.outputs, self.feeds)
        return (time.perf_counter() - start) * 1000


async def _measure(models: list[str], ctx: BenchContext) -> Measurement:
    from webaccel.engine import Engine

    warmup = max(ctx.warmup, MIN_WARMUP)
    repeat = max(ctx.repeat, 1)
    engine = Engine(
        max_connections=1, adaptive_scaling=False, default_platform="wasm", threads=THREADS
    )
    await engine.start()
    try:
        user_agent = ""
        backends: dict[str, str] = {}
        per_model: dict[str, dict[str, Any]] = {}

        async def page(name: str) -> float:
            nonlocal user_agent
            result = await engine.accelerate(name, _inputs(name), {"timeout": 300})
            user_agent = result.get("user_agent") or user_agent
            backends[name] = result["backend"]
            return float(result["page_ms"])

        for name in models:
            native = await asyncio.to_thread(_Native, name)
            for _ in range(warmup):
                await page(name)
                await asyncio.to_thread(native.run_ms)
            page_ms: list[float] = []
            native_ms: list[float] = []
            for _ in range(repeat):  # alternate: load on the machine hits both alike
                page_ms.append(await page(name))
                native_ms.append(await asyncio.to_thread(native.run_ms))
            page_s, native_s = summarize(page_ms), summarize(native_ms)
            per_model[name] = {
                "page_ms": page_s,
                "native_ms": native_s,
                "ratio": page_s["median"] / native_s["median"],
            }
            del native
    finally:
        await engine.close()
    if any(b != "wasm" for b in backends.values()):
        raise BenchmarkUnavailable(f"the page did not run on wasm: {backends}")
    return Measurement(
        ratio=statistics.median(m["ratio"] for m in per_model.values()),
        figures={
            "models": models,
            "threads": THREADS,
            "warmup": warmup,
            "user_agent": user_agent,
            "per_model": per_model,
        },
    )
