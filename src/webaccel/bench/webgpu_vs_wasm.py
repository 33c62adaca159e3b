"""``webgpu-vs-wasm``: onnxruntime-web on a real GPU (WebGPU) against WASM and native CPU.

MiniLM (all-MiniLM-L6-v2) at 1x16, 32x128 and 128x128 tokens, each on:

* ``webgpu-*``: the headless WebGPU worker (Node 22 + Dawn, onnxruntime-web's
  JSEP build as in Chromium; Dawn's ``vulkan_enable_f16_on_nvidia`` toggle so
  NVIDIA exposes shader-f16) on the registry's MiniLM (fused, pooling in the
  graph), with graph capture per shape bucket (what the pool runs), and, so
  one run shows what each change is worth, on the graph before pooling
  (``-fused``) and before fusion (``-unfused``), with CPU-side outputs, int4,
  Gemm fusion on, and the native WebGPU EP build (``WEBGPU_CONFIGS``);
* ``wasm-1t``: onnxruntime-web's WASM EP, one thread, in a Node worker;
* ``wasm-Nt``: the same with all cores (recorded as unavailable where Node
  cannot start onnxruntime-web's WASM threads; the reason is kept);
* ``native-1t`` / ``native-Nt``: native onnxruntime CPU in this process.

Then the other models (``OTHER_MODELS``: the vision CNN, Whisper's encoder) on
webgpu fp32/fp16, wasm and native.

Every worker joins a real :class:`~webaccel.server.WebAccelServer` over the
bridge and fetches model bytes from it.  ``page_ms`` is the worker's own
``session.run`` time including upload and readback; ``round_trip_ms`` adds the
bridge.  Outputs are checked against native fp32 on the unfused graph (max
abs difference, and cosine of the sentence embeddings).  The ratio is
``wasm-1t`` page time / ``webgpu-fp32`` page time at 32x128.  Each result is
also printed to stderr as it comes, so a run cut short still shows its rows.

A software WebGPU adapter (SwiftShader, lavapipe) is not a GPU: the benchmark
is then unavailable, with the adapter named (``allow_software`` in
``ctx.options`` runs it anyway, for tests).  Token ids are seeded pseudo-random
ids (the same generator as ``scripts/gpu/probe.mjs``), full attention masks:
latency does not depend on which tokens are used.

    python -m webaccel.bench.webgpu_vs_wasm --json    # same JSON line as `webaccel bench`, no store
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
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
from webaccel.models.rewrites import simplify_attention_mask  # noqa: F401 (re-export)

SHAPES: tuple[tuple[int, int], ...] = ((1, 16), (32, 128), (128, 128))
RATIO_SHAPE = (32, 128)
# One CPU thread at 128x128 takes ~19 s per run (wasm, H200 host); larger
# shapes are skipped there, the ratio shape is not.
MAX_TOKENS_1T = 32 * 128
HIDDEN = 384

# The configurations measured in one run: name -> (graph, session options).
# ``webgpu-fp32`` is the registry's file (fused, pooled in the graph) with its
# output left on the GPU until read, on JSEP (the build Chromium pages load and
# the Node worker's default).  ``-capture`` is what the pool runs for MiniLM on
# a JSEP worker: a session per shape bucket, graph captured
# (webaccel.pool.buckets).  The others show what each change is worth:
# "-fused" returns token states, "-unfused" is the graph before fusion,
# "-cpu-output" lets onnxruntime-web copy the output itself, "-gemm" leaves
# onnxruntime's MatMulAddFusion on (runtime.mjs turns it off on JSEP), and
# "webgpu-ep-*" run onnxruntime-web's native WebGPU EP build instead of JSEP.
GPU_OUT = {"preferredOutputLocation": "gpu-buffer"}
CAPTURE = {"enableGraphCapture": True, "bucket": True}
WITH_GEMM_FUSION: dict[str, Any] = {"extra": {}}  # replaces runtime.mjs's JSEP session config
WEBGPU_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "webgpu-fp32": ("pooled", GPU_OUT),
    "webgpu-fp32-capture": ("pooled", CAPTURE),
    "webgpu-fp16-capture": ("pooled-fp16", CAPTURE),
    "webgpu-fp32-capture-gemm": ("pooled", {**CAPTURE, **WITH_GEMM_FUSION}),
    "webgpu-fp32-bucket": ("pooled", {**GPU_OUT, "bucket": True}),
    "webgpu-fp32-cpu-output": ("pooled", {}),
    "webgpu-fp32-fused": ("fused", GPU_OUT),
    "webgpu-fp32-unfused": ("unfused", GPU_OUT),
    "webgpu-fp16": ("pooled-fp16", GPU_OUT),
    "webgpu-fp16-bucket": ("pooled-fp16", {**GPU_OUT, "bucket": True}),
    "webgpu-ep-int4": ("pooled-int4", {**GPU_OUT, "build": "webgpu"}),  # JSEP refuses it
    "webgpu-ep-fp32": ("pooled", {**GPU_OUT, "build": "webgpu"}),
    "webgpu-ep-fp32-bucket": ("pooled", {**GPU_OUT, "bucket": True, "build": "webgpu"}),
    "webgpu-ep-fp16-bucket": ("pooled-fp16", {**GPU_OUT, "bucket": True, "build": "webgpu"}),
}
# "bucket": one session per input shape with its dims fixed (onnxruntime-web's
# freeDimensionOverrides), so shape arithmetic is folded at load: a pool would
# keep one such session per shape bucket and pad requests up to it.


@dataclass
class Config:
    name: str
    runner: str  # "worker" or "native"
    precision: str = "pooled"  # the graph (a model_paths key)
    backend: str = "webgpu"
    threads: int = 1
    session_options: dict[str, Any] = field(default_factory=dict)
    bucket: bool = False  # a session per shape, dims fixed (freeDimensionOverrides)
    build: str = "all"  # onnxruntime-web build for webgpu: all (JSEP) | webgpu (native EP)


def token_ids(batch: int, seq: int, seed: int = 1234) -> np.ndarray:
    """Seeded LCG ids in [1000, 29000) with [CLS]/[SEP] at the ends (as probe.mjs)."""
    out = np.empty(batch * seq, dtype=np.int64)
    s = seed
    mask = (1 << 64) - 1
    for i in range(out.size):
        s = (s * 6364136223846793005 + 1442695040888963407) & mask
        out[i] = 1000 + ((s >> 33) % 28000)
    ids = out.reshape(batch, seq)
    ids[:, 0] = 101
    ids[:, -1] = 102
    return ids


def feeds(batch: int, seq: int) -> dict[str, np.ndarray]:
    ids = token_ids(batch, seq)
    return {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }


def pooled(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from webaccel.models.text import mean_pool_normalize

    return mean_pool_normalize(hidden.astype(np.float32), mask)


def accuracy(out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """``out`` (token states, or embeddings pooled in the graph) against native fp32 token states.

    ``max_abs`` compares like with like: token states with token states,
    embeddings with the reference's pooled embeddings.
    """
    b = pooled(ref, mask)
    if out.ndim == 2:
        a = out.astype(np.float32)
        max_abs = np.abs(a - b).max()
    else:
        a = pooled(out, mask)
        max_abs = np.abs(out.astype(np.float32) - ref).max()
    return {"max_abs": float(max_abs), "min_cosine": float((a * b).sum(axis=1).min())}


async def timed_runs(
    run: Callable[[], Awaitable[tuple[np.ndarray, float, float]]],
    *,
    warmup: int,
    repeat: int,
    budget_s: float,
) -> dict[str, Any]:
    """Warm up, then repeat ``run`` (up to ``repeat`` times, at least 3, within ``budget_s``)."""
    start = time.perf_counter()
    for i in range(warmup):
        await run()
        if i >= 2 and time.perf_counter() - start > budget_s / 2:
            break
    page: list[float] = []
    trip: list[float] = []
    out = None
    start = time.perf_counter()
    while len(page) < repeat and (len(page) < 3 or time.perf_counter() - start < budget_s):
        out, page_ms, trip_ms = await run()
        page.append(page_ms)
        trip.append(trip_ms)
    return {"out": out, "page_ms": summarize(page), "round_trip_ms": summarize(trip)}


def _native_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


# The MiniLM graphs compared, each as fp32 and fp16 ("<graph>-fp16"):
#   unfused: op by op, attention mask rewritten for WebGPU (registry revision 2);
#   fused:   onnxruntime's transformer optimizer (Attention, SkipLayerNormalization,
#            BiasGelu contrib ops), returning token states like "unfused";
#   pooled:  fused plus mean pooling in the graph (the registry's file, revision 3).
# The base files are built from the weights package here; on a GPU machine
# without it scripts/gpu/run.sh unpacks them (scripts/gpu/pack_graphs.py).
BASE_GRAPHS = ("unfused", "fused")


def graphs_dir() -> Path:
    """Where the graphs are cached; named by the registry's MiniLM revision (rebuilt on a bump)."""
    from webaccel import paths
    from webaccel.models import registry

    return paths.subdir("bench") / f"minilm-graphs@{registry.get('minilm').revision}"


