"""``precision``: int4 bytes / fp32 bytes of MiniLM, with every variant's measured cost.

Each variant (fp16, int8, int4, mixed) is built from the same fp32 export and
compared with it on varied sentences, one feed per sentence (batch 1, no
padding): cosine of the mean-pooled embeddings (mean and worst), bytes, native
onnxruntime CPU load time and latency (median over ``ctx.repeat`` runs after
``ctx.warmup``), and the same run in onnxruntime-web WASM under Node.
In-browser latency per variant is not measured here yet (it needs the pool);
no figure pretends to be it.

The other models' variants go to ``figures["models"]``: ``nsfw-cnn`` (top-1
agreement and max |p - p_fp32| on synthetic pictures), ``vit-saliency``
(cosine of the saliency maps), ``whisper-tiny-en`` (word error rate against
the fp32 transcript of beckett.wav, and the transcription's wall time).

Options (``ctx.options``): ``threads`` (intra-op threads, default 1, the WASM
default on this class of machine), ``mixed`` (False skips the ~15 s mixed
search), ``mixed_target`` (worst cosine the mixed variant must meet, 0.99),
``block_size`` (int4 block, default ``precision.DEFAULT_BLOCK_SIZE``), ``models``
(which other models to measure; default all three, ``[]`` for MiniLM only),
``node_wasm`` (False skips the MiniLM latency in onnxruntime-web's WASM build
under Node, 1 thread, which is reported as ``node_wasm_latency_ms``: the page's
kernels without the page).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from webaccel import paths
from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)
from webaccel.models import calibration
from webaccel.models.precision import Metric

SENTENCES = calibration.SENTENCES


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
    block = int(opts.get("block_size", P.DEFAULT_BLOCK_SIZE))
    fp32 = _fp32_minilm()
    feeds = _feeds()
    out_dir = (ctx.home / "models" if ctx.home else paths.subdir("models")) / "minilm" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    ref = P.run_feeds(P.session(fp32, threads=threads), feeds)

    figures: dict[str, Any] = {
        "threads": threads,
        "block_size": block,
        "sentences": len(feeds),
        "latency_is": "native onnxruntime CPU ms per session.run, batch 1",
        "variants": {},
    }
    precisions = ["fp32", "fp16", "int8", "int4"] + (["mixed"] if opts.get("mixed", True) else [])
    for p in precisions:
        t0 = time.perf_counter()
        extra: dict[str, Any] = {}
        if p == "fp32":
            path = fp32
        elif p == "mixed":
            path = out_dir / "model.mixed.onnx"
            plan = P.to_mixed(
                fp32,
                path,
                feeds,
                target=float(opts.get("mixed_target", 0.99)),
                block_size=block,
                threads=threads,
            )
            extra = {
                "plan": plan.choice,
                "sensitivity": plan.sensitivity,
                "target": plan.target,
                "met_target": plan.met_target,
            }
        else:
            path = P.make_variant(fp32, p, out_dir / f"model.{p}.onnx", block_size=block)
        build_s = time.perf_counter() - t0
        rep = P.evaluate(
            fp32,
            path,
            feeds,
            precision=p,
            repeat=ctx.repeat,
            warmup=ctx.warmup,
            threads=threads,
            ref_outputs=ref,
        )
        wasm: dict[str, Any] | str = "not measured (option node_wasm=false)"
        wasm_mem: int | str = "not measured"
        if opts.get("node_wasm", True):
            try:
                ms, wasm_mem = node_wasm_run(Path(path), feeds[0], ctx.warmup, ctx.repeat)
                wasm = {k: round(x, 3) for k, x in summarize(ms).items()}
            except Exception as exc:  # a missing node must not sink the native figures
                wasm = wasm_mem = f"unavailable: {exc}"
        figures["variants"][p] = {
            "bytes": rep.bytes,
            "ratio_to_fp32": round(rep.ratio_to_fp32, 4),
            "cosine_mean": round(rep.accuracy_mean, 6),
            "cosine_worst": round(rep.accuracy_worst, 6),
            "native_latency_ms": {k: round(v, 3) for k, v in rep.latency_ms.items()},
            "native_load_ms": round(rep.load_ms, 1),
            "node_wasm_latency_ms": wasm,
            "node_wasm_load_rss_bytes": wasm_mem,
            "build_s": round(build_s, 2),
            **extra,
        }
    figures["models"], figures["models_unavailable"] = {}, {}
    for name in opts.get("models", OTHER_MODELS):
        try:
            figures["models"][name] = OTHER_MODELS[name](ctx, threads, block)
        except Exception as exc:  # a missing weights package must not sink the whole run
            figures["models_unavailable"][name] = f"{type(exc).__name__}: {exc}"
    v = figures["variants"]
    ratio = v["int4"]["bytes"] / v["fp32"]["bytes"]
    figures["target"] = {
        "int4_ratio_max": 0.2,
        "cosine_min": 0.95,
        "met_by_mean": ratio <= 0.2 and v["int4"]["cosine_mean"] >= 0.95,
        "met_by_worst": ratio <= 0.2 and v["int4"]["cosine_worst"] >= 0.95,
    }
    return Measurement(ratio=ratio, figures=figures)


# ------------------------------------------------- onnxruntime-web WASM in Node

# The page's own onnxruntime-web build (ort.wasm), run by Node: the same WASM
# kernels without a browser around them.  Not the in-browser figure (no
# bridge, no page), so it gets its own name: node_wasm_latency_ms.
_NODE_BENCH_JS = r"""
import fs from 'node:fs';
import {pathToFileURL} from 'node:url';
const [ortPath, model, manifest, warmup, repeat] = process.argv.slice(2);
const ort = await import(pathToFileURL(ortPath).href);
ort.env.wasm.numThreads = 1;
const rss0 = process.memoryUsage().rss;
const sess = await ort.InferenceSession.create(fs.readFileSync(model),
                                              {executionProviders: ['wasm']});
