"""PyTorch CUDA reference for `webaccel bench generation` on the GPU machine.

The same weights as the bench's ``smollm2-random`` (webaccel.generation.testing's
seeded random Llama in SmolLM2-135M's shape), the same byte-token prompts,
greedy, eager fp32, transformers ``generate`` with the KV cache, eos ignored so
every run makes exactly ``--tokens`` tokens.  JSON lines:
- ``one_stream``: decode tokens/s of one stream ((N-1) / (time for N tokens - time
  for 1)), and its token ids, to compare with the page's;
- ``ttft``: time to the first token for a ``--prompt-tokens`` prompt (prefill + 1);
- ``streams``: N prompts batched (left-padded, as transformers batches), all
  tokens / wall time.
Medians of ``--repeat`` runs after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from webaccel.bench.generation import PROMPT, STREAM_PROMPTS
from webaccel.generation import load_generation_model
from webaccel.generation.testing import (
    SMOLLM2_RANDOM,
    SMOLLM2_SHAPE,
    random_llama,
    smollm2_shaped_spec,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--streams", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    smollm2_shaped_spec("smollm2-random")
    _, gm, _ = load_generation_model("smollm2-random", "fp32")  # the bench's tokenizer
    model = random_llama(0, **SMOLLM2_RANDOM, **SMOLLM2_SHAPE).to(dev)
    common = dict(do_sample=False, pad_token_id=2, eos_token_id=None)

    def gen(
        ids: torch.Tensor, n: int, mask: torch.Tensor | None = None
    ) -> tuple[float, torch.Tensor]:
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=mask if mask is not None else torch.ones_like(ids),
                max_new_tokens=n,
                min_new_tokens=n,
                **common,
            )
        sync()
        return time.perf_counter() - t0, out

    def timed(
        ids: torch.Tensor, n: int, mask: torch.Tensor | None = None
    ) -> tuple[list[float], torch.Tensor]:
        gen(ids, n, mask)  # warm-up
        runs = [gen(ids, n, mask) for _ in range(args.repeat)]
        return [t for t, _ in runs], runs[-1][1]

    head = {
        "kind": "torch-generate",
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
    }
    print(json.dumps(head), flush=True)
    ids = torch.tensor([gm.encode(PROMPT)], device=dev)
    t_n, out = timed(ids, args.tokens)
    t_1, _ = timed(ids, 1)
    decode = (args.tokens - 1) / (statistics.median(t_n) - statistics.median(t_1))
    print(
        json.dumps(
            {
                **head,
                "what": "one_stream",
                "new_tokens": args.tokens,
                "prompt": PROMPT,
                "decode_tokens_per_s": decode,
                "tokens_per_s": args.tokens / statistics.median(t_n),
                "token_ids": out[0, ids.shape[1] :].tolist(),
            }
        ),
        flush=True,
    )
    words = (PROMPT + " ") * args.prompt_tokens
    while len(gm.encode(words)) > args.prompt_tokens:
        words = words[:-1]
    long_ids = torch.tensor([gm.encode(words)], device=dev)
    t_first, _ = timed(long_ids, 1)
    print(
        json.dumps(
            {
                **head,
                "what": "ttft",
                "prompt_tokens": long_ids.shape[1],
                "ttft_ms": statistics.median(t_first) * 1000,
            }
        ),
        flush=True,
    )
    prompts = [gm.encode(STREAM_PROMPTS[i % len(STREAM_PROMPTS)]) for i in range(args.streams)]
    width = max(len(p) for p in prompts)
    batch = torch.tensor([[2] * (width - len(p)) + p for p in prompts], device=dev)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=dev)
    t_b, _ = timed(batch, args.tokens, mask)
    print(
        json.dumps(
            {
                **head,
                "what": "streams",
                "streams": args.streams,
                "new_tokens_each": args.tokens,
                "tokens_per_s": args.streams * args.tokens / statistics.median(t_b),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
