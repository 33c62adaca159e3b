"""The tiny random Llama split into layer stages, each stage holding only its layers'
KV cache: greedy tokens equal the unsplit model's (native onnxruntime, then browsers)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from webaccel.generation import GenerationParams

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("torch")
    from webaccel.generation import load_generation_model
    from webaccel.generation.testing import tiny_llama_spec

    tiny_llama_spec("tiny-llama")
    return load_generation_model("tiny-llama")


def _native_chain(split: Any) -> Any:
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    sessions = [ort.InferenceSession(str(s.path()), o, providers=["CPUExecutionProvider"])
                for s in split.stages]

    async def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        avail = dict(feeds)
        for s, sess in zip(split.stages, sessions, strict=True):
            outs = sess.run(list(s.outputs), {k: avail[k] for k in s.inputs})
            avail.update(zip(s.outputs, outs, strict=True))
        return avail

    return run


def test_split_stages_keep_their_own_kv_cache_and_decode_the_same_tokens(tiny):
    from webaccel.generation.native import NativeGenerator
    from webaccel.sharding.generate import generate_split
    from webaccel.sharding.stages import split_model

    _, gm, path = tiny
    native = NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim)
    split = split_model("tiny-llama", 2)
    for s in split.stages:  # each stage takes and gives only its own layers' cache
        past = {i for i in s.inputs if i.startswith("past_key_values.")}
        present = {o for o in s.outputs if o.startswith("present.")}
        assert past == {f"past_key_values.{n}.{kv}" for n in s.layers for kv in ("key", "value")}
        assert present == {p.replace("past_key_values.", "present.") for p in past}
    ids = gm.encode(PROMPT)
    params = GenerationParams(max_tokens=30)
    want = native.generate(ids, params, stop_token_ids=gm.eos_token_ids).token_ids
    got = asyncio.run(generate_split(
        _native_chain(split), ids, params, past_names=native.past_names,
        kv_heads=gm.kv_heads, head_dim=gm.head_dim, stop_token_ids=gm.eos_token_ids))
    assert got["token_ids"] == want and len(want) > 5


@pytest.mark.browser
async def test_split_generator_in_browsers_survives_a_killed_stage(tiny):
    """Two Chromium workers, one stage each: greedy tokens equal the unsplit model's;
    then stage 0's browser is SIGKILLed after 8 steps and the tokens are still the same."""
    import os
    import signal

    try:
        from webaccel.browsers.chromium import find_chromium

        find_chromium(None)
    except Exception as exc:  # noqa: BLE001 - no browser stack here
        pytest.skip(f"needs Chromium: {exc}")
    from webaccel.engine import Engine
    from webaccel.generation.native import NativeGenerator
    from webaccel.sharding.generate import generate_split
    from webaccel.sharding.run import Pipeline
    from webaccel.sharding.stages import split_model

    _, gm, path = tiny
    native = NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim)
    ids = gm.encode(PROMPT)
    params = GenerationParams(max_tokens=30)
    want = native.generate(ids, params, stop_token_ids=gm.eos_token_ids).token_ids
    split = await asyncio.to_thread(split_model, "tiny-llama", 2)
    eng = Engine(max_connections=3, default_platform="wasm")
    await eng.start()
    try:
        async with Pipeline(eng.pool, split, platform="wasm") as pipe:

            async def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                return (await pipe.run([feeds], in_flight=1))[0]

            kw: dict[str, Any] = {"past_names": native.past_names, "kv_heads": gm.kv_heads,
                                  "head_dim": gm.head_dim, "stop_token_ids": gm.eos_token_ids}
            got = await generate_split(run, ids, params, **kw)
            assert got["token_ids"] == want
            stage0 = pipe.runners[0]
            victim = stage0.session.worker_id
            start = stage0.runs

            async def killing_run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                if stage0.runs == start + 8 and stage0.session is not None \
                        and stage0.session.worker_id == victim:
                    os.killpg(eng.pool.workers[victim].process.pid, signal.SIGKILL)
                return await run(feeds)

            again = await generate_split(killing_run, ids, params, **kw)
            report = pipe.report()
        print("stages:", report)
        assert again["token_ids"] == want
        assert report[0]["replayed"] >= 1 and report[0]["workers"][0] == victim
        assert report[0]["worker_id"] not in (victim, report[1]["worker_id"])
    finally:
        await eng.close()
