"""``soak``: requests answered correctly / requests sent, while workers die and one lies.

``webaccel bench soak --minutes N`` starts ``webaccel serve`` in this process
(the same routes, pool and metrics as the command) with answer checks on
every result (``verify="all"``), then for N minutes:

* clients send a mix of ``/v1/embeddings`` (MiniLM) and streamed
  ``/v1/chat/completions`` (the tiny test Llama, greedy, built here through
  the real export) over HTTP, with the official shapes;
* a chaos task SIGKILLs a random browser every ``kill_every`` seconds (60; the
  pool must retry its requests and fail its streams over);
* one worker lies: a real Chromium whose transport perturbs every answer
  after its first (a tampered page), adopted as a remote worker;
* a sampler records the memory (RSS) of this process and every browser.

Every answer is compared with the native reference (onnxruntime in this
process: the embedding's cosine, the chat's exact greedy text).  Figures:
requests sent, answered, lost (an error reached the client), wrong (a wrong
answer reached the client), p50/p99 latency per kind, kills and the pool's
recovery times, quarantined workers, peak memory and memory over time.

Grid nodes and gateway peers are not killed here (the pool's own workers are
browsers launched by the server); say so rather than pretend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
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

SENTENCES = (
    "A man is playing a guitar on the street.",
    "The cat sleeps on a warm windowsill.",
    "Stock markets fell sharply after the announcement.",
    "She reads the newspaper every morning with coffee.",
    "Heavy rain is expected across the region tomorrow.",
    "The committee approved the new budget on Tuesday.",
)
CHAT_PROMPTS = ("Tell me a story.", "What is a river?", "Name three colours.")
KEY = "soak-" + "k" * 20


class LyingWorker:
    """A real worker whose answers are perturbed after its first ``honest`` runs.

    Stands in for a tampered page or a broken GPU driver: the page computes,
    the transport delivers something else.  Everything but ``run`` is the
    real worker's.
    """

    remote = True

    def __init__(self, inner: Any, honest: int = 1) -> None:
        self._inner = inner
        self._honest = honest
        self._runs = 0
        self.lies = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @property
    def alive(self) -> bool:
        return bool(self._inner.alive)

    async def run(self, key: str, inputs: Any, **kw: Any) -> Any:
        import dataclasses

        res = await self._inner.run(key, inputs, **kw)
        self._runs += 1
        if self._runs <= self._honest:
            return res
        self.lies += 1
        rng = np.random.default_rng(self._runs)
        bent = {
            k: (v + rng.normal(0, 0.5, v.shape).astype(v.dtype)) if v.dtype.kind == "f" else v
            for k, v in res.outputs.items()
        }
        return dataclasses.replace(res, outputs=bent)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _references() -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Native embeddings per sentence and the greedy chat text per prompt."""
    from webaccel.generation import GenerationParams, load_generation_model
    from webaccel.generation.native import NativeGenerator
    from webaccel.generation.testing import tiny_llama_spec
    from webaccel.models import registry
    from webaccel.native import NativeRunner

    spec = registry.get("minilm")
    proc = spec.processor()
    prepared = proc.preprocess(list(SENTENCES), {})
    outputs, _, _ = NativeRunner().run(
        spec, prepared.tensors, "fp32", list(spec.output_names or []) or None
    )
    emb = proc.postprocess(outputs, prepared)["embeddings"]
    tiny_llama_spec("tiny-llama")
    _, gm, path = load_generation_model("tiny-llama")
    native = NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim)
    chats = {}
    for p in CHAT_PROMPTS:
        ids = gm.encode(gm.apply_chat_template([{"role": "user", "content": p}]))
        res = native.generate(ids, GenerationParams(max_tokens=16), stop_token_ids=gm.eos_token_ids)
        chats[p] = gm.decode(res.token_ids)
    return {s: emb[i] for i, s in enumerate(SENTENCES)}, chats


