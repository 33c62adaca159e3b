"""``generation``: tokens/s of the in-page decode loop over native onnxruntime.

Same model (default ``smollm2``, fp32), same prompt, same greedy decoding,
same number of new tokens, one thread on both sides (the page's WASM runs one
thread by default, docs/FACTS.md).  Both loops are webaccel's own: the page's
``generate.mjs`` and :class:`webaccel.generation.native.NativeGenerator` (the
same graph and the same sampler), and the run checks that both produced the
same token ids.  Ratio = median in-page decode tokens/s (first token to last,
measured in the page) / median native decode tokens/s.  Figures also give
time to first token (prefill, in the page and as the Python caller sees it,
bridge and tokenizer included), overall tokens/s, and webgpu when the browser
has a real GPU adapter (a software adapter is skipped unless
``-o webgpu_software=true``: SwiftShader is 85-1700x slower than WASM here).

Options (``webaccel bench generation -o KEY=VALUE``): ``model`` (``smollm2``;
``tiny-llama`` is the 2-layer random test model, ``smollm2-random`` random weights in
SmolLM2's shape for machines the real weights cannot reach), ``browser``
(``chromium``; ``node-webgpu`` is the headless Node + Dawn WebGPU worker for GPU
servers), ``max_tokens`` (32),
``prompt``, ``precision`` (fp32; fp16/int8/int4 variants from the registry),
``repeat`` (default: the runner's repeat, capped at 5: one SmolLM2 run is
seconds of decoding), ``streams`` (0: off; N > 1 adds the continuous-batching
figures below), ``workers`` (browser workers of the run: 1, or with ``streams``
the engine's default, one per core up to 4, as a server would have; with more,
a first burst of the N streams at most ceil(N / workers) to a worker loads the
model on every worker, then the pool places the measured streams itself),
``prompt_tokens`` (a prompt of this many tokens, repeating ``prompt``),
``torch`` (a device, e.g. ``cuda`` or ``cpu``: PyTorch ``generate`` on the same weights
and prompts in the same run, ``figures["torch"]``, with ``webgpu_decode_over_torch`` and
``streams_over_torch``; tiny-llama, smollm2-random and smollm2),
``streams_platform`` (the streams' platform, e.g. webgpu; default: the pool's choice),
``pack`` (false, the pool's default: streams spread over the workers holding
the model, each page batching its share; true: they join one page's batch;
see ResourcePool's ``pack_streams``).

``-o streams=N``: the same run also measures N concurrent greedy streams
through the pool (N different prompts from :data:`STREAM_PROMPTS`, the same
``max_tokens``, eos ignored so every stream makes exactly ``max_tokens``)
against the same prompts run one at a time: ``streams_over_one`` = total
tokens/s of the N concurrent streams (all tokens / wall time from the first
request to the last token, as the Python caller sees it) over tokens/s of one
stream alone (the same, summed over the solo runs), medians over ``repeat``
rounds that alternate solo and concurrent.  It checks each stream's text
equals its solo run's (``texts_identical_to_solo``) and reports the largest
batch the page decoded (``batch_max``, from the page's ``done`` stats).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)

PROMPT = "The capital of France is"
# Prompts of the concurrent streams (``-o streams=N``; cycled past 8).
STREAM_PROMPTS = (
    "The capital of France is",
    "Once upon a time, there was a",
    "The best way to learn Python is",
    "In 1969, the first humans",
    "Water boils at a temperature of",
    "My favourite food is",
    "The three primary colours are",
    "A good night's sleep helps",
)


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


@benchmark(
    "generation",
    ratio_is="in-page decode tokens/s / native onnxruntime decode tokens/s "
    "(same model, prompt, greedy, 1 thread)",
    better="higher",
)
def generation(ctx: BenchContext) -> Measurement:
    from webaccel.errors import LoadFailedError
    from webaccel.generation import GenerationParams, load_generation_model
    from webaccel.generation.native import NativeGenerator

    opts = ctx.options
    model = str(opts.get("model", "smollm2"))
    max_tokens = int(opts.get("max_tokens", 32))
    precision = str(opts.get("precision", "fp32"))
    prompt = str(opts.get("prompt", PROMPT))
    repeat = int(opts.get("repeat", max(1, min(ctx.repeat, 5))))
    browser = str(opts.get("browser", "chromium"))
    streams = int(opts.get("streams", 0))
    if "workers" in opts:
        workers = int(opts["workers"])
    elif streams > 1:
        from webaccel.engine import default_workers

        workers = default_workers()
    else:
        workers = 1
    pack = str(opts.get("pack", "false")).lower() not in ("0", "false", "no", "off")
    if model == "tiny-llama":
        from webaccel.generation.testing import tiny_llama_spec

        tiny_llama_spec("tiny-llama")
    elif model == "smollm2-random":
        from webaccel.generation.testing import smollm2_shaped_spec

        smollm2_shaped_spec("smollm2-random")
    try:
        t0 = time.perf_counter()
        _, gm, path = load_generation_model(model, precision)
        build_s = time.perf_counter() - t0
    except LoadFailedError as exc:
        raise BenchmarkUnavailable(f"{model} cannot be built here: {exc.message}") from exc
    if "prompt_tokens" in opts:  # a prompt of exactly this many tokens (TTFT at a known length)
        want = int(opts["prompt_tokens"])
        words = (prompt + " ") * want
        while len(gm.encode(words)) > want:
            words = words[:-1]
        prompt = words
    prompt_ids = gm.encode(prompt)
    params = GenerationParams(max_tokens=max_tokens, include_eos_stops=False)

    # ---- native onnxruntime baseline (same graph, same loop, 1 thread)
    native = NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim, threads=1)
    native.generate(prompt_ids, params)  # warm-up

    # ---- the page (wasm; webgpu when there is a real GPU)
    from webaccel.api import WebAccelerator

    figures: dict[str, Any] = {}
    load_before = os.getloadavg()[0]
    with WebAccelerator(
        max_connections=workers,
        default_platform="wasm",
        default_browser=browser,
        launch_timeout=120,
        metrics=False,  # the runner stores the result; GPU machines have no duckdb
    ) as acc:

        def in_page(platform: str | None = None) -> Any:
            return acc.generate(
                model,
                prompt,
                max_tokens=max_tokens,
                include_eos_stops=False,
                precision=precision,
                platform=platform,
                allow_software=True
                if platform == "webgpu" and opts.get("webgpu_software")
                else None,
                return_result=True,
                timeout=1800,
            )

        first = in_page()  # load + V8 tier-up
        # Native and page runs alternate, so both see the same background load
        # (this machine is shared; a block of one then a block of the other is not fair).
        native_runs, page_runs = [], []
        for _ in range(repeat):
            native_runs.append(native.generate(prompt_ids, params))
            page_runs.append(in_page())
        native_tokens = native_runs[0].token_ids
        worker = acc._loop.run(acc._engine.any_worker())
        caps = worker.capabilities
        gpu = caps.get("webgpu") or {}
        webgpu: dict[str, Any] = {
            "available": bool(gpu.get("available")),
            "software": bool(gpu.get("software")),
        }
        if gpu.get("available") and (not gpu.get("software") or opts.get("webgpu_software")):
            in_page("webgpu")  # load + shader compilation
            gpu_runs = [in_page("webgpu") for _ in range(repeat)]
            webgpu.update(_page_figures(gpu_runs))
            webgpu["tokens_identical_to_native"] = all(
                r.token_ids == native_tokens for r in gpu_runs
            )
        else:
            webgpu["skipped"] = (
                "no WebGPU adapter"
                if not gpu.get("available")
                else "software adapter (SwiftShader), not a GPU; -o webgpu_software=true "
                "to measure it anyway"
            )
        user_agent = caps.get("userAgent", "")
        if streams > 1:
            figures["streams"] = _streams(
                acc,
                model,
                precision,
                max_tokens,
                streams,
                repeat,
                pack=pack,
                workers=workers,
                platform=opts.get("streams_platform"),
            )
            figures["streams_over_one"] = figures["streams"]["streams_over_one"]

    if opts.get("torch"):  # PyTorch on the same weights and prompts, in this run
        stream_prompts = [STREAM_PROMPTS[i % len(STREAM_PROMPTS)] for i in range(max(streams, 1))]
        ref = _torch_figures(
            model,
            str(opts["torch"]),
            prompt_ids,
            [gm.encode(p) for p in stream_prompts],
            max_tokens,
            repeat,
            pad_id=gm.eos_token_ids[0],
        )
        ref["tokens_identical_to_native"] = ref["token_ids"] == native_runs[0].token_ids
        figures["torch"] = ref
        gpu_decode = (webgpu.get("decode_tokens_per_s") or {}).get("median")
        if gpu_decode and ref["decode_tokens_per_s"]:
            figures["webgpu_decode_over_torch"] = gpu_decode / ref["decode_tokens_per_s"]
        if "streams" in figures:
            figures["streams_over_torch"] = (
                figures["streams"]["concurrent_tokens_per_s"]["median"]
                / ref["streams_tokens_per_s"]
            )
    page = _page_figures(page_runs)
    native_decode = [r.stats["decode_tokens_per_s"] for r in native_runs]
    native_fig: dict[str, Any] = {
        "decode_tokens_per_s": summarize([v for v in native_decode if v]),
        "ttft_ms": summarize([r.stats["ttft_ms"] for r in native_runs]),
        "tokens_per_s": summarize([r.stats["tokens_per_s"] for r in native_runs]),
        "threads": 1,
    }
    ratio = page["decode_tokens_per_s"]["median"] / native_fig["decode_tokens_per_s"]["median"]
    figures.update(
        {
            "model": model,
            "browser": browser,
            "precision": precision,
            "prompt": prompt,
            "prompt_tokens": len(prompt_ids),
            "new_tokens": max_tokens,
            "repeat": repeat,
            "tokens_identical_to_native": all(r.token_ids == native_tokens for r in page_runs),
            "wasm": page,
            "native": native_fig,
            "webgpu": webgpu,
            "first_page_run": {
                "load_ms": first.stats.get("load_ms"),
                "ttft_ms": first.stats.get("ttft_ms"),
                "decode_tokens_per_s": first.stats["page"].get("decode_tokens_per_s"),
            },
            "model_ready_s": build_s,
            "load_average_1m": {"before": load_before, "after": os.getloadavg()[0]},
            "pair_ratios": [
                (p.stats["page"].get("decode_tokens_per_s") or 0)
                / (n.stats["decode_tokens_per_s"] or float("inf"))
                for n, p in zip(native_runs, page_runs, strict=True)
            ],
            "model_bytes": path.stat().st_size,
            "ttft_ms_page_over_native": page["page_ttft_ms"]["median"]
            / native_fig["ttft_ms"]["median"],
            "versions": {"browser": user_agent},
        }
    )
    return Measurement(ratio=ratio, figures=figures)


def _streams(
    acc: Any,
    model: str,
    precision: str,
    max_tokens: int,
    n: int,
    repeat: int,
    *,
    pack: bool = True,
    workers: int = 1,
    platform: str | None = None,
) -> dict[str, Any]:
    """N concurrent greedy streams through the pool vs the same prompts one at a time."""
    import asyncio
    import math

    from webaccel.generation import stream_generate

    prompts = [STREAM_PROMPTS[i % len(STREAM_PROMPTS)] for i in range(n)]
    engine = acc._engine
    pool = engine.pool
    pool._state.pack_streams = pack

    def session_slots(k: int) -> None:
        pool.session_slots = k
        for rec in pool._state.workers.values():
            rec.session_slots = k

    def start(prompt: str) -> Any:
        return stream_generate(
            engine,
            model,
            prompt,
            max_tokens=max_tokens,
            include_eos_stops=False,
            precision=precision,
            platform=platform,
            allow_software=True if platform == "webgpu" else None,
            timeout=1800,
        )

    async def solo() -> tuple[list[Any], float]:
        out, busy = [], 0.0
        for p in prompts:
            t0 = time.perf_counter()
            out.append(await start(p).collect())
            busy += time.perf_counter() - t0
        return out, busy

    async def together() -> tuple[list[Any], float]:
        t0 = time.perf_counter()
        out = await asyncio.gather(*(start(p).collect() for p in prompts))
        return list(out), time.perf_counter() - t0

    slots = pool.session_slots
    if workers > 1:
        # Few enough session slots that this burst overflows onto (and loads the
        # model on) every worker; the measured ones are placed by the pool itself.
        session_slots(max(1, math.ceil(n / workers)))
    acc._loop.run(together())  # every stream's page path warm (V8 tier-up at batch n)
    session_slots(slots)
    solo_tps, conc_tps, same, batch, used, page_decode = [], [], [], [], set(), []
    backends: set[str] = set()
    decode: set[str] = set()
    for _ in range(repeat):
        alone, alone_s = acc._loop.run(solo())
        conc, conc_s = acc._loop.run(together())
        solo_tps.append(sum(len(r.token_ids) for r in alone) / alone_s)
        conc_tps.append(sum(len(r.token_ids) for r in conc) / conc_s)
        same.append(all(a.text == c.text for a, c in zip(alone, conc, strict=True)))
        batch += [c.stats["page"].get("batch_max") or 1 for c in conc]
        used |= {c.worker_id for c in conc}
        backends |= {r.backend for r in (*alone, *conc)}
        page_decode += [c.stats["page"].get("decode_tokens_per_s") for c in conc]
        decode |= {r.stats["page"].get("decode") or "" for r in (*alone, *conc)}
    one, many = statistics.median(solo_tps), statistics.median(conc_tps)
    return {
        "streams": n,
        "prompts": prompts,
        "new_tokens_each": max_tokens,
        "one_stream_tokens_per_s": summarize(solo_tps),
        "concurrent_tokens_per_s": summarize(conc_tps),
        "streams_over_one": many / one,
        "round_ratios": [c / s for s, c in zip(solo_tps, conc_tps, strict=True)],
        "texts_identical_to_solo": all(same),
        "batch_max": max(batch),
        "workers": workers,
        "workers_used": len(used),
        "backends": sorted(backends),  # the pool's choice unless streams_platform is set
        "platform": platform,
        "decode": sorted(decode),
        "pack": pack,
        "per_stream_page_decode_tokens_per_s": summarize([v for v in page_decode if v]),
        "load_average_1m": os.getloadavg()[0],
    }


def _torch_figures(
    model: str,
    device: str,
    prompt_ids: list[int],
    stream_ids: list[list[int]],
    max_tokens: int,
    repeat: int,
    pad_id: int,
) -> dict[str, Any]:
    """PyTorch (transformers ``generate``, eager fp32, KV cache, greedy, eos ignored) on the
    same weights and prompts: one stream's decode tokens/s ((N-1) / (time for N tokens -
    time for 1)) and token ids, time to the first token, and the stream prompts batched
    (left-padded, as transformers batches) in all tokens/s.  Medians of ``repeat`` runs
    after a warm-up."""
    try:
        import torch

        from webaccel.generation.testing import torch_model
    except ImportError as exc:
        raise BenchmarkUnavailable(f"-o torch needs torch and transformers: {exc}") from exc
    try:
        lm = torch_model(model).to(device)
    except KeyError as exc:
        raise BenchmarkUnavailable(str(exc)) from exc
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def timed(rows: list[list[int]], n: int) -> tuple[float, Any]:
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
        times: list[float] = []
        out: Any = None
        for i in range(repeat + 1):
            sync()
            t0 = time.perf_counter()
            with torch.inference_mode():
                out = lm.generate(
                    ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                    do_sample=False, pad_token_id=pad_id, eos_token_id=None,
                )  # fmt: skip
            sync()
            if i:  # the first is the warm-up
                times.append(time.perf_counter() - t0)
        return statistics.median(times), out[:, width:]

    t_n, tokens = timed([prompt_ids], max_tokens)
    t_1, _ = timed([prompt_ids], 1)
    t_b, _ = timed(stream_ids, max_tokens)
    return {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "decode_tokens_per_s": (max_tokens - 1) / (t_n - t_1) if t_n > t_1 else None,
        "ttft_ms": t_1 * 1000,
        "token_ids": tokens[0].tolist(),
        "streams": len(stream_ids),
        "streams_tokens_per_s": len(stream_ids) * max_tokens / t_b,
    }


def _page_figures(runs: list[Any]) -> dict[str, Any]:
    pages = [r.stats["page"] for r in runs]
    return {
        "decode_tokens_per_s": summarize(
            [p["decode_tokens_per_s"] for p in pages if p.get("decode_tokens_per_s")]
        ),
        "page_ttft_ms": summarize([p["ttft_ms"] for p in pages]),
        "client_ttft_ms": summarize([r.stats["ttft_ms"] for r in runs]),
        "client_tokens_per_s": summarize([r.stats["tokens_per_s"] for r in runs]),
        "backend": pages[0].get("backend"),
        "kv_location": pages[0].get("kv_location"),
        # "captured" when the page decoded with the captured step (webgpu), and the
        # load's word on it (why not, when it could not be made)
        "decode": pages[0].get("decode"),
        "decode_step": runs[0].stats.get("decode_step"),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark's JSON line (as ``webaccel bench --json``) without the metrics store.

    For GPU machines whose Python lacks duckdb/typer, e.g. after ``scripts/gpu/run.sh unpack``::

        python3 -m webaccel.bench.generation -o browser=node-webgpu -o model=smollm2-random
    """
    import sys

    from webaccel.bench.runner import main as run_main

    return run_main(["generation", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