def model_paths(options: dict[str, Any] | None = None) -> dict[str, Path]:
    """MiniLM files by graph and precision (built once, cached under ``graphs_dir()``)."""
    from webaccel.models import precision
    from webaccel.models.fusion import append_mean_pooling, fuse_bert
    from webaccel.models.text import export_hidden_states, export_unfused

    folder = Path((options or {}).get("graphs_dir") or graphs_dir())
    folder.mkdir(parents=True, exist_ok=True)

    def build(path: Path, make: Callable[[Path], Any]) -> Path:
        if not path.is_file():
            tmp = path.with_suffix(".tmp.onnx")
            make(tmp)
            tmp.replace(path)
        return path

    def fused(dest: Path) -> None:
        export_hidden_states(dest, attn_implementation="eager")
        fuse_bert(dest, dest, num_heads=12, hidden_size=HIDDEN)

    try:
        out = {
            "unfused": build(folder / "unfused.fp32.onnx", export_unfused),
            "fused": build(folder / "fused.fp32.onnx", fused),
        }
    except Exception as exc:  # noqa: BLE001 - the weights package or exporter is missing
        raise BenchmarkUnavailable(f"MiniLM ONNX files are not available: {exc}") from exc
    out["pooled"] = build(folder / "pooled.fp32.onnx", partial(append_mean_pooling, out["fused"]))
    out["pooled-int4"] = build(
        folder / "pooled.int4.onnx", partial(precision.to_int4, out["pooled"])
    )
    for model in OTHER_MODELS:
        fp32 = folder / f"{model}.fp32.onnx"
        if not fp32.is_file():
            try:
                _link_registry_file(model, fp32)
            except Exception:  # noqa: BLE001 - weights package missing: that model is left out
                continue
        out[model] = fp32
    for graph in ("unfused", "fused", "pooled", *(m for m in OTHER_MODELS if m in out)):
        to_fp16 = partial(precision.to_fp16, out[graph])
        out[f"{graph}-fp16"] = build(folder / f"{graph}.fp16.onnx", to_fp16)
    return out


