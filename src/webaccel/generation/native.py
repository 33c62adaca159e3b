"""The same decode loop as generate.mjs, on native onnxruntime (CPU).

It is the reference the page is checked against (same graph, same sampler,
same seed -> same tokens) and the baseline of the ``generation`` benchmark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class NativeResult:
    token_ids: list[int]
    finish_reason: str
    stats: dict[str, Any] = field(default_factory=dict)


class NativeGenerator:
    def __init__(self, onnx_path: Path, *, kv_heads: int, head_dim: int, threads: int = 1) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(onnx_path), opts, providers=["CPUExecutionProvider"]
        )
        self.kv_heads = kv_heads
        self.head_dim = head_dim
        self.past_names = [
            i.name for i in self.session.get_inputs() if i.name.startswith("past_key_values.")
        ]
        self.present_names = [n.replace("past_key_values.", "present.") for n in self.past_names]

    def generate(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        *,
        seed: int = 0,
        stop_token_ids: list[int] | tuple[int, ...] = (),
    ) -> NativeResult:
        sampler = Sampler(params, seed)
        sampler.observe(prompt_ids)
        stops = set(stop_token_ids)
        n = len(prompt_ids)
        feeds: dict[str, np.ndarray] = {
            "input_ids": np.array([prompt_ids], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.arange(n, dtype=np.int64)[None],
        }
        empty = np.zeros((1, self.kv_heads, 0, self.head_dim), dtype=np.float32)
        for name in self.past_names:
            feeds[name] = empty
        out: list[int] = []
        finish = "length"
        total = n
        t0 = time.perf_counter()
        t_first: float | None = None
        t_last = t0
        outputs = ["logits", *self.present_names]
        while len(out) < params.max_tokens:
            results = self.session.run(outputs, feeds)
            token = sampler.pick(results[0][0, -1])
            out.append(token)
            t_last = time.perf_counter()
            if t_first is None:
                t_first = t_last
            if token in stops:
                finish = "stop"
                break
            if len(out) >= params.max_tokens:
                break
            total += 1
            feeds = decode_feeds(token, total)
            feeds.update(zip(self.past_names, results[1:], strict=True))
        decode_s = (t_last - t_first) if t_first is not None else 0.0
        return NativeResult(
            out,
            finish,
            {
                "tokens": len(out),
                "prompt_tokens": n,
                "ttft_ms": (t_first - t0) * 1000 if t_first is not None else None,
                "decode_ms": decode_s * 1000,
                "total_ms": (t_last - t0) * 1000,
                "decode_tokens_per_s": (len(out) - 1) / decode_s
                if len(out) > 1 and decode_s > 0
                else None,
                "tokens_per_s": len(out) / (t_last - t0) if t_last > t0 else None,
            },
        )
