"""``precision``: int4 bytes / fp32 bytes of MiniLM, with every variant's measured cost.

Each variant (fp16, int8, int4, mixed) is built from the same fp32 export and
compared with it on varied sentences, one feed per sentence (batch 1, no
padding): cosine of the mean-pooled embeddings (mean and worst), bytes, native
onnxruntime CPU load time and latency (median over ``ctx.repeat`` runs after
``ctx.warmup``).  In-browser latency per variant is not measured here yet; no
figure pretends to be it.

Options (``ctx.options``): ``threads`` (intra-op threads, default 1, the WASM
default on this class of machine), ``mixed`` (False skips the ~15 s mixed
search), ``mixed_target`` (worst cosine the mixed variant must meet, 0.99),
``block_size`` (int4 block, 32).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from webaccel import paths
from webaccel.bench.core import BenchContext, BenchmarkUnavailable, Measurement, benchmark

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "How do I reset my password?",
    "Quantum entanglement links particles across distance.",
    "I love pizza",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "El gato duerme en la alfombra.",
    "def foo(x): return x * 2",
    "Photosynthesis converts light into chemical energy in plants.",
    "ok",
    "The committee will reconvene next week to discuss the budget proposal in detail.",
    "Neural networks learn representations from data.",
]


def _fp32_minilm() -> Path:
    try:
        from webaccel.models import registry
    except ImportError as exc:  # pragma: no cover - the registry ships with the package
        raise BenchmarkUnavailable(f"model registry missing: {exc}") from exc
    try:
        return registry.get("minilm").ensure_onnx("fp32")
    except Exception as exc:
        raise BenchmarkUnavailable(f"cannot build the fp32 minilm export: {exc}") from exc


def _feeds() -> list[dict[str, Any]]:
    from webaccel.models.text import TextEmbeddingProcessor

    proc = TextEmbeddingProcessor()
    return [proc.preprocess(s, {}).tensors for s in SENTENCES]


@benchmark("precision", ratio_is="int4 bytes / fp32 bytes (minilm)", better="lower")
def run(ctx: BenchContext) -> Measurement:
    from webaccel.models import precision as P

    opts = ctx.options
    threads = int(opts.get("threads", 1))
    block = int(opts.get("block_size", 32))
    fp32 = _fp32_minilm()
    feeds = _feeds()
    out_dir = (ctx.home / "models" if ctx.home else paths.subdir("models")) / "minilm" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = P.run_feeds(P.session(fp32, threads=threads), feeds)

    figures: dict[str, Any] = {"threads": threads, "block_size": block, "sentences": len(feeds),
                               "latency_is": "native onnxruntime CPU ms per session.run, batch 1",
                               "variants": {}}
    precisions = ["fp32", "fp16", "int8", "int4"] + (["mixed"] if opts.get("mixed", True) else [])
    for p in precisions:
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if p == "fp32":
            path = fp32
        elif p == "mixed":
            path = out_dir / "model.mixed.onnx"
            plan = P.to_mixed(fp32, path, feeds, target=float(opts.get("mixed_target", 0.99)),
                              block_size=block, threads=threads)
            extra = {"plan": plan.choice, "sensitivity": plan.sensitivity,
                     "target": plan.target, "met_target": plan.met_target}
        else:
            path = P.make_variant(fp32, p, out_dir / f"model.{p}.onnx", block_size=block)
        build_s = time.perf_counter() - t0
        rep = P.evaluate(fp32, path, feeds, precision=p, repeat=ctx.repeat,
                         warmup=ctx.warmup, threads=threads, ref_outputs=ref)
        figures["variants"][p] = {
            "bytes": rep.bytes,
            "ratio_to_fp32": round(rep.ratio_to_fp32, 4),
            "cosine_mean": round(rep.accuracy_mean, 6),
            "cosine_worst": round(rep.accuracy_worst, 6),
            "native_latency_ms": {k: round(v, 3) for k, v in rep.latency_ms.items()},
            "native_load_ms": round(rep.load_ms, 1),
            "build_s": round(build_s, 2),
            **extra,
        }
    v = figures["variants"]
    ratio = v["int4"]["bytes"] / v["fp32"]["bytes"]
    figures["target"] = {"int4_ratio_max": 0.2, "cosine_min": 0.95,
                         "met_by_mean": ratio <= 0.2 and v["int4"]["cosine_mean"] >= 0.95,
                         "met_by_worst": ratio <= 0.2 and v["int4"]["cosine_worst"] >= 0.95}
    return Measurement(ratio=ratio, figures=figures)
