"""Continuous batching in the page (tiny random Llama, headless Chromium, wasm).

Concurrent streams of one model on one page share each decode step as rows of
one batch (generate.mjs ``Batch``).  Every stream must still produce exactly
the tokens of its solo run (native onnxruntime, same sampler and seed), also
when streams join mid-decode, leave early, or are cancelled; ``batch_max`` in
the page's ``done`` stats shows that they really were batched.
"""

from __future__ import annotations

import asyncio

import pytest

from webaccel.generation import GenerationParams, stream_generate

pytestmark = pytest.mark.browser

PROMPTS = ["Alpha alpha alpha", "Beta 東京 beta", "Gamma", "The capital of France is a"]


@pytest.fixture(scope="module")
def acc(tiny):
    from webaccel.api import WebAccelerator

    acc = WebAccelerator(max_connections=1, default_platform="wasm")
    yield acc
    acc.shutdown()


def run(acc, coro):
    return acc._loop.run(coro)


def solo(native, gm, prompt, max_tokens, **params):
    seed = params.pop("seed", 0)
    stops = [*gm.eos_token_ids, *params.pop("stop_token_ids", [])]
    return native.generate(
        gm.encode(prompt),
        GenerationParams(max_tokens=max_tokens, **params),
        seed=seed,
        stop_token_ids=stops,
    ).token_ids


async def _drain(stream, *, after=None, then=None, count=0, limit=None):
    """Iterate ``stream``: start once ``after`` is set; set ``then`` after ``count`` pieces;
    close it after ``limit`` pieces."""
    if after is not None:
        await after.wait()
    n = 0
    async for _ in stream:
        n += 1
        if then is not None and n >= count:
            then.set()
        if limit is not None and n >= limit:
            await stream.aclose()
            break
    if then is not None:
        then.set()
    return stream.result


def test_four_concurrent_greedy_streams_equal_their_solo_runs(acc, tiny, native):
    _, gm, _ = tiny
    engine = acc._engine
    max_tokens = [160, 120, 140, 100]
    # The third stream ends early on a stop id (its 30th greedy token).
    stop = [solo(native, gm, PROMPTS[2], 140)[29]]
    extra = [{}, {}, {"stop_token_ids": stop}, {}]
    want = [solo(native, gm, p, m, **e) for p, m, e in zip(PROMPTS, max_tokens, extra, strict=True)]
    assert len(want[2]) <= 30

    async def four():
        streams = [
            stream_generate(engine, "tiny-llama", p, max_tokens=m, **e)
            for p, m, e in zip(PROMPTS, max_tokens, extra, strict=True)
        ]
        return await asyncio.gather(*(_drain(s) for s in streams))

    results = run(acc, four())
    for res, w in zip(results, want, strict=True):
        assert res.token_ids == w
    assert results[2].finish_reason == "stop"
    assert len({r.worker_id for r in results}) == 1  # one page served all four
    batch = [r.stats["page"]["batch_max"] for r in results]
    assert max(batch) >= 3, batch  # they were decoded together, not one after another
    for r in results:
        assert r.stats["page"]["decode_tokens_per_s"] > 0 and r.stats["page"]["ttft_ms"] > 0


def test_streams_join_mid_decode_and_leave_early(acc, tiny, native):
    """A starts alone; B and C join once A has 20 tokens; C stops after 8 tokens
    (max_tokens) while A and B go on; D joins after C left."""
    _, gm, _ = tiny
    engine = acc._engine
    # A is long: the page decodes the tiny model faster than Python reacts to its
    # tokens, so B, C and D must find A still running when they start.
    plan = {
        "a": (PROMPTS[0], 1000),
        "b": (PROMPTS[1], 300),
        "c": (PROMPTS[2], 8),
        "d": (PROMPTS[3], 100),
    }
    want = {k: solo(native, gm, p, m) for k, (p, m) in plan.items()}

    async def staggered():
        a_started, c_done = asyncio.Event(), asyncio.Event()
        s = {
            k: stream_generate(engine, "tiny-llama", p, max_tokens=m) for k, (p, m) in plan.items()
        }
        return await asyncio.gather(
            _drain(s["a"], then=a_started, count=20),
            _drain(s["b"], after=a_started),
            _drain(s["c"], after=a_started, then=c_done, count=10**9),
            _drain(s["d"], after=c_done),
        )

    ra, rb, rc, rd = run(acc, staggered())
    got = dict(zip("abcd", (ra, rb, rc, rd), strict=True))
    for k, res in got.items():
        assert res.token_ids == want[k], k
    assert len(rc.token_ids) == 8 and rc.finish_reason == "length"
    assert rb.stats["page"]["batch_max"] >= 2 and rd.stats["page"]["batch_max"] >= 2
    assert ra.stats["page"]["batch_max"] >= 3
    # A waited for nobody: its first token came before B or C had started.
    assert ra.stats["page"]["ttft_ms"] < ra.stats["page"]["total_ms"] / 4


def test_sampled_streams_equal_their_solo_runs_with_the_same_seeds(acc, tiny, native):
    _, gm, _ = tiny
    engine = acc._engine
    params = [
        {"temperature": 1.0, "seed": 11},
        {"temperature": 0.8, "top_k": 20, "seed": 3},
        {"temperature": 1.2, "top_p": 0.7, "seed": 99, "repetition_penalty": 1.3},
        {"temperature": 0.0, "repetition_penalty": 1.2},
    ]
    want = [solo(native, gm, "Once upon a time", 80, **dict(p)) for p in params]

    async def sampled():
        streams = [
            stream_generate(engine, "tiny-llama", "Once upon a time", max_tokens=80, **p)
            for p in params
        ]
        return await asyncio.gather(*(_drain(s) for s in streams))

    results = run(acc, sampled())
    for res, w, p in zip(results, want, params, strict=True):
        assert res.token_ids == w, p
    assert len({tuple(r.token_ids) for r in results}) == len(params)
    assert max(r.stats["page"]["batch_max"] for r in results) >= 3


