"""ONNX graph rewrites that keep outputs but suit onnxruntime-web's backends better."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def simplify_attention_mask(src: Path, dest: Path) -> Path:
    """Rewrite an exported BERT's attention-mask plumbing so WebGPU runs all of it on the GPU.

    transformers 5 exports the padding mask as int64 index arithmetic that
    builds a [B, 1, S, S] bool mask, and guards every softmax with
    ``Where(IsNaN(p), 0, p)``.  onnxruntime-web has no WebGPU kernel for
    IsNaN or for most int64 ops, so each layer copied the [B, 12, S, S]
    softmax to the CPU and back (measured on an H200: ~100 ms of a 110 ms run
    at 32x128, ~460 of 580 ms at 128x128; GPU kernels summed to 9 and 120 ms).
    Here the mask becomes ``Unsqueeze(Cast(attention_mask, bool))`` ([B, 1, 1, S],
    broadcast by the existing Where/Add), masked scores get a large finite
    negative instead of -inf, and the NaN guard goes: with a finite fill a
    softmax row is NaN only if every key is padding, which no tokenized text
    produces (it always holds [CLS]).  Outputs match the original to rounding.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    mask_inputs = [
        n
        for n in g.node
        if n.op_type == "Where"
        and "/attention/self/Where" in n.name
        and not n.name.endswith("Where_1")
    ]
    guards = [
        n for n in g.node if n.op_type == "Where" and n.name.endswith("/attention/self/Where_1")
    ]
    if not mask_inputs:
        raise ValueError(
            f"{src}: no attention-mask Where nodes found; not a transformers-5 BERT export"
        )
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "webaccel_mask_axes"),
            numpy_helper.from_array(np.array([-1e30], dtype=np.float32), "webaccel_mask_fill"),
        ]
    )
    head = [
        helper.make_node(
            "Cast",
            ["attention_mask"],
            ["webaccel_mask_bool"],
            to=onnx.TensorProto.BOOL,
            name="webaccel/mask/Cast",
        ),
        helper.make_node(
            "Unsqueeze",
            ["webaccel_mask_bool", "webaccel_mask_axes"],
            ["webaccel_mask"],
            name="webaccel/mask/Unsqueeze",
        ),
    ]
    rest = list(g.node)
    del g.node[:]
    g.node.extend(head + rest)  # graph nodes must stay topologically sorted
    for n in mask_inputs:
        n.input[0] = "webaccel_mask"
        n.input[2] = "webaccel_mask_fill"
    for n in guards:  # Where(IsNaN(p), 0, p) -> p
        p, out = n.input[2], n.output[0]
        for m in g.node:
            for i, name in enumerate(m.input):
                if name == out:
                    m.input[i] = p
        g.node.remove(n)
    prune_unused(g)  # the old mask subgraph, the IsNaN nodes
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest


def prune_unused(graph: Any) -> None:
    """Drop the nodes no graph output needs, then the initializers no node reads."""
    needed = {o.name for o in graph.output}
    keep = []
    for n in reversed(list(graph.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))  # still topologically sorted: only removals
    used = {i for n in graph.node for i in n.input}
    kept_inits = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)


def nan_guards_on_gpu(model: Any) -> int:
    """``Where(IsNaN(x), a, b)`` -> ``Where(Equal(x, x), b, a)`` in place; returns how many.

    transformers 5 exports guard every attention softmax with ``IsNaN`` (a row
    of padding only is NaN).  onnxruntime-web has no WebGPU kernel for IsNaN, so
    each layer copied its attention probabilities to the CPU and the condition
    back, two GPU syncs per layer and token.  ``Equal(x, x)`` is false exactly
    for NaN and runs on the GPU, so the guard stays, with the same result.
    """
    from onnx import helper

    g = model.graph
    users: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    count = 0
    for n in list(g.node):
        if n.op_type != "IsNaN" or n.output[0] in outputs:
            continue
        uses = users.get(n.output[0], [])
        if not uses or any(u.op_type != "Where" or u.input[0] != n.output[0] for u in uses):
            continue  # not only a Where condition: leave it
        equal = helper.make_node("Equal", [n.input[0], n.input[0]], [n.output[0]], name=n.name)
        g.node.insert(list(g.node).index(n), equal)
        g.node.remove(n)
        for u in uses:
            u.input[1], u.input[2] = u.input[2], u.input[1]
        count += 1
    return count
