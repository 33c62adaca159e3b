"""The same decode loop as generate.mjs (:mod:`webaccel.generation.decode_loop`), on native
onnxruntime (CPU).

It is the reference the page is checked against (same graph, same sampler,
same seed -> same tokens) and the baseline of the ``generation`` benchmark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webaccel.generation.decode_loop import DecodeLoop
from webaccel.generation.sampling import GenerationParams


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
        loop = DecodeLoop(
            prompt_ids,
            params,
            past_names=self.past_names,
            kv_heads=self.kv_heads,
            head_dim=self.head_dim,
            seed=seed,
            stop_token_ids=stop_token_ids,
        )
        t0 = time.perf_counter()
        t_first: float | None = None
        t_last = t0
        outputs = ["logits", *self.present_names]
        while loop.feeds is not None:
            results = self.session.run(outputs, loop.feeds)
            loop.advance(results[0][0, -1], dict(zip(self.present_names, results[1:], strict=True)))
            t_last = time.perf_counter()
            if t_first is None:
                t_first = t_last
        out, n = loop.token_ids, loop.prompt_tokens
        decode_s = (t_last - t_first) if t_first is not None else 0.0
        return NativeResult(
            out,
            loop.finish_reason,
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
