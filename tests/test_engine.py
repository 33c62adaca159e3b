"""The engine's policy without a browser: ``Engine(launcher=FakeLauncher(...))``.

The fake worker stands in for a browser only here, in tests of scheduling and
policy (options, precision, backend choice and fallback, errors, streaming,
failover); the same paths run against real browsers in the browser-marked tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from webaccel.engine import Engine
from webaccel.errors import (
    BackendUnavailableError,
    BrowserLaunchError,
    InvalidInputError,
    ModelNotFoundError,
    WorkerLostError,
)
from webaccel.pool import FakeLauncher

RAW = {"input_ids": [[101, 2023, 102]], "attention_mask": [[1, 1, 1]]}
SWIFTSHADER = {"backends": ("wasm", "webgpu"), "software_webgpu": True}


class Recorder:
    """A metrics sink that keeps every call (the pool reports to it)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("record_"):
            raise AttributeError(name)
        return lambda *a, **k: self.calls.append((name, a, k))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [dict(k, _args=a) for n, a, k in self.calls if n == name]


async def started(
    pool: dict[str, Any] | None = None, **families: dict[str, Any]
) -> tuple[Engine, FakeLauncher, Recorder]:
    launcher = FakeLauncher(families or {"chromium": {}})
    metrics = Recorder()
    engine = Engine(
        launcher=launcher,
        metrics=metrics,
        content_addressed=False,
        # The fake computes no model, so the native reference would (rightly) call it a
        # liar: answer checks are tested with a fake reference in tests/pool/test_verify.py.
        **({"max_connections": 2, "verify": "off"} | (pool or {})),
    )
    await engine.start()
    return engine, launcher, metrics


async def test_raw_tensors_run_through_the_pool() -> None:
    engine, launcher, metrics = await started()
    try:
        out = await engine.accelerate("minilm", RAW)
        assert out["backend"] == "wasm" and out["worker_id"] == launcher.workers[0].id
        np.testing.assert_array_equal(
            out["y"], np.array(RAW["attention_mask"]) * 2
        )  # the fake doubles its first input
        assert out["fallback_reason"] is not None  # no webgpu, no webnn: said why
        assert metrics.of("record_inference")[0]["_args"] == ("minilm",)
    finally:
        await engine.close()


async def test_software_webgpu_is_skipped_unless_allowed() -> None:
    engine, _, _ = await started(chromium=SWIFTSHADER)
    try:
        auto = await engine.accelerate("minilm", RAW)
        assert auto["backend"] == "wasm" and "software" in auto["fallback_reason"]
        preferred = await engine.accelerate("minilm", RAW, platform="webgpu")
        assert preferred["backend"] == "wasm" and "software" in preferred["fallback_reason"]
        listed = await engine.accelerate("minilm", RAW, priority_list=["webgpu", "wasm"])
        assert listed["backend"] == "wasm"
        forced = await engine.accelerate(
            "minilm", RAW, priority_list=["webgpu"], allow_software=True
        )
        assert forced["backend"] == "webgpu" and forced["fallback_reason"] is None
        explained = await engine.pool.explain("minilm", platform="webgpu")
        codes = {c["code"] for c in explained["rejected"].values()}
        assert not explained["rejected"] or codes <= {"software_adapter", "busy"}
    finally:
        await engine.close()


async def test_options_and_precision_policy() -> None:
    engine, _, _ = await started()
    try:
        with pytest.raises(InvalidInputError, match="unknown option"):
            await engine.accelerate("minilm", RAW, {"temprature": 1})
        with pytest.raises(InvalidInputError, match="precision"):
            await engine.accelerate("minilm", RAW, {"precision": 3})
        with pytest.raises(ModelNotFoundError):
            await engine.accelerate("no-such-model", RAW)
        # fp16 asked for by name runs on wasm (emulated), and says why not webgpu.
        out = await engine.accelerate("minilm", RAW, {"precision": 16})
        assert out["precision"] == "fp16" and out["backend"] == "wasm"
        out = await engine.accelerate("minilm", RAW, {"precision": "int8"})
        assert out["precision"] == "int8"
        # A backend the caller demands and no worker has: a typed error at once.
        with pytest.raises(BackendUnavailableError, match="webgpu"):
            await engine.accelerate("minilm", RAW, priority_list=["webgpu"])
    finally:
        await engine.close()


async def test_native_fallback_when_no_browser_starts() -> None:
    launcher = FakeLauncher({"chromium": {}}, broken=["chromium"])
    engine = Engine(launcher=launcher, content_addressed=False, launch_timeout=2, verify="off")
    await engine.start()
    try:
        with pytest.raises((BackendUnavailableError, BrowserLaunchError), match="launch"):
            await engine.accelerate("minilm", RAW, {"timeout": 3})
        out = await engine.accelerate("minilm", ["a sentence"], native_fallback=True)
        assert out["backend"] == "cpu" and "native onnxruntime" in out["fallback_reason"]
        assert out["embeddings"].shape == (1, 384)
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def tiny_llama():
    pytest.importorskip("torch")
    from webaccel.generation.testing import tiny_llama_spec

    return tiny_llama_spec("tiny-llama")


