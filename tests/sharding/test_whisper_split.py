"""Whisper with its encoder and decoder on different browser workers (the pool routes
audio to Firefox first): the same tokens as in one worker, also when the decoder's
browser is SIGKILLed mid-transcription."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


async def test_encoder_and_decoder_on_two_workers_equal_one_worker(engine):
    from webaccel.models import registry, whisper
    from webaccel.sharding.parts import PartsJob, accelerate_parts

    wav = str(whisper.beckett_wav())
    whole = await engine.accelerate("whisper-tiny-en", wav, {"timeout": 600}, platform="wasm")
    split = await accelerate_parts(engine, "whisper-tiny-en", wav, platform="wasm")
    print("split:", split["text"], split["stages"])
    assert split["tokens"] == whole["tokens"] and split["text"] == whole["text"]
    enc, dec = split["stages"]
    assert enc["part"] == "encoder" and dec["part"] == "decoder"
    assert enc["worker_id"] != dec["worker_id"]
    assert enc["runs"] >= 1 and dec["runs"] > 5

    spec = registry.get("whisper-tiny-en")
    parts = await asyncio.to_thread(spec.ensure_parts, "fp32")
    async with PartsJob(engine, spec, parts, platform="wasm") as job:
        decoder = job.runners["decoder"]
        task = asyncio.ensure_future(job.run(wav, {}))
        while decoder.runs < 5:
            assert not task.done(), "finished before the kill"
            await asyncio.sleep(0.005)
        assert decoder.session is not None
        victim = decoder.session.worker_id
        os.killpg(engine.pool.workers[victim].process.pid, signal.SIGKILL)
        out = await asyncio.wait_for(task, 300)
        report = job.report()
    print("after kill:", report)
    assert out["tokens"] == whole["tokens"]
    assert report[1]["replayed"] >= 1 and report[1]["workers"][0] == victim
    assert report[1]["worker_id"] != victim and report[0]["replayed"] == 0
