"""A split MiniLM in headless Chromium: stages on separate workers equal the unsplit model,
also when a stage's browser is SIGKILLed mid-stream (marked ``browser``)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.browser

TEXTS = [
    f"Sentence number {i}: " + " ".join(["music", "guitar", "a crowd", "the stage"][: 1 + i % 4])
    for i in range(24)
]


async def _unsplit(engine: Any, chunks: list[list[str]]) -> list[np.ndarray]:
    out = []
    for c in chunks:
        r = await engine.accelerate("minilm", c, platform="wasm")
        assert r["backend"] == "wasm"
        out.append(r["embeddings"])
    return out


async def test_split_minilm_equals_the_unsplit_model_and_survives_a_killed_stage(engine):
    from webaccel.models.text import TextEmbeddingProcessor
    from webaccel.sharding.run import Pipeline, chunks
    from webaccel.sharding.stages import split_model

    split = await asyncio.to_thread(split_model, "minilm", 2)
    parts = [list(c) for c in chunks(TEXTS, 4)]
    proc = TextEmbeddingProcessor()
    prepared = [proc.preprocess(c, {}) for c in parts]
    want = await _unsplit(engine, parts)

    async with Pipeline(engine.pool, split, platform="wasm") as pipe:
        workers = [r.session.worker_id for r in pipe.runners]
        assert len(set(workers)) == 2, workers  # each stage on its own worker
        outs = await pipe.run([p.tensors for p in prepared])
        got = [proc.postprocess(o, p)["embeddings"] for o, p in zip(outs, prepared, strict=True)]
        diff = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
        print("split vs unsplit max abs diff:", diff)
        assert diff <= 1e-6

        # Kill stage 1's browser after it has answered 3 micro-batches of a second run.
        victim = pipe.runners[1]
        before = victim.runs
        task = asyncio.ensure_future(pipe.run([p.tensors for p in prepared]))
        while victim.runs < before + 3:
            assert not task.done(), "the run ended before the kill"
            await asyncio.sleep(0.005)
        worker = engine.pool.workers[victim.session.worker_id]
        os.killpg(worker.process.pid, signal.SIGKILL)
        outs2 = await asyncio.wait_for(task, 240)
        report = pipe.report()
    print("stages:", report)
    assert victim.replayed >= 1 and len(report[1]["workers"]) == 2
    assert report[1]["workers"][1] not in (report[1]["workers"][0], report[0]["worker_id"])
    assert report[0]["replayed"] == 0 and len(report[0]["workers"]) == 1
    got2 = [proc.postprocess(o, p)["embeddings"] for o, p in zip(outs2, prepared, strict=True)]
    for a, b in zip(got2, got, strict=True):
        assert np.array_equal(a, b)  # exactly the undisturbed run's results, in order


async def test_a_memory_budget_below_the_model_size_runs_it_sharded():
    """Per-worker budget 70 MB < MiniLM's 90 MB: accelerate() runs it as 2 stages on two
    workers (the 69 MB first stage fits), equal to native onnxruntime; explain() says so."""
    try:
        from webaccel.browsers.chromium import find_chromium

        find_chromium(None)
    except Exception as exc:  # noqa: BLE001 - no browser stack here
        pytest.skip(f"needs Chromium: {exc}")
    from webaccel.engine import Engine
    from webaccel.models import registry

    budget = 70_000_000
    eng = Engine(max_connections=2, default_platform="wasm", memory_budget_bytes=budget)
    await eng.start()
    try:
        before = await eng.pool.explain("minilm")
        assert before["memory"]["fits_one_worker"] is False
        assert before["memory"]["model_bytes"] > budget
        r = await eng.accelerate("minilm", TEXTS[:6])
        assert [s["stage"] for s in r["stages"]] == [0, 1]
        assert r["stages"][0]["worker_id"] != r["stages"][1]["worker_id"]
        assert all(s["bytes"] <= budget for s in r["stages"])
        assert "over the per-worker memory budget" in r["sharded"]
        spec = registry.get("minilm")
        tensors = spec.processor().preprocess(TEXTS[:6], {}).tensors
        native, _, _ = await asyncio.to_thread(eng.native.run, spec, tensors, "fp32")
        assert np.abs(r["embeddings"] - native["sentence_embedding"]).max() < 1e-4
        after = await eng.pool.explain("minilm")
        print("explain memory:", after["memory"])
        sharded = after["memory"]["sharded"]
        assert sharded["stages"] == 2 and sharded["workers"] == [
            s["worker_id"] for s in r["stages"]
        ]
        assert "budget" in sharded["why"]
    finally:
        await eng.close()


def test_cli_run_with_stages_says_which_worker_ran_each_stage():
    import json

    from typer.testing import CliRunner

    from webaccel.cli import app

    res = CliRunner().invoke(app, ["run", "minilm", "A man plays guitar.", "--stages", "2",
                                   "--backend", "wasm", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(out["embedding"]) == 384
    stages = out["stages"]
    assert [s["model"] for s in stages] == ["minilm.stage0of2", "minilm.stage1of2"]
    assert stages[0]["worker_id"] != stages[1]["worker_id"]
    assert all(s["backend"] == "wasm" and s["runs"] == 1 for s in stages)
    from webaccel.models import registry
    from webaccel.native import NativeRunner

    spec = registry.get("minilm")
    tensors = spec.processor().preprocess(["A man plays guitar."], {}).tensors
    native = NativeRunner().run(spec, tensors, "fp32")[0]["sentence_embedding"][0]
    assert np.abs(np.array(out["embedding"]) - native).max() < 1e-4