async def _soak(minutes: float, clients: int, kill_every: float, browsers: int) -> dict[str, Any]:
    import httpx
    import psutil

    from webaccel.serve import serve_forever

    want_emb, want_chat = await asyncio.to_thread(_references)
    port = _free_port()
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    server = asyncio.create_task(
        serve_forever(
            port=port,
            browsers=browsers,
            api_key=KEY,
            ready=ready,
            stop=stop,
            verify="all",
            quiet=True,
        )
    )
    engine = await asyncio.wait_for(ready, 180)
    liar = LyingWorker(await engine.host.launch("chromium"))
    engine.pool.adopt(liar)
    url = f"http://127.0.0.1:{port}"
    headers = {"authorization": f"Bearer {KEY}"}
    rng = random.Random(0)
    results: list[dict[str, Any]] = []
    kills: list[float] = []
    memory: list[tuple[float, float]] = []
    t0 = time.monotonic()
    end = t0 + minutes * 60

    async def one(client: httpx.AsyncClient, kind: str) -> None:
        start = time.monotonic()
        row: dict[str, Any] = {"kind": kind, "ok": False, "wrong": False, "code": None}
        try:
            if kind == "embedding":
                text = rng.choice(SENTENCES)
                r = await client.post(
                    "/v1/embeddings", json={"model": "minilm", "input": text}, timeout=300
                )
                if r.status_code != 200:
                    row["code"] = r.json().get("error", {}).get("code", r.status_code)
                else:
                    got = np.asarray(r.json()["data"][0]["embedding"], dtype=np.float64)
                    ref = want_emb[text].astype(np.float64)
                    cos = float(got @ ref / (np.linalg.norm(got) * np.linalg.norm(ref)))
                    row["ok"], row["wrong"] = cos >= 0.999, cos < 0.999
            else:
                prompt = rng.choice(CHAT_PROMPTS)
                body = {
                    "model": "tiny-llama",
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": 16,
                    "temperature": 0,
                    "stream": True,
                }
                text, failed = "", None
                async with client.stream(
                    "POST", "/v1/chat/completions", json=body, timeout=300
                ) as r:
                    if r.status_code != 200:
                        failed = r.status_code
                    async for line in r.aiter_lines():
                        if not line.startswith("data: ") or line == "data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            failed = chunk["error"].get("code")
                            break
                        text += chunk["choices"][0]["delta"].get("content") or ""
                if failed is not None:
                    row["code"] = failed
                else:
                    row["ok"], row["wrong"] = text == want_chat[prompt], text != want_chat[prompt]
        except httpx.HTTPError as exc:
            row["code"] = type(exc).__name__
        row["ms"] = (time.monotonic() - start) * 1000
        results.append(row)

    async def client_loop(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            while time.monotonic() < end:
                await one(client, "chat" if rng.random() < 0.3 else "embedding")

    async def chaos() -> None:
        while time.monotonic() + kill_every < end:
            await asyncio.sleep(kill_every)
            victims = [
                w
                for w in engine.pool.workers.values()
                if getattr(w, "process", None) is not None and w.alive and w is not liar
            ]
            if victims:
                victim = rng.choice(victims)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(victim.process.pid, signal.SIGKILL)
                    kills.append(time.monotonic() - t0)

    async def sampler() -> None:
        me = psutil.Process()
        while time.monotonic() < end + 5:
            rss = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            memory.append((round(time.monotonic() - t0, 1), round(rss / 2**20, 1)))
            await asyncio.sleep(1.0)

    tasks = [asyncio.create_task(client_loop(i)) for i in range(clients)]
    aux = [asyncio.create_task(chaos()), asyncio.create_task(sampler())]
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in aux:
            t.cancel()
        stats = engine.pool.stats()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server, 60)
    by_kind = {}
    for kind in ("embedding", "chat"):
        rows = [r for r in results if r["kind"] == kind]
        ok = [r["ms"] for r in rows if r["ok"]]
        by_kind[kind] = {
            "sent": len(rows),
            "correct": len(ok),
            "latency_ms": {**summarize(ok), "p99": float(np.percentile(ok, 99))} if ok else None,
        }
    errors: dict[str, int] = {}
    for r in results:
        if r["code"] is not None:
            errors[str(r["code"])] = errors.get(str(r["code"]), 0) + 1
    step = max(1, len(memory) // 120)
    return {
        "minutes": minutes,
        "clients": clients,
        "sent": len(results),
        "correct": sum(r["ok"] for r in results),
        "lost": sum(r["code"] is not None for r in results),
        "wrong": sum(r["wrong"] for r in results),
        "errors": errors,
        "by_kind": by_kind,
        "kills_at_s": [round(k, 1) for k in kills],
        "recovery_s": stats.get("recovery_s", []),
        "quarantined": {k: v["reason"] for k, v in stats.get("quarantined", {}).items()},
        "liar_lies": liar.lies,
        "answers_checked": stats["counters"].get("answers_checked", 0),
        "peak_rss_mb": max((m for _, m in memory), default=None),
        "memory_mb": memory[::step],
        "not_killed": "Grid nodes and gateway peers (the served pool launches its own browsers)",
    }


@benchmark(
    "soak",
    ratio_is="requests answered correctly / requests sent, while browsers are killed and one lies",
    better="higher",
)
def soak(ctx: BenchContext) -> Measurement:
    try:
        import torch  # noqa: F401 - the tiny chat model is exported with it
    except ImportError as exc:
        raise BenchmarkUnavailable(f"the soak's chat model is built with torch: {exc}") from exc
    from webaccel.browsers.chromium import find_chromium

    try:
        find_chromium()
    except Exception as exc:  # noqa: BLE001 - any reason there is no browser
        raise BenchmarkUnavailable(f"no Chromium to soak: {exc}") from exc
    o = ctx.options
    figures = asyncio.run(
        _soak(
            minutes=float(o.get("minutes", 1.0)),
            clients=int(o.get("clients", 4)),
            kill_every=float(o.get("kill_every", 60.0)),
            browsers=int(o.get("browsers", 2)),
        )
    )
    sent = figures["sent"]
    if not sent:
        raise RuntimeError("the soak sent no request")
    return Measurement(ratio=figures["correct"] / sent, figures=figures)
