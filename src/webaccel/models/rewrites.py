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


# Ops that move or select elements whatever their type (a bool mask can pass through
# them as float and come out the same values).
_TYPE_AGNOSTIC = {"Flatten", "Gather", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Slice"}


def int64_inputs_on_gpu(model: Any, max_positions: int) -> int:
    """Rewrite the int64 and bool ops of a causal LM export's mask and rotary inputs
    so that onnxruntime-web's WebGPU (JSEP) kernels run them; returns how many parts
    it rewrote (0, 1 or 2).

    JSEP's Cast takes no int64 input and its Flatten/Gather/Reshape/And take no
    bool, so transformers' mask code (``Cast(attention_mask, to=bool)``, then
    flatten, gather, reshape, ``And`` with the causal mask) and the rotary
    embedding's ``Cast(Unsqueeze(position_ids), to=float)`` ran on the CPU (7
    nodes, GPU syncs every step), and graph capture refuses a session with any
    CPU node.  Here the mask travels as float 0/1 from a ``Gather`` of a
    ``[0., 1.]`` table (JSEP gathers with int64 indices, as for token embeddings)
    up to its cast back to bool, ``And`` becomes ``Greater(Mul(float a, float b), 0.5)``,
    and positions come from ``Gather(arange(max_positions) as float, position_ids)``.
    Same values: masks hold 0/1, positions stay below ``max_positions``.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    nodes = list(g.node)
    producers = {o: n for n in nodes for o in n.output}
    users: dict[str, list[Any]] = {}
    for n in nodes:
        for name in n.input:
            users.setdefault(name, []).append(n)

    def cast_to(n: Any) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None)

    def float_path(start: str) -> bool:
        """Whether every use of ``start`` (through type-agnostic ops, as their data
        input) ends in a Cast to bool or a Shape, so it may carry floats instead."""
        todo, seen = [start], set()
        while todo:
            name = todo.pop()
            for u in users.get(name, []):
                if u.op_type == "Shape" or (u.op_type == "Cast" and cast_to(u) == TensorProto.BOOL):
                    continue
                if u.op_type not in _TYPE_AGNOSTIC or u.input[0] != name or u.name in seen:
                    return False
                seen.add(u.name)
                todo.extend(u.output)
        return True

    def add_init(array: Any, name: str) -> str:
        g.initializer.append(numpy_helper.from_array(array, name))
        return name

    count = 0
    for n in nodes:
        if n.op_type != "Cast":
            continue
        src = n.input[0]
        if cast_to(n) == TensorProto.BOOL and src == "attention_mask" and float_path(n.output[0]):
            table = add_init(np.array([0.0, 1.0], np.float32), "attention_mask_values")
            g.node.insert(
                list(g.node).index(n),
                helper.make_node("Gather", [table, src], [n.output[0]], name=n.name + "_gather"),
            )
            g.node.remove(n)
            count += 1
        elif cast_to(n) == TensorProto.FLOAT and src in producers:
            unsq = producers[src]
            if unsq.op_type != "Unsqueeze" or unsq.input[0] != "position_ids":
                continue
            table = add_init(np.arange(max_positions, dtype=np.float32), "position_values")
            gathered = "position_ids_as_float"
            g.node.insert(
                list(g.node).index(unsq),
                helper.make_node(
                    "Gather", [table, "position_ids"], [gathered], name=unsq.name + "_gather"
                ),
            )
            unsq.input[0] = gathered  # the Cast now casts float to float: a copy
            count += 1
    if count:
        half = add_init(np.array(0.5, np.float32), "bool_and_threshold")
        for n in list(g.node):
            if n.op_type != "And":
                continue
            at = list(g.node).index(n)
            a, b = (f"{n.name}_{k}_as_float" for k in "ab")
            prod = n.name + "_product"
            new = [
                helper.make_node("Cast", [n.input[0]], [a], to=TensorProto.FLOAT),
                helper.make_node("Cast", [n.input[1]], [b], to=TensorProto.FLOAT),
                helper.make_node("Mul", [a, b], [prod]),
                helper.make_node("Greater", [prod, half], [n.output[0]], name=n.name),
            ]
            g.node.remove(n)
            for k, node in enumerate(new):
                g.node.insert(at + k, node)
        # Intermediate types changed (bool -> float): let onnxruntime infer them again.
        del g.value_info[:]
    return count


# Ops onnxruntime-web's WebGPU (JSEP) build runs as buffer copies rather than kernels.
_VIEW_OPS = ("Unsqueeze", "Reshape", "Squeeze", "Flatten")


def graph_outputs_from_kernels(model: Any) -> int:
    """Make every graph output that a view op (Reshape, Unsqueeze, ...) produces come from
    an ``Add`` of 0 instead; returns how many.

    JSEP runs view ops as buffer copies, which graph capture does not record: replays
    left such an output unwritten while every kernel ran (a generator's logits, made
    by untie_lm_head's Unsqueeze).  An Add of 0 is a kernel, recorded like the rest,
    and changes no value.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    g = model.graph
    outputs = {o.name for o in g.output}
    views = [n for n in g.node if n.op_type in _VIEW_OPS and n.output[0] in outputs]
    if views:
        zero = "graph_output_zero"
        g.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), zero))
    for n in views:
        name = n.output[0]
        n.output[0] = f"{name}_view"
        g.node.append(helper.make_node("Add", [n.output[0], zero], [name], name=f"{name}_kernel"))
    return len(views)
