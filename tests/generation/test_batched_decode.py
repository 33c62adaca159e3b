"""The exported decoder runs left-padded batches: each row's logits are its solo run's.

generate.mjs batches concurrent streams as rows of one decode step, each row's
KV cache left-padded to the longest (attention_mask 0 over the padding,
position_ids the row's own count).  This checks the graph itself, on native
onnxruntime, so a change of the export that broke padded masks fails here
rather than as different text in a browser.
"""

from __future__ import annotations

import numpy as np


def _prefill(session, names, ids, kv_heads, head_dim):
    past, outs = names
    n = len(ids)
    feeds = {
        "input_ids": np.array([ids], dtype=np.int64),
        "attention_mask": np.ones((1, n), dtype=np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None],
    }
    for p in past:
        feeds[p] = np.zeros((1, kv_heads, 0, head_dim), dtype=np.float32)
    return session.run(outs, feeds)


def _solo_logits(session, names, ids, steps, kv_heads, head_dim):
    past, outs = names
    r = _prefill(session, names, ids, kv_heads, head_dim)
    logits = [r[0][0, -1]]
    n = len(ids)
    for _ in range(steps - 1):
        tok = int(logits[-1].argmax())
        n += 1
        feeds = {
            "input_ids": np.array([[tok]], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
            "position_ids": np.array([[n - 1]], dtype=np.int64),
        }
        feeds.update(zip(past, r[1:], strict=True))
        r = session.run(outs, feeds)
        logits.append(r[0][0, -1])
    return logits


def test_left_padded_rows_equal_solo_runs(tiny):
    import onnxruntime as ort

    _, gm, path = tiny
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    past = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    outs = ["logits", *(n.replace("past_key_values.", "present.") for n in past)]
    names = (past, outs)
    H, D = gm.kv_heads, gm.head_dim
    prompts = [gm.encode(p) for p in ("Hello there my friend", "Hi", "東京 🚀 x")]
    steps = 10
    solo = [_solo_logits(session, names, ids, steps, H, D) for ids in prompts]

    # Each prompt prefilled alone, then packed left-padded as generate.mjs does.
    pre = [_prefill(session, names, ids, H, D) for ids in prompts]
    lens = [len(ids) for ids in prompts]
    B, L = len(prompts), max(lens)
    kv = []
    for i in range(len(past)):
        x = np.zeros((B, H, L, D), dtype=np.float32)
        for r in range(B):
            x[r, :, L - lens[r] :] = pre[r][1 + i][0]
        kv.append(x)
    mask = np.zeros((B, L), dtype=np.int64)
    for r in range(B):
        mask[r, L - lens[r] :] = 1
    toks = [int(p[0][0, -1].argmax()) for p in pre]
    worst = 0.0
    for step in range(1, steps):
        mask = np.concatenate([mask, np.ones((B, 1), dtype=np.int64)], axis=1)
        feeds = {
            "input_ids": np.array([[t] for t in toks], dtype=np.int64),
            "attention_mask": mask,
            "position_ids": np.array([[n] for n in lens], dtype=np.int64),
        }
        feeds.update(zip(past, kv, strict=True))
        res = session.run(outs, feeds)
        for r in range(B):
            worst = max(worst, float(np.abs(res[0][r, -1] - solo[r][step]).max()))
            assert int(res[0][r, -1].argmax()) == int(solo[r][step].argmax())
        toks = [int(res[0][r, -1].argmax()) for r in range(B)]
        lens = [n + 1 for n in lens]
        kv = res[1:]
    assert worst < 1e-4, worst