async def _generate(engine: Engine, kill_after: int | None, launcher: FakeLauncher) -> Any:
    """Generate greedily; with ``kill_after``, the worker serving the stream dies once it
    has streamed that many tokens (the browser crashes mid-stream)."""
    from webaccel.generation import generate

    async def killer() -> None:
        assert kill_after is not None
        while True:
            for w in launcher.workers:
                if w.alive and w.tokens_streamed >= kill_after:
                    w.kill()
                    return
            await asyncio.sleep(0.001)

    for w in launcher.workers:
        w.tokens_streamed = 0
    task = asyncio.ensure_future(killer()) if kill_after is not None else None
    try:
        return await generate(engine, "tiny-llama", "Once upon a time", max_tokens=40)
    finally:
        if task is not None:
            assert task.done(), "the worker was never killed"
            task.cancel()


async def test_a_stream_survives_its_worker_dying(tiny_llama) -> None:
    engine, launcher, metrics = await started(chromium={"step_latency": 0.01})
    try:
        whole = await _generate(engine, None, launcher)
        assert whole.stats["failovers"] == 0 and len(whole.token_ids) > 10
        again = await _generate(engine, 10, launcher)
        assert again.token_ids == whole.token_ids and again.text == whole.text
        assert again.stats["failovers"] == 1 and again.finish_reason == whole.finish_reason
        assert engine.pool.stats()["counters"]["stream_failovers"] == 1
        rows = metrics.of("record_generation")
        assert [r["failovers"] for r in rows] == [0, 1]
        assert rows[1]["completion_tokens"] == len(whole.token_ids)
        assert rows[0]["ttft_ms"] is not None and rows[0]["task"] == "text_generation"
    finally:
        await engine.close()


async def test_streams_hold_a_session_slot_and_queue_for_it(tiny_llama) -> None:
    from webaccel.generation import generate

    engine, _, metrics = await started(
        {"max_connections": 1, "session_slots": 1}, chromium={"step_latency": 0.02}
    )
    try:
        first = asyncio.ensure_future(generate(engine, "tiny-llama", "a", max_tokens=10))
        await asyncio.sleep(0.05)
        stats = engine.pool.stats()
        assert [w["sessions"] for w in stats["workers"].values()] == [1]
        second = await generate(engine, "tiny-llama", "b", max_tokens=5)
        assert len((await first).token_ids) == 10 and len(second.token_ids) == 5
        rows = metrics.of("record_generation")
        waits = sorted(r["queue_wait_ms"] for r in rows)
        assert waits[1] > 100  # the second waited for the first stream's slot (10 x 20 ms)
        for _ in range(100):  # the releases reach the actor
            if not engine.pool.stats()["running"]:
                break
            await asyncio.sleep(0.01)
        assert engine.pool.stats()["running"] == 0
    finally:
        await engine.close()


async def test_a_stream_without_workers_left_fails_typed(tiny_llama) -> None:
    engine, launcher, _ = await started(chromium={"step_latency": 0.01})
    engine.pool._state.max_retries = 0
    try:
        with pytest.raises(WorkerLostError):
            await _generate(engine, 3, launcher)
    finally:
        await engine.close()


def _pooled_probe(key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A stand-in for MiniLM's pooled output that says what each row was: the sum of
    its real token ids, how many real tokens it had, and the width it was padded to."""
    from webaccel.models.fusion import POOLED_OUTPUT

    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    width = np.full(ids.shape[0], ids.shape[1])
    return {
        POOLED_OUTPUT: np.stack([(ids * mask).sum(1), mask.sum(1), width], 1).astype(np.float32)
    }


async def test_a_list_beyond_one_batch_is_split_sorted_and_answered_in_order() -> None:
    from webaccel.models.text import MAX_BATCH, _unpadded_tokenizer

    rng = np.random.default_rng(7)
    words = ["the", "a", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "river"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 120)))) for _ in range(1000)]
    assert len(texts) > MAX_BATCH
    engine, launcher, _ = await started(
        {"max_connections": 2, "adaptive_scaling": False},
        chromium={"compute": _pooled_probe, "run_latency": 0.002},
    )
    try:
        out = await engine.accelerate("minilm", texts)
    finally:
        await engine.close()
    encs = _unpadded_tokenizer().encode_batch(texts)
    emb = out["embeddings"]
    assert emb.shape == (1000, 3)
    np.testing.assert_array_equal(emb[:, 0], [sum(e.ids) for e in encs])  # caller's order
    lengths = np.array([len(e.ids) for e in encs])
    np.testing.assert_array_equal(emb[:, 1], lengths)
    buckets = np.maximum(8, -(-lengths // 8) * 8)
    assert (emb[:, 2] <= 2 * buckets).all()  # never padded past twice its own bucket
    short = lengths <= 8
    assert short.any() and (emb[short, 2] <= 16).all()  # a short text is never padded to 128
    assert out["micro_batches"] == len(out["micro_batch_rows"]) > 1000 // 32
    assert max(out["micro_batch_rows"]) <= 32 and out["batch_size"] == 1000
    assert len(out["workers"]) == 2  # both workers took a share
    from webaccel.hosting import WARMUP_TOKEN_SHAPES

    def warm_up(ids: np.ndarray) -> bool:
        return ids.shape in WARMUP_TOKEN_SHAPES and bool((ids[:, 1:-1] == 1996).all())

    calls = [c.inputs["input_ids"] for w in launcher.workers for c in w.calls]
    assert len([c for c in calls if not warm_up(c)]) == out["micro_batches"]
    assert len([c for c in calls if warm_up(c)]) == 2 * engine.pool.warmup_runs
    assert out["truncated"] == [False] * 1000
