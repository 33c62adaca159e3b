"""The I/O-free decode loop: feeds, the KV hand-over, stop and length ends."""

from __future__ import annotations

import numpy as np
import pytest

from webaccel.generation.decode_loop import DecodeLoop
from webaccel.generation.sampling import GenerationParams

VOCAB = 16
PAST = ["past_key_values.0.key", "past_key_values.0.value"]


def step(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A stand-in graph: greedy picks last token + 1; the cache grows by the new tokens."""
    ids = feeds["input_ids"]
    logits = np.zeros((1, ids.shape[1], VOCAB), dtype=np.float32)
    logits[0, -1, (int(ids[0, -1]) + 1) % VOCAB] = 1.0
    out = {"logits": logits}
    for name in PAST:
        past = feeds[name]
        new = np.full((1, 2, ids.shape[1], 4), ids.shape[1], np.float32)
        grown = np.concatenate([past, new], axis=2)
        out[name.replace("past_key_values.", "present.")] = grown
    return out


def run(loop: DecodeLoop) -> list[dict[str, np.ndarray]]:
    seen = []
    while loop.feeds is not None:
        seen.append(loop.feeds)
        out = step(loop.feeds)
        loop.advance(out["logits"][0, -1], out)
    return seen


def test_greedy_runs_to_max_tokens_with_the_cache_handed_over() -> None:
    loop = DecodeLoop(
        [3, 4, 5], GenerationParams(max_tokens=4), past_names=PAST, kv_heads=2, head_dim=4
    )
    seen = run(loop)
    assert loop.token_ids == [6, 7, 8, 9] and loop.finish_reason == "length"
    assert len(seen) == 4  # prefill + 3 decode steps: the last token needs no run
    assert seen[0]["input_ids"].tolist() == [[3, 4, 5]] and seen[0][PAST[0]].shape == (1, 2, 0, 4)
    last = seen[-1]
    assert last["input_ids"].tolist() == [[8]]
    assert last["position_ids"].tolist() == [[5]] and last["attention_mask"].shape == (1, 6)
    assert last[PAST[1]].shape == (1, 2, 5, 4)  # 3 prompt tokens + 2 decoded


def test_a_stop_token_ends_the_loop_and_is_kept() -> None:
    loop = DecodeLoop(
        [3],
        GenerationParams(max_tokens=10),
        past_names=PAST,
        kv_heads=2,
        head_dim=4,
        stop_token_ids=[6],
    )
    run(loop)
    assert loop.token_ids == [4, 5, 6] and loop.finish_reason == "stop"
    with pytest.raises(RuntimeError):
        loop.advance(np.zeros(VOCAB, np.float32), {})