def test_a_cancelled_stream_leaves_the_batch(acc, tiny, native):
    _, gm, _ = tiny
    engine = acc._engine
    want = [solo(native, gm, p, 150) for p in PROMPTS[:3]]

    async def cancel_middle():
        streams = [stream_generate(engine, "tiny-llama", p, max_tokens=150) for p in PROMPTS[:3]]
        return await asyncio.gather(
            _drain(streams[0]), _drain(streams[1], limit=5), _drain(streams[2])
        )

    ra, rb, rc = run(acc, cancel_middle())
    # (a piece is a whole character: several byte tokens at times)
    assert rb.finish_reason == "cancelled" and 5 <= len(rb.token_ids) < 50
    assert rb.token_ids == want[1][: len(rb.token_ids)]
    assert ra.token_ids == want[0] and rc.token_ids == want[2]
    assert ra.stats["page"]["batch_max"] >= 2 and rc.stats["page"]["batch_max"] >= 2
    # The page is idle again and serves the next request normally.
    again = acc.generate("tiny-llama", PROMPTS[1], max_tokens=150, return_result=True)
    assert again.token_ids == want[1] and again.stats["page"]["batch_max"] == 1


@pytest.mark.slow
def test_webgpu_streams_batch_with_the_kv_cache_on_the_gpu(
    monkeypatch, software_gpu_accelerator, tiny
):
    """Without the captured step (WEBACCEL_DECODE_STEP=off), on webgpu the present.*
    outputs stay GPU buffers: a step feeds them back as they are, and a join or leave
    downloads them to re-pack (SwiftShader here).  Compared with solo webgpu runs:
    SwiftShader's float math differs from the CPU's enough to flip a near-tie of the
    random model (on "Alpha alpha alpha", solo too)."""
    monkeypatch.setenv("WEBACCEL_DECODE_STEP", "off")
    acc = software_gpu_accelerator
    worker = run(acc, acc._engine.any_worker())
    if not (worker.capabilities.get("webgpu") or {}).get("available"):
        pytest.skip("this Chromium has no WebGPU adapter")
    plan = [("Hello", 60), (PROMPTS[1], 12), (PROMPTS[2], 40)]
    gpu = {"platform": "webgpu", "allow_software": True}
    want = [
        acc.generate("tiny-llama", p, max_tokens=m, return_result=True, **gpu).token_ids
        for p, m in plan
    ]

    async def on_gpu():
        first = asyncio.Event()
        streams = [
            stream_generate(acc._engine, "tiny-llama", p, max_tokens=m, **gpu) for p, m in plan
        ]
        return await asyncio.gather(
            _drain(streams[0], then=first, count=3),
            _drain(streams[1], after=first),
            _drain(streams[2], after=first),
        )

    results = run(acc, on_gpu())
    for res, w in zip(results, want, strict=True):
        assert res.backend == "webgpu" and res.token_ids == w
        assert res.stats["page"]["kv_location"] == "gpu-buffer"
    assert max(r.stats["page"]["batch_max"] for r in results) >= 2


@pytest.mark.slow
def test_captured_decode_step_rows_join_wait_and_leave(monkeypatch, tiny, native):
    """The captured decode step (webgpu, JSEP; SwiftShader here) with 2 rows and a cache
    of 32 positions: three streams that fit take the two rows (the third waits for a
    free one), a sampled stream reads logits instead of next_token, and a longer one
    decodes step by step on the dynamic session beside them; each equals its solo run
    on native onnxruntime (same sampler and seed)."""
    from webaccel.api import WebAccelerator

    monkeypatch.setenv("WEBACCEL_DECODE_STEP", "2x32")
    _, gm, _ = tiny
    gpu = {"platform": "webgpu", "allow_software": True}
    # (not PROMPTS[0]: SwiftShader and the CPU break one of its near-ties differently)
    plan = [
        ("Hello", 20, {}),
        (PROMPTS[1], 12, {}),
        (PROMPTS[2], 16, {"temperature": 0.8, "top_k": 20, "seed": 5}),
        ("Once upon a time", 30, {}),  # 16 + 30 - 1 > 32 positions: not captured
    ]
    acc = WebAccelerator(max_connections=1, allow_software=True)
    try:
        worker = run(acc, acc._engine.any_worker())
        if not (worker.capabilities.get("webgpu") or {}).get("available"):
            pytest.skip("this Chromium has no WebGPU adapter")

        async def together():
            streams = [
                stream_generate(acc._engine, "tiny-llama", p, max_tokens=m, **gpu, **kw)
                for p, m, kw in plan
            ]
            return await asyncio.gather(*(s.collect() for s in streams))

        results = run(acc, together())
    finally:
        acc.shutdown()
    for res, (prompt, max_tokens, kw) in zip(results, plan, strict=True):
        assert res.backend == "webgpu"
        assert res.token_ids == solo(native, gm, prompt, max_tokens, **kw)
    assert [r.stats["page"]["decode"] for r in results] == ["captured"] * 3 + ["dynamic"]
    # (the load's word on the step comes with the request that loaded the model)
    assert "captured" in {r.stats["decode_step"] for r in results}
    assert max(r.stats["page"]["batch_max"] for r in results[:3]) == 2  # two rows at most