def _link_registry_file(model: str, dest: Path) -> None:
    """The registry's fp32 file of ``model`` (Whisper's encoder part) at ``dest``."""
    from webaccel.models import registry

    if model == "whisper-encoder":
        src = registry.get("whisper-tiny-en").ensure_parts("fp32")["encoder"]
    else:
        src = registry.get(model).ensure_onnx("fp32")
    dest.symlink_to(src)


def configs(cores: int, shader_f16: bool) -> list[Config]:
    out = [
        Config(
            name,
            "worker",
            precision=model,
            session_options={k: v for k, v in opts.items() if k not in ("bucket", "build")},
            bucket=bool(opts.get("bucket")),
            build=opts.get("build", "all"),
        )
        for name, (model, opts) in WEBGPU_CONFIGS.items()
        if shader_f16 or not model.endswith("-fp16")
    ]
    out += [
        Config("wasm-1t", "worker", backend="wasm", threads=1),
        Config(f"wasm-{cores}t", "worker", backend="wasm", threads=cores),
        Config("native-1t", "native", backend="cpu", threads=1),
        Config(f"native-{cores}t", "native", backend="cpu", threads=cores),
        Config(
            f"native-{cores}t-unfused",
            "native",
            precision="unfused",
            backend="cpu",
            threads=cores,
        ),
    ]
    return out


@dataclass
class Workload:
    """One model's runs: its configurations, input shapes, inputs and native fp32 reference."""

    model: str
    configs: list[Config]
    shapes: list[tuple[int, ...]]
    feeds: Callable[[tuple[int, ...]], dict[str, np.ndarray]]
    reference: Callable[[tuple[int, ...]], np.ndarray]  # native fp32, first output
    accuracy: Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], dict[str, float]]


def minilm_workload(
    paths: dict[str, Path], shapes: list[tuple[int, ...]], cores: int, shader_f16: bool
) -> Workload:
    ref_sess = _native_session(paths["unfused"], cores)
    return Workload(
        "minilm",
        configs(cores, shader_f16),
        shapes,
        lambda shape: feeds(*shape),
        lambda shape: ref_sess.run(None, feeds(*shape))[0],
        lambda out, ref, f: accuracy(out, ref, f["attention_mask"]),
    )


