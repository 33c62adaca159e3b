"""Greedy/sampled decoding of a text generator split into layer stages.

The decode loop of :mod:`webaccel.generation.decode_loop` (the one
:class:`webaccel.generation.native.NativeGenerator`, the page's reference, drives),
with each step's graph run being ``await run(feeds) -> outputs`` over the stages: stage ``k``
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

from webaccel.generation.decode_loop import DecodeLoop
from webaccel.generation.sampling import GenerationParams

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
    loop = DecodeLoop(prompt_ids, params, past_names=past_names, kv_heads=kv_heads,
                      head_dim=head_dim, seed=seed, stop_token_ids=stop_token_ids)
    t0 = time.perf_counter()
    while loop.feeds is not None:
        results = await run(loop.feeds)
        loop.advance(results["logits"][0, -1], results)
    return {"token_ids": loop.token_ids, "finish_reason": loop.finish_reason,
            "total_ms": (time.perf_counter() - t0) * 1000}


__all__ = ["generate_split"]
