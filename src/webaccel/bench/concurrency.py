"""``concurrency``: N different models served at once vs one after another.

The same pool (one browser worker per model, WASM, one thread each: docs/FACTS.md
found one single-threaded browser per core best here) serves R requests of
each model twice: first model by model (each stream waits for the previous
one), then all models' streams at once.  Streams are balanced in time: from
the warm-up's latencies each model gets as many requests as make its stream as
long as the slowest model's R requests (20 CNN runs of 175 ms next to 20 MiniLM
runs of 30 ms would otherwise cap the ratio at 1.2 whatever the pool did).
The ratio is total time one after another / total time concurrently (the
issue's row; 2 single-thread browsers on 2 cores measured a raw ceiling of
1.73 here).  The weighted speedup, sum over models of (its stream's time alone
/ its stream's time while all run), is in the figures; ``balance=false`` gives
every model R requests.
Default: 2 models on 2 workers (the issue's row; 2 cores here); ``workers=1`` puts
every model in one worker (runs of different models overlap in its page: the
pool's slots per worker).
Every model is warmed up on every worker first so V8's WASM tiering and model
loads are outside the timed runs.

On a GPU machine (``scripts/gpu/run.sh concurrency``) the workers are headless
WebGPU workers sharing one GPU: ``browser="node-webgpu"``, ``platform="webgpu"``,
and ``raw`` inputs (token ids and pixels as tensors: that machine has no
tokenizer files), ``content_addressed=False`` (nor the IPFS libraries).
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

CANDIDATES = ("minilm", "nsfw-cnn", "vit-saliency")


def _inputs(name: str, raw: bool = False) -> Any:
    rng = np.random.default_rng(0)
    if name == "minilm":
        if raw:  # 8 texts of 128 tokens, as the tokenizer would give them
            ids = rng.integers(1000, 29000, size=(8, 128)).astype(np.int64)
            ids[:, 0], ids[:, -1] = 101, 102
            ones = np.ones_like(ids)
            return {"input_ids": ids, "attention_mask": ones, "token_type_ids": 0 * ones}
        return ["Concurrency is about dealing with lots of things at once."]
    if raw:  # the CNN's own input: NHWC float pixels
        return {"input_0": rng.uniform(0, 1, size=(1, 224, 224, 3)).astype(np.float32)}
    return rng.integers(0, 255, size=(224, 224, 3), dtype=np.uint8)


def balanced_counts(typical_ms: dict[str, float], per_model: int, cap: int = 10) -> dict[str, int]:
    """Requests per model so that every stream lasts about as long as the slowest
    model's ``per_model`` requests (at most ``cap`` times ``per_model``)."""
    slowest = max(typical_ms.values())
    return {name: min(cap * per_model, max(per_model, round(per_model * slowest / ms)))
            for name, ms in typical_ms.items()}


def _available_models(wanted: int) -> list[str]:
    from webaccel.errors import WebAccelError
    from webaccel.models import registry

    names = []
    for name in CANDIDATES:
        try:
            registry.get(name).ensure_onnx("fp32")
        except WebAccelError:
            continue
        names.append(name)
    return names[:wanted]


@benchmark(
    "concurrency",
    ratio_is="N models served concurrently: total time one after another / total time at once, "
    "streams balanced in time",
    better="higher",
)
def concurrency(ctx: BenchContext) -> Measurement:
    models = _available_models(int(ctx.options.get("models", 2)))
    if len(models) < 2:
        raise BenchmarkUnavailable(
            f"needs at least 2 registered models with weights; have {models}"
        )
    return asyncio.run(_measure(models, ctx))


