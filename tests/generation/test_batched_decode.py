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


def test_fixed_cache_rows_with_own_lengths_equal_solo_runs(tiny):
    """The captured decode step's layout (generate.mjs CapturedBatch), on native
    onnxruntime: a cache of M slots per row, row r holding its stream's positions in
    slots 0..len-1 (the rest unused, masked 0), the new key/value in slot M of
    present (Concat), copied into slot len afterwards; a free row holds nothing.
    Each row's logits are its solo run's, and next_token is their first argmax."""
    import onnxruntime as ort

    _, gm, path = tiny
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    past = [i.name for i in session.get_inputs() if i.name.startswith("past_key_values.")]
    outs = ["logits", *(n.replace("past_key_values.", "present.") for n in past), "next_token"]
    H, D = gm.kv_heads, gm.head_dim
    prompts = [gm.encode(p) for p in ("Hello there my friend", "Hi", "東京 🚀 x")]
    steps, M, B = 10, 40, 4  # row 3 stays free
    solo = [_solo_logits(session, (past, outs[:-1]), ids, steps, H, D) for ids in prompts]
    pre = [_prefill(session, (past, outs[:-1]), ids, H, D) for ids in prompts]
    lens = [len(ids) for ids in prompts]
    cache = [np.zeros((B, H, M, D), dtype=np.float32) for _ in past]
    for r, n in enumerate(lens):
        for k, c in enumerate(cache):
            c[r, :, :n] = pre[r][1 + k][0]
    toks = [int(p[0][0, -1].argmax()) for p in pre]
    worst = 0.0
    for step in range(1, steps):
        mask = np.zeros((B, M + 1), dtype=np.int64)
        mask[:, M] = 1
        ids = np.zeros((B, 1), dtype=np.int64)
        pos = np.zeros((B, 1), dtype=np.int64)
        for r, n in enumerate(lens):
            mask[r, :n] = 1
            ids[r, 0], pos[r, 0] = toks[r], n
        res = session.run(
            outs,
            {
                "input_ids": ids,
                "attention_mask": mask,
                "position_ids": pos,
                **dict(zip(past, cache, strict=True)),
            },
        )
        logits, present, next_token = res[0], res[1:-1], res[-1]
        assert next_token.shape == (B, 1) and next_token.dtype == np.int64
        for r in range(len(prompts)):
            worst = max(worst, float(np.abs(logits[r, -1] - solo[r][step]).max()))
            assert (
                int(next_token[r, 0]) == int(logits[r, -1].argmax()) == int(solo[r][step].argmax())
            )
            for k, c in enumerate(cache):
                c[r, :, lens[r]] = present[k][r, :, M]
        assert np.isfinite(logits[len(prompts)]).all()  # the free row
        toks = [int(next_token[r, 0]) for r in range(len(prompts))]
        lens = [n + 1 for n in lens]
    assert worst < 1e-4, worst


def test_export_leaves_no_int64_cast_or_bool_and_for_the_gpu(tiny):
    """JSEP runs no Cast from int64 and no bool And/Flatten/Gather: such nodes went to the
    CPU, and graph capture refuses any CPU node (models/rewrites.py int64_inputs_on_gpu)."""
    import onnx

    _, _, path = tiny
    graph = onnx.load(str(path), load_external_data=False).graph
    int64_inputs = {
        i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.INT64
    }
    assert int64_inputs == {"input_ids", "attention_mask", "position_ids"}
    consumers = [n for n in graph.node if set(n.input) & {"attention_mask", "position_ids"}]
    assert sorted(n.op_type for n in consumers) == ["Gather", "Gather"]
    assert not [n for n in graph.node if n.op_type == "And"]
    producer = {o: n for n in graph.node for o in n.output}
    assert producer["logits"].op_type not in ("Unsqueeze", "Reshape")  # a recorded kernel
    assert producer["next_token"].op_type == "ArgMax"
