"""Greedy/sampled decoding of a text generator split into layer stages.

The decode loop of :class:`webaccel.generation.native.NativeGenerator` (the
reference the page's loop is checked against), with each step's graph run
replaced by ``await run(feeds) -> outputs`` over the stages: stage ``k``
takes the hidden state, the mask and position ids, and the past keys and
values of *its own* layers, and gives back its layers' ``present.N`` -- so
each stage's worker only ever sees its part of the KV cache.  The cache
travels through Python between steps (not kept in the page yet).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np

from webaccel.generation.native import decode_feeds
from webaccel.generation.sampling import GenerationParams, Sampler

RunFn = Callable[[dict[str, np.ndarray]], Awaitable[Mapping[str, np.ndarray]]]


async def generate_split(
    run: RunFn,
    prompt_ids: Sequence[int],
    params: GenerationParams,
    *,
    past_names: Sequence[str],
    kv_heads: int,
    head_dim: int,
    seed: int = 0,
    stop_token_ids: Sequence[int] = (),
) -> dict[str, Any]:
    sampler = Sampler(params, seed)
    sampler.observe(list(prompt_ids))
    stops = set(stop_token_ids)
    n = len(prompt_ids)
    feeds: dict[str, np.ndarray] = {
        "input_ids": np.array([list(prompt_ids)], dtype=np.int64),
        "attention_mask": np.ones((1, n), dtype=np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None],
    }
    empty = np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
    for name in past_names:
        feeds[name] = empty
    out: list[int] = []
    finish = "length"
    total = n
    t0 = time.perf_counter()
    while len(out) < params.max_tokens:
        results = await run(feeds)
        token = sampler.pick(results["logits"][0, -1])
        out.append(token)
        if token in stops:
            finish = "stop"
            break
        if len(out) >= params.max_tokens:
            break
        total += 1
        feeds = decode_feeds(token, total)
        for name in past_names:
            feeds[name] = np.asarray(results[name.replace("past_key_values.", "present.")])
    return {"token_ids": out, "finish_reason": finish,
            "total_ms": (time.perf_counter() - t0) * 1000}


__all__ = ["generate_split"]