async def _measure(models: list[str], ctx: BenchContext) -> Measurement:
    from webaccel.engine import Engine

    per_model = max(ctx.repeat, 5)
    browser = ctx.options.get("browser", "chromium")
    platform = ctx.options.get("platform", "wasm")
    inputs = {name: _inputs(name, bool(ctx.options.get("raw", False))) for name in models}
    engine = Engine(
        # one worker per model by default; workers=1 serves every model from one
        # page (on a GPU: one Dawn device, several sessions)
        max_connections=int(ctx.options.get("workers", len(models))),
        adaptive_scaling=False,
        default_platform=platform,
        default_browser=browser,
        content_addressed=bool(ctx.options.get("content_addressed", True)),
    )
    await engine.start()
    try:
        async def stream(name: str) -> list[float]:
            times = []
            for _ in range(counts[name]):
                t = time.perf_counter()
                await engine.accelerate(name, inputs[name], {"timeout": 300})
                times.append((time.perf_counter() - t) * 1000)
            return times  # sum(times): the stream's own time

        warm_ms: dict[str, list[float]] = {name: [] for name in models}
        for name in models:  # warm-up: loads, shader/WASM tiering
            for _ in range(max(ctx.warmup, 5)):
                t = time.perf_counter()
                await engine.accelerate(name, inputs[name], {"timeout": 300})
                warm_ms[name].append((time.perf_counter() - t) * 1000)
        # the last warm-up runs are tiered up: their median sets each stream's length
        typical = {name: float(np.median(t[-3:])) for name, t in warm_ms.items()}
        counts = (balanced_counts(typical, per_model)
                  if ctx.options.get("balance", True) not in (False, "false", "0")
                  else {name: per_model for name in models})
        start = time.perf_counter()
        sequential = [await stream(name) for name in models]
        seq_s = time.perf_counter() - start
        start = time.perf_counter()
        concurrent = await asyncio.gather(*(stream(name) for name in models))
        conc_s = time.perf_counter() - start
        workers = engine.pool.stats()["workers"]
    finally:
        await engine.close()
    total = sum(counts.values())
    alone_s = [sum(t) / 1000 for t in sequential]
    shared_s = [sum(t) / 1000 for t in concurrent]
    return Measurement(
        ratio=seq_s / conc_s,
        figures={
            "models": models,
            "browser": browser,
            "platform": platform,
            "inputs": {
                m: {k: list(v.shape) for k, v in x.items()} if isinstance(x, dict) else "sample"
                for m, x in inputs.items()
            },
            "requests_per_model": counts,
            "warmup_latency_ms": typical,
            "workers": len(workers),
            "cores": os.cpu_count(),
            "sequential_s": seq_s,
            "concurrent_s": conc_s,
            "weighted_speedup": sum(a / b for a, b in zip(alone_s, shared_s, strict=True)),
            "stream_s_alone": dict(zip(models, alone_s, strict=True)),
            "stream_s_concurrent": dict(zip(models, shared_s, strict=True)),
            "sequential_throughput_per_s": total / seq_s,
            "concurrent_throughput_per_s": total / conc_s,
            "latency_ms_sequential": {
                m: summarize(t) for m, t in zip(models, sequential, strict=True)
            },
            "latency_ms_concurrent": {
                m: summarize(t) for m, t in zip(models, concurrent, strict=True)
            },
            "models_per_worker": {w: info["loaded"] for w, info in workers.items()},
        },
    )


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark's JSON line without the metrics store (for the GPU machine).

    python -m webaccel.bench.concurrency --browser node-webgpu --platform webgpu --raw --no-content
    """
    import argparse

    from webaccel.bench.runner import print_line

    p = argparse.ArgumentParser(prog="python -m webaccel.bench.concurrency")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--browser", default="chromium")
    p.add_argument("--platform", default="wasm")
    p.add_argument("--models", type=int, default=2)
    p.add_argument("--raw", action="store_true", help="tensors in (no tokenizer or image decoding)")
    p.add_argument("--no-content", action="store_true", help="serve files by path, not by CID")
    args = p.parse_args(argv)
    options = {
        "browser": args.browser,
        "platform": args.platform,
        "models": args.models,
        "raw": args.raw,
        "content_addressed": not args.no_content,
    }
    return print_line("concurrency", BenchContext(args.repeat, args.warmup, options=options))


if __name__ == "__main__":
    raise SystemExit(main())