# Other models, first output compared (batch rows flattened): the registry's
# vision CNN (NHWC pixels) and Whisper's encoder (log-mel features).  Random
# inputs in the models' ranges: latency does not depend on the values.
OTHER_MODELS: dict[str, tuple[str, list[tuple[int, ...]]]] = {
    "nsfw-cnn": ("input_0", [(1, 224, 224, 3), (16, 224, 224, 3)]),
    "whisper-encoder": ("input_features", [(1, 80, 3000)]),
}


def _random_feed(name: str, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)}


def _row_accuracy(out: np.ndarray, ref: np.ndarray, f: dict[str, np.ndarray]) -> dict[str, float]:
    a = out.astype(np.float64).reshape(out.shape[0], -1)
    b = ref.astype(np.float64).reshape(ref.shape[0], -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return {"max_abs": float(np.abs(a - b).max()), "min_cosine": float(cos.min())}


def other_workloads(
    paths: dict[str, Path], cores: int, shader_f16: bool, wanted: Any = None
) -> list[Workload]:
    out = []
    for model, (input_name, shapes) in OTHER_MODELS.items():
        if model not in paths or (wanted is not None and model not in wanted):
            continue
        sess = _native_session(paths[model], cores)

        def reference(shape: tuple[int, ...], s: Any = sess, n: str = input_name) -> np.ndarray:
            return s.run(None, _random_feed(n, shape))[0]

        cfgs = [
            Config("webgpu-fp32", "worker", precision=model, session_options=GPU_OUT),
            Config(
                "webgpu-ep-fp32", "worker", precision=model, session_options=GPU_OUT, build="webgpu"
            ),
            Config("wasm-1t", "worker", precision=model, backend="wasm", threads=1),
            Config(f"wasm-{cores}t", "worker", precision=model, backend="wasm", threads=cores),
            Config(f"native-{cores}t", "native", precision=model, backend="cpu", threads=cores),
        ]
        if shader_f16:
            cfgs.insert(
                1,
                Config("webgpu-fp16", "worker", precision=f"{model}-fp16", session_options=GPU_OUT),
            )
        out.append(
            Workload(
                model, cfgs, shapes, partial(_random_feed, input_name), reference, _row_accuracy
            )
        )
    return out


async def _measure_config(
    load: Workload,
    cfg: Config,
    run_for: Callable[[dict[str, np.ndarray]], Callable[[], Awaitable[Any]]],
    ctx: BenchContext,
    budget: float,
) -> dict[str, Any]:
    per_shape: dict[str, Any] = {}
    for i, shape in enumerate(load.shapes):
        label = "x".join(map(str, shape))
        f = load.feeds(shape)
        work = int(np.prod(shape))
        if (
            cfg.threads == 1
            and cfg.backend != "webgpu"
            and load.model == "minilm"
            and work > MAX_TOKENS_1T
        ):
            per_shape[label] = {"skipped": f"over {MAX_TOKENS_1T} tokens on one CPU thread"}
            continue
        try:
            stats = await timed_runs(
                run_for(f),
                warmup=ctx.warmup if i == 0 else (2 if cfg.backend == "webgpu" else 1),
                repeat=ctx.repeat,
                budget_s=budget,
            )
        except Exception as exc:  # noqa: BLE001 - recorded, the other shapes still run
            per_shape[label] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        out = stats.pop("out")
        stats["accuracy_vs_native_fp32"] = load.accuracy(out, load.reference(shape), f)
        per_shape[label] = stats
        # One line per result on stderr: a run cut short by a time limit (the
        # GPU machine's) still shows what it measured.
        print(
            json.dumps({"model": load.model, "config": cfg.name, "shape": label, **stats}),
            file=sys.stderr,
            flush=True,
        )
    return per_shape


async def _bench(ctx: BenchContext) -> Measurement:
    from webaccel.browsers.node import dawn_available, find_node, launch_node_worker
    from webaccel.errors import WebAccelError
    from webaccel.pool.transport import ModelRef
    from webaccel.server import WebAccelServer

    try:
        find_node()
    except WebAccelError as exc:
        raise BenchmarkUnavailable(exc.message) from exc
    why = dawn_available()
    if why:
        raise BenchmarkUnavailable(why)
    cores = int(ctx.options.get("cores") or os.cpu_count() or 1)
    shapes = [tuple(s) for s in ctx.options.get("shapes", SHAPES)]
    budget = float(ctx.options.get("budget_s", 20.0))
    worker_env = ctx.options.get("worker_env") or {}
    results: dict[str, dict[str, Any]] = {}
    unavailable: dict[str, str] = {}

    only = set(ctx.options.get("only") or ())  # run just these config names (all if empty)
    skip = set(ctx.options.get("skip") or ())
    other_models: dict[str, dict[str, Any]] = {}

    async with WebAccelServer() as server:
        gpu = await launch_node_worker(server, build="all", f16=True, env=worker_env)
        workers = [gpu]
        try:
            adapter = gpu.capabilities.get("webgpu") or {}
            if not adapter.get("available"):
                raise BenchmarkUnavailable(
                    f"no WebGPU adapter in the Node worker: {adapter.get('reason')}"
                )
            if adapter.get("software") and not ctx.options.get("allow_software"):
                raise BenchmarkUnavailable(
                    "only a software WebGPU adapter here ("
                    f"{adapter.get('vendor')} {adapter.get('architecture')} "
                    f"{adapter.get('description')}), not a GPU: run scripts/gpu/run.sh bench "
                    "on a GPU machine"
                )
            # Built (once) only where there is a GPU to measure them on.
            paths = await asyncio.to_thread(model_paths, ctx.options)
            urls = {p: server.model_files.add(f"bench-{p}", path) for p, path in paths.items()}
            wasm_workers: dict[Any, Any] = {}
            shader_f16 = bool(adapter.get("shaderF16"))
            loads = [minilm_workload(paths, shapes, cores, shader_f16)]
            loads += other_workloads(paths, cores, shader_f16, ctx.options.get("models"))
            for load in loads:
                measured = (
                    other_models.setdefault(load.model, {}) if load.model != "minilm" else results
                )
                for cfg in load.configs:
                    if cfg.name in skip or (only and cfg.name not in only):
                        continue
                    try:
                        run_for = await _prepare(
                            cfg,
                            gpu,
                            wasm_workers,
                            workers,
                            server,
                            urls,
                            paths,
                            worker_env,
                            launch_node_worker,
                            ModelRef,
                        )
                    except Exception as exc:  # noqa: BLE001 - recorded, the others still run
                        unavailable[f"{load.model}:{cfg.name}"] = f"{type(exc).__name__}: {exc}"
                        continue
                    measured[cfg.name] = await _measure_config(load, cfg, run_for, ctx, budget)
        finally:
            for w in workers:
                await w.close()

    ratio_shape = RATIO_SHAPE if RATIO_SHAPE in shapes else shapes[-1]
    key = f"{ratio_shape[0]}x{ratio_shape[1]}"

    def median(cfg: str) -> float | None:
        r = results.get(cfg, {}).get(key, {})
        return r.get("page_ms", {}).get("median")

    gpu_ms, wasm_ms = median("webgpu-fp32"), median("wasm-1t")
    if not gpu_ms or not wasm_ms:
        raise RuntimeError(
            f"no {key} timings for webgpu-fp32 and wasm-1t: {unavailable or results}"
        )
    table = [
        {
            "config": cfg,
            "shape": shape,
            "page_ms": r["page_ms"]["median"],
            "round_trip_ms": r["round_trip_ms"]["median"],
            "n": r["page_ms"]["n"],
            **r["accuracy_vs_native_fp32"],
        }
        for cfg, per in results.items()
        for shape, r in per.items()
        if "page_ms" in r
    ]
    return Measurement(
        ratio=wasm_ms / gpu_ms,
        figures={
            "model": "all-MiniLM-L6-v2",
            "ratio_shape": key,
            "adapter": {
                k: adapter.get(k)
                for k in (
                    "vendor",
                    "architecture",
                    "device",
                    "description",
                    "isFallbackAdapter",
                    "software",
                    "shaderF16",
                )
            },
            "adapter_limits": adapter.get("limits"),
            "dawn_flags": (gpu.capabilities.get("runtime") or {}).get("dawn_flags"),
            "webgpu_configs": WEBGPU_CONFIGS,
            "config_models": {c.name: c.precision for c in configs(cores, True)},
            "results": results,
            "unavailable": unavailable,
            "table": table,
            "other_models": other_models,
            "cores": cores,
            "warmup_first_shape": ctx.warmup,
            "repeat": ctx.repeat,
            "model_files": {p: str(path) for p, path in paths.items()},
            "versions": {
                "node": (gpu.capabilities.get("runtime") or {}).get("node"),
                "onnxruntime-web": (gpu.capabilities.get("ort") or {}).get("version"),
            },
        },
    )


async def _prepare(
    cfg: Config,
    gpu: Any,
    wasm_workers: dict[Any, Any],  # threads (wasm) or build name (webgpu) -> worker
    workers: list[Any],
    server: Any,
    urls: dict[str, str],
    paths: dict[str, Path],
    worker_env: dict[str, str],
    launch: Any,
    model_ref: Any,
) -> Callable[[dict[str, np.ndarray]], Callable[[], Awaitable[Any]]]:
    """Load ``cfg``'s model where it runs; returns feeds -> one timed run."""
    if cfg.runner == "native":
        loop = asyncio.get_running_loop()
        sess = await loop.run_in_executor(None, _native_session, paths[cfg.precision], cfg.threads)

        def native(f: dict[str, np.ndarray]) -> Callable[[], Awaitable[Any]]:
            async def once() -> tuple[np.ndarray, float, float]:
                t0 = time.perf_counter()
                out = await loop.run_in_executor(None, sess.run, None, f)
                ms = (time.perf_counter() - t0) * 1000
                return out[0], ms, ms

            return once

        return native

    if cfg.backend == "webgpu" and cfg.build == "all":
        worker = gpu
    elif cfg.backend == "webgpu":
        worker = wasm_workers.get(cfg.build)
        if worker is None:
            worker = await launch(server, build=cfg.build, f16=True, env=worker_env)
            workers.append(worker)
            wasm_workers[cfg.build] = worker
    else:
        worker = wasm_workers.get(cfg.threads)
        if worker is None:
            worker = await launch(server, build="wasm", threads=cfg.threads, env=worker_env)
            workers.append(worker)
            wasm_workers[cfg.threads] = worker
    loaded: set[str] = set()

    async def load(key: str, options: dict[str, Any]) -> None:
        if key not in loaded:
            ref = model_ref(
                key=key,
                name=cfg.precision,
                url=urls[cfg.precision],
                backend=cfg.backend,
                precision=cfg.precision,
                session_options={"ort": options},
            )
            await worker.load_model(ref, timeout=300)
            loaded.add(key)

    session_key = f"{cfg.precision}/{cfg.name}"  # configs of several models share workers
    if not cfg.bucket:
        await load(session_key, cfg.session_options)

    def remote(f: dict[str, np.ndarray]) -> Callable[[], Awaitable[Any]]:
        key, options = session_key, cfg.session_options
        if cfg.bucket:  # MiniLM token inputs: a session per (batch, sequence)
            batch, seq = f["input_ids"].shape
            key = f"{session_key}-{batch}x{seq}"
            options = {
                **cfg.session_options,
                "freeDimensionOverrides": {"batch": int(batch), "sequence": int(seq)},
            }

        async def once() -> tuple[np.ndarray, float, float]:
            await load(key, options)  # a bucket's session is made on its first run (warm-up)
            r = await worker.run(key, f, timeout=300)
            return next(iter(r.outputs.values())), r.page_ms, r.round_trip_ms

        return once

    return remote


@benchmark(
    "webgpu-vs-wasm",
    ratio_is="WASM 1-thread latency / WebGPU fp32 latency, MiniLM 32x128, "
    "in the worker (Node + Dawn on a real GPU)",
    better="higher",
)
def webgpu_vs_wasm(ctx: BenchContext) -> Measurement:
    return asyncio.run(_bench(ctx))


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark's JSON line (as ``webaccel bench --json``) without the metrics store.

    For GPU machines whose Python lacks duckdb: bring the line back and store
    it with ``scripts/gpu/store_results.py``.
    """
    import argparse

    from webaccel.bench.runner import print_line

    p = argparse.ArgumentParser(prog="python -m webaccel.bench.webgpu_vs_wasm")
    p.add_argument("--json", action="store_true", help="one JSON object (the default)")
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--budget-s", type=float, default=20.0)
    p.add_argument("--only", help="comma-separated config names to run (default: all)")
    p.add_argument("--models", help=f"comma-separated other models ({', '.join(OTHER_MODELS)})")
    args = p.parse_args(argv)
    options: dict[str, Any] = {"budget_s": args.budget_s}
    if args.only:
        options["only"] = args.only.split(",")
    if args.models is not None:
        options["models"] = [m for m in args.models.split(",") if m]
    return print_line("webgpu-vs-wasm", BenchContext(args.repeat, args.warmup, options=options))


if __name__ == "__main__":
    raise SystemExit(main())
