"""Which nodes carry constant weights a weight-only quantizer can shrink, and their layer groups.

``int4`` chooses among these nodes; ``mixed`` picks a precision per group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx


@dataclass(frozen=True)
class WeightNode:
    """A node whose constant weight a weight-only quantizer can shrink."""

    name: str
    op_type: str  # MatMul | Gather
    weight: str  # initializer name
    bytes: int  # fp32 bytes of that weight
    group: str  # layer group (see :func:`layer_group`)


# A path segment ending in a ModuleList index: "layer.3", "layers.12", "h.0", "cross.1".
_LAYER_RE = re.compile(r"(?:^|/)([A-Za-z_]\w*\.\d+)(?=/|$)")


def layer_group(node_name: str, op_type: str = "") -> str:
    """Group key of a node: the module path up to its first indexed segment.

    torch.onnx.export names nodes after the module path
    (``/encoder/layer.3/attention/self/query/MatMul``), so the layer index is
    in the name; everything up to it is the group (``encoder/layer.3``).
    """
    name = node_name.lstrip("/")
    m = _LAYER_RE.search(name)
    if m:
        return name[: m.end()].strip("/")
    if op_type == "Gather" or "embed" in name.lower():
        return "embeddings"
    parts = [p for p in name.split("/") if p]
    return parts[0] if len(parts) > 1 else "other"


def weight_nodes(model: onnx.ModelProto) -> list[WeightNode]:
    """MatMul nodes with a 2-D constant B and Gather nodes over a 2-D constant table."""
    inits = {i.name: i for i in model.graph.initializer}
    out: list[WeightNode] = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            w = inits[node.input[1]]
        elif (
            node.op_type == "Gather"
            and node.input
            and node.input[0] in inits
            and all(a.i == 0 for a in node.attribute if a.name == "axis")
        ):
            # Only row lookups (axis 0): GatherBlockQuantized blocks along rows.
            w = inits[node.input[0]]
        else:
            continue
        if len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            continue
        nbytes = int(np.prod(w.dims)) * 4
        out.append(
            WeightNode(
                node.name, node.op_type, w.name, nbytes, layer_group(node.name, node.op_type)
            )
        )
    return out


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(
        int(np.prod(i.dims)) * 4
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT
    )


def _nameless_nodes_named(model: onnx.ModelProto) -> None:
    # The quantizer selects nodes by name; give anonymous ones stable names.
    for k, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"


__all__ = ["WeightNode", "layer_group", "weight_nodes"]
