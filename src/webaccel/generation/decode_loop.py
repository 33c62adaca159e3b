"""The decode loop's bookkeeping, free of I/O: the caller runs the graph.

``generate.mjs`` runs the same loop in the page; :class:`NativeGenerator` (native
onnxruntime) and :func:`webaccel.sharding.generate.generate_split` (a generator
split into stages on several workers) drive this one, each with its own way of
running a step (a local session, awaited stage runs)::

    loop = DecodeLoop(prompt_ids, params, past_names=..., kv_heads=..., head_dim=...)
    while loop.feeds is not None:
        outputs = run(loop.feeds)  # logits and present.N
        loop.advance(outputs["logits"][0, -1], outputs)
    loop.token_ids, loop.finish_reason
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from webaccel.generation.sampling import GenerationParams, Sampler


def decode_feeds(token: int, total: int) -> dict[str, np.ndarray]:
    """The next decode step's inputs after ``token``, with ``total`` tokens in the cache
    (the past key/values are added by the caller)."""
    return {
        "input_ids": np.array([[token]], dtype=np.int64),
        "attention_mask": np.ones((1, total), dtype=np.int64),
        "position_ids": np.array([[total - 1]], dtype=np.int64),
    }


class DecodeLoop:
    """Batch 1: the prefill's feeds, then one decode step per picked token."""

    def __init__(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        *,
        past_names: Sequence[str],
        kv_heads: int,
        head_dim: int,
        seed: int = 0,
        stop_token_ids: Sequence[int] = (),
    ) -> None:
        self.params = params
        self.past_names = list(past_names)
        self.sampler = Sampler(params, seed)
        self.sampler.observe(list(prompt_ids))
        self.stops = set(stop_token_ids)
        self.prompt_tokens = self.total = len(prompt_ids)
        self.token_ids: list[int] = []
        self.finish_reason = "length"
        empty = np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
        # the inputs of the next graph run; None once the loop is done
        self.feeds: dict[str, np.ndarray] | None = {
            "input_ids": np.array([list(prompt_ids)], dtype=np.int64),
            "attention_mask": np.ones((1, self.total), dtype=np.int64),
            "position_ids": np.arange(self.total, dtype=np.int64)[None],
            **{name: empty for name in self.past_names},
        }
        if params.max_tokens <= 0:
            self.feeds = None

    def advance(self, last_logits: np.ndarray, outputs: Mapping[str, np.ndarray]) -> int:
        """Picks the next token from the last position's logits; ``outputs`` holds
        the step's ``present.N`` (the next step's past).  Returns the token."""
        if self.feeds is None:
            raise RuntimeError("the decode loop is done")
        token = self.sampler.pick(last_logits)
        self.token_ids.append(token)
        if token in self.stops:
            self.finish_reason = "stop"
            self.feeds = None
        elif len(self.token_ids) >= self.params.max_tokens:
            self.feeds = None
        else:
            self.total += 1
            feeds = decode_feeds(token, self.total)
            for name in self.past_names:
                feeds[name] = np.asarray(outputs[name.replace("past_key_values.", "present.")])
            self.feeds = feeds
        return token


__all__ = ["DecodeLoop", "decode_feeds"]
