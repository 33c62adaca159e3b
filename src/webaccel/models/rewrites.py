"""ONNX graph rewrites that keep outputs but suit onnxruntime-web's backends better."""

from __future__ import annotations

from pathlib import Path

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
    # Drop what no output needs any more (the old mask subgraph, the IsNaN nodes).
    needed = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    del g.node[:]
    g.node.extend(reversed(keep))  # still topologically sorted: we only removed nodes
    used = {i for n in g.node for i in n.input}
    kept_inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    onnx.checker.check_model(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest))
    return dest