const m = JSON.parse(fs.readFileSync(manifest));
const feeds = {};
const T = {float32: Float32Array, int64: BigInt64Array};
for (const [name, t] of Object.entries(m)) {
  const b = fs.readFileSync(t.file);
  const data = new T[t.dtype](b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  feeds[name] = new ort.Tensor(t.dtype, data, t.dims);
}
for (let i = 0; i < Number(warmup); i++) await sess.run(feeds);
const ms = [];
for (let i = 0; i < Number(repeat); i++) {
  const t0 = performance.now();
  await sess.run(feeds);
  ms.push(performance.now() - t0);
}
// RSS growth from before the session to after the runs: the WASM heap
// (weights, arena) plus onnxruntime-web's JS side -- what a page would pay.
process.stdout.write(JSON.stringify({ms, rss_delta: process.memoryUsage().rss - rss0}));
"""


def _ort_web_mjs() -> Path | None:
    import os
    import shutil

    if shutil.which("node") is None:
        return None
    here = Path(__file__).resolve()
    candidates = (
        [Path(os.environ["WEBACCEL_ORT_WEB"])] if os.environ.get("WEBACCEL_ORT_WEB") else []
    )
    candidates += [
        p / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
        for p in (Path.cwd(), *here.parents)
    ]
    return next((c for c in candidates if c.is_file()), None)


def node_wasm_run(
    model: Path, feed: dict[str, Any], warmup: int, repeat: int
) -> tuple[list[float], int]:
    """ms per ``session.run`` in onnxruntime-web WASM (1 thread) under Node, and RSS growth."""
    import json
    import subprocess
    import tempfile

    import numpy as np

    ort_mjs = _ort_web_mjs()
    if ort_mjs is None:
        raise BenchmarkUnavailable("node or npm's onnxruntime-web is missing (make setup)")
    with tempfile.TemporaryDirectory(prefix="webaccel-wasm-") as tmp:
        t = Path(tmp)
        (t / "bench.mjs").write_text(_NODE_BENCH_JS)
        manifest = {}
        for i, (name, value) in enumerate(feed.items()):
            arr = np.ascontiguousarray(value)
            (t / f"{i}.bin").write_bytes(arr.tobytes())
            manifest[name] = {
                "dtype": str(arr.dtype),
                "dims": list(arr.shape),
                "file": str(t / f"{i}.bin"),
            }
        (t / "feeds.json").write_text(json.dumps(manifest))
        proc = subprocess.run(
            [
                "node",
                str(t / "bench.mjs"),
                str(ort_mjs),
                str(model),
                str(t / "feeds.json"),
                str(warmup),
                str(repeat),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"onnxruntime-web failed on {model.name}: {proc.stderr[-500:]}")
        res = json.loads(proc.stdout)
        return [float(x) for x in res["ms"]], int(res["rss_delta"])


def node_wasm_latency(model: Path, feed: dict[str, Any], warmup: int, repeat: int) -> list[float]:
    """ms per ``session.run`` in onnxruntime-web WASM (1 thread) under Node."""
    return node_wasm_run(model, feed, warmup, repeat)[0]


# ------------------------------------------------------------ the other models


def _fresh(variant: Path, fp32: Path) -> bool:
    return variant.is_file() and variant.stat().st_mtime >= fp32.stat().st_mtime


def _vision_variants(
    spec: Any, metric: Metric, ctx: BenchContext, threads: int, block: int
) -> dict[str, Any]:
    from webaccel.models import precision as P

    fp32 = spec.ensure_onnx("fp32")
    proc = spec.processor()
    feeds = [proc.preprocess(img, {}).tensors for img in calibration.pictures()]
    ref = P.run_feeds(P.session(fp32, threads=threads), feeds)
    out_dir = fp32.parent.parent / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"metric": metric, "inputs": f"{len(feeds)} synthetic pictures"}
    for p in ("fp32", "fp16", "int8", "int4"):
        path = fp32 if p == "fp32" else out_dir / f"model.{p}.onnx"
        t0 = time.perf_counter()
        if p != "fp32" and not _fresh(path, fp32):
            P.make_variant(fp32, p, path, block_size=block)
        build_s = time.perf_counter() - t0
        rep = P.evaluate(
            fp32,
            path,
            feeds,
            metric=metric,
            precision=p,
            repeat=ctx.repeat,
            warmup=min(ctx.warmup, 5),
            threads=threads,
            ref_outputs=ref,
        )
        row = {
            "bytes": rep.bytes,
            "ratio_to_fp32": round(rep.ratio_to_fp32, 4),
            "accuracy_mean": round(rep.accuracy_mean, 6),
            "accuracy_worst": round(rep.accuracy_worst, 6),
            "native_latency_ms": {k: round(x, 3) for k, x in rep.latency_ms.items()},
            "native_load_ms": round(rep.load_ms, 1),
            "build_s": round(build_s, 2),
        }
        if metric == "top1":
            outs = P.run_feeds(P.session(path, threads=threads), feeds)
            row["max_abs_prob_diff"] = round(
                max(
                    float(P.compare_outputs(r, o, f, "max_abs").max())
                    for r, o, f in zip(ref, outs, feeds, strict=True)
                ),
                6,
            )
        if p == "int4" and rep.ratio_to_fp32 > 0.9:
            row["note"] = (
                "weight-only int4 covers MatMul/Gather weights; this model's weights are "
                "mostly Conv, so int4 leaves it nearly fp32 (int8 quantizes Conv)"
            )
        res[p] = row
    return res


def _nsfw(ctx: BenchContext, threads: int, block: int) -> dict[str, Any]:
    from webaccel.models.vision import NSFW_CNN

    return _vision_variants(NSFW_CNN, "top1", ctx, threads, block)


def _saliency(ctx: BenchContext, threads: int, block: int) -> dict[str, Any]:
    from webaccel.models.vision import VIT_SALIENCY

    return _vision_variants(VIT_SALIENCY, "cosine", ctx, threads, block)


def _whisper(ctx: BenchContext, threads: int, block: int) -> dict[str, Any]:
    from webaccel.models import whisper as W

    fp32 = W.ensure_parts("fp32")
    clip = W.beckett_wav()
    res: dict[str, Any] = {
        "metric": "wer_vs_fp32",
        "inputs": "beckett.wav (10 s)",
        "latency_is": "wall time of one greedy transcription, native onnxruntime",
    }
    ref_text = W.transcribe(W.OrtRunner(fp32, threads=threads), clip).text
    n = max(1, min(ctx.repeat, 5))  # each transcription takes ~1 s
    for p in ("fp32", "fp16", "int8", "int4"):
        t0 = time.perf_counter()
        parts = W.ensure_parts(p, block_size=block)
        build_s = time.perf_counter() - t0
        rep = W.evaluate_variant(
            fp32,
            parts,
            [clip] * (n + 1),
            precision=p,
            threads=threads,
            reference=[ref_text] * (n + 1),
        )
        secs = sorted(rep.seconds[1:])  # the first run warms the fresh sessions
        res[p] = {
            "bytes": rep.bytes,
            "wer_vs_fp32": rep.wer_vs_fp32,
            "text": rep.texts[0],
            "transcribe_s_median": round(secs[len(secs) // 2], 3),
            "build_s": round(build_s, 2),
        }
    for p in ("fp16", "int8", "int4"):
        res[p]["ratio_to_fp32"] = round(res[p]["bytes"] / res["fp32"]["bytes"], 4)
    return res


OTHER_MODELS: dict[str, Any] = {
    "nsfw-cnn": _nsfw,
    "vit-saliency": _saliency,
    "whisper-tiny-en": _whisper,
}
