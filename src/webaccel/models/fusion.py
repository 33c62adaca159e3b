"""Whole-model graph changes that cut the number of GPU dispatches per run.

onnxruntime-web's WebGPU EP pays a fixed CPU cost per kernel dispatch (through
WASM and Dawn), so on a real GPU a 6-layer encoder exported op by op (~190
kernels) is bound by that cost, not by the GPU (an H200 spent 2.75 ms in
kernels of a 13 ms batch-1 run).  Two changes, both exact to rounding:

* :func:`fuse_bert` runs onnxruntime's own transformer optimizer
  (``onnxruntime.transformers.optimizer``), which rewrites each layer into the
  ``com.microsoft`` contrib ops ``SkipLayerNormalization`` and ``Gelu`` and a
  ``MultiHeadAttention`` that is then spelled out again as batched MatMuls
  (faster on the GPU than JSEP's MHA kernels; ~180 nodes, every one on the
  GPU in both onnxruntime-web WebGPU builds, the native WebGPU EP and JSEP,
  which Chromium pages load, except 4 position-id shape nodes that fold away
  once dims are fixed).  Its attention pattern matcher knows the
  *eager* attention export, not transformers 5's SDPA one, so the model is
  exported with ``attn_implementation="eager"``.  With every node on the GPU
  and shapes fixed, JSEP's graph capture works too (replays equal plain runs).
* :func:`append_mean_pooling` ends the graph with sentence-transformers'
  pooling (mask-weighted mean, then L2 normalisation), so a run returns
  [batch, hidden] instead of [batch, seq, hidden]: at 128x128 that is 196 KB
  instead of 25 MB to read back from the GPU and to send over the bridge.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import LoadFailedError
from webaccel.models.rewrites import prune_unused

POOLED_OUTPUT = "sentence_embedding"
POOL_PREFIX = "pool/"  # names of the pooling tail's nodes and constants


def fuse_bert(src: Path, dest: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse a BERT-family ONNX file into contrib ops that run on WebGPU; returns fused-op counts.

    Raises LoadFailedError when attention did not fuse (an export the
    optimizer's patterns do not know): the unfused graph is correct but
    gains nothing, and silently shipping it would hide the regression.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import AttentionMaskFormat, FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    # What onnxruntime-web 1.30's WebGPU EP runs (node placements checked in
    # Dawn): not EmbedLayerNormalization, and not ``Attention`` with a mask
    # (it fell back to the CPU: 1.8 s a run at 32x128 on an H200, 33 ms unfused).
    # ``MultiHeadAttention`` is fused only to be rewritten as plain ops
    # (:func:`_attention_as_matmuls`), which the GPU runs faster.
    options.enable_embed_layer_norm = False
    # BiasGelu has a WebGPU kernel but no JSEP one (Chromium pages load the
    # JSEP build): it ran on the CPU there, 6 GPU->CPU->GPU trips a run.
    # Gelu plus a separate bias Add run on the GPU in both builds.
    options.enable_bias_gelu = False
    options.use_multi_head_attention = True
    options.attention_mask_format = AttentionMaskFormat.AttentionMask
    # The optimizer logs each fusion at INFO; keep callers' logs readable.
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    model = optimize_model(
        str(src),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,  # offline fusions only; the runtime applies its own at load
        use_gpu=True,
    )
    stats = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    if not stats.get("MultiHeadAttention"):
        raise LoadFailedError(
            f"onnxruntime's BERT optimizer fused no attention in {src} ({stats}); "
            "export with attn_implementation='eager'"
        )
    fused = _attention_as_matmuls(model.model, num_heads)
    if not any(o.domain == "com.microsoft" for o in fused.opset_import):
        fused.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    onnx.save(fused, str(dest))
    return stats


def _attention_as_matmuls(model: Any, num_heads: int) -> Any:
    """Each ``MultiHeadAttention`` -> plain MatMul/Softmax ops, the padding mask an additive bias.

    Why undo the optimizer's attention fusion: on the GPU the plain ops are
    faster.  JSEP (Chromium's build) runs MHA as naive AttentionScore /
    AttentionProbs kernels, ~3.5 ms of 11 at 32x128 on an H100, and its
    ``key_padding_mask`` is not implemented in either WebGPU build; batched
    MatMuls use the tiled kernel.  Measured with graph capture (JSEP, H100):
    32x128 10.7 -> 6.6 ms, 128x128 39.7 -> 22.9 ms (with MatMulAddFusion off,
    see runtime.mjs).  The fused graph is still the way there: its MHA nodes
    name Q, K, V and the packed bias, whatever the export looked like.

    Per layer: Q, K, V plus bias -> [B, heads, S, d] (K as [B, heads, d, S]),
    scores = Q K^T + mask bias, Softmax, times V, back to [B, S, hidden].  The
    1/sqrt(d) scale is folded into the query weights and bias (one kernel
    fewer).  Padded keys get -10000 (finite, so fp16 holds it; BERT's value),
    broadcast from one [B, 1, 1, S] tensor shared by every layer.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    mha = [n for n in g.node if n.op_type == "MultiHeadAttention"]
    if not mha:
        return model
    masks = {n.input[4] for n in mha if len(n.input) > 4 and n.input[4]}
    if len(masks) > 1:
        raise LoadFailedError(f"expected one shared attention mask, found {sorted(masks)}")
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    p = "mask_bias/"
    shape4 = const("attn/shape4", np.array([0, 0, num_heads, -1], np.int64))
    shape3 = const("attn/shape3", np.array([0, 0, -1], np.int64))
    bias = p + "bias"
    if masks:
        one = const(p + "one", np.array(1.0, np.float32))
        big = const(p + "scale", np.array(1e4, np.float32))
        axes = const(p + "axes", np.array([1, 2], np.int64))
        mask_nodes = [
            _float_mask(g, p + "mask_f"),
            helper.make_node("Sub", [p + "mask_f", one], [p + "off"]),
            helper.make_node("Mul", [p + "off", big], [p + "neg"]),  # 0 kept, -10000 padded
            helper.make_node("Unsqueeze", [p + "neg", axes], [bias]),  # [B, 1, 1, S]
        ]
    for layer in mha:
        q, k, v, packed = layer.input[:4]
        qkv_bias = numpy_helper.to_array(inits[packed]).astype(np.float32)
        hidden = qkv_bias.shape[0] // 3
        scale = np.float32(1.0 / np.sqrt(hidden // num_heads))
        q_mm = producer.get(q)
        weight = inits.get(q_mm.input[1]) if q_mm is not None else None
        if q_mm is None or q_mm.op_type != "MatMul" or weight is None or uses[weight.name] > 1:
            raise LoadFailedError(f"{layer.name}: the query is not a MatMul with its own weights")
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * scale, weight.name))
        x = layer.name + "/"
        bq = const(x + "bias_q", qkv_bias[:hidden] * scale)
        bk = const(x + "bias_k", qkv_bias[hidden : 2 * hidden])
        bv = const(x + "bias_v", qkv_bias[2 * hidden :])
        scores = x + "scores"
        nodes = [
            helper.make_node("Add", [q, bq], [x + "q"]),
            helper.make_node("Add", [k, bk], [x + "k"]),
            helper.make_node("Add", [v, bv], [x + "v"]),
            helper.make_node("Reshape", [x + "q", shape4], [x + "q4"]),
            helper.make_node("Reshape", [x + "k", shape4], [x + "k4"]),
            helper.make_node("Reshape", [x + "v", shape4], [x + "v4"]),
            helper.make_node("Transpose", [x + "q4"], [x + "qt"], perm=[0, 2, 1, 3]),
            helper.make_node("Transpose", [x + "k4"], [x + "kt"], perm=[0, 2, 3, 1]),
            helper.make_node("Transpose", [x + "v4"], [x + "vt"], perm=[0, 2, 1, 3]),
            helper.make_node("MatMul", [x + "qt", x + "kt"], [scores]),
        ]
        if masks:
            nodes.append(helper.make_node("Add", [scores, bias], [x + "masked"]))
            scores = x + "masked"
        nodes += [
            helper.make_node("Softmax", [scores], [x + "probs"], axis=-1),
            helper.make_node("MatMul", [x + "probs", x + "vt"], [x + "ctx"]),
            helper.make_node("Transpose", [x + "ctx"], [x + "ctxt"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [x + "ctxt", shape3], [layer.output[0]]),
        ]
        at = list(g.node).index(layer)
        g.node.remove(layer)
        for offset, node in enumerate(nodes):
            node.name = node.output[0]
            g.node.insert(at + offset, node)
    if masks:
        first = min(i for i, n in enumerate(g.node) if n.name.startswith(mha[0].name + "/"))
        for offset, node in enumerate(mask_nodes):
            node.name = node.output[0]
            g.node.insert(first + offset, node)
    prune_unused(g)
    return model


def append_mean_pooling(src: Path, dest: Path, *, hidden_output: str = "last_hidden_state") -> Path:
    """Write ``src`` with :func:`add_mean_pooling` applied to ``dest``."""
    import onnx

    model = add_mean_pooling(onnx.load(str(src)), hidden_output=hidden_output)
    onnx.save(model, str(dest))
    return dest


def add_mean_pooling(model: Any, *, hidden_output: str = "last_hidden_state") -> Any:
    """Replace output ``hidden_output`` [B, S, H] by its masked mean, L2-normalised [B, H].

    Same arithmetic as ``webaccel.models.text.mean_pool_normalize`` (mask
    count clamped at 1e-9, norm at 1e-12), in fp32.  The replaced output's
    ValueInfo stays in ``value_info`` so :func:`strip_mean_pooling` can undo
    it: precision conversions work on the body and pool afterwards (fp16
    cannot hold the eps constants, and the sums belong in fp32).
    """
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    if hidden_output not in [o.name for o in g.output]:
        raise LoadFailedError(f"the model has no output {hidden_output!r} to pool")
    p = POOL_PREFIX

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, p + name))
        return p + name

    axis1 = const("axis1", np.array([1], dtype=np.int64))
    axis2 = const("axis2", np.array([2], dtype=np.int64))
    nodes = [
        _float_mask(g, p + "mask_f"),
        helper.make_node("Unsqueeze", [p + "mask_f", axis2], [p + "mask3"]),
        helper.make_node("Mul", [hidden_output, p + "mask3"], [p + "masked"]),
        helper.make_node("ReduceSum", [p + "masked", axis1], [p + "sum"], keepdims=0),
        helper.make_node("ReduceSum", [p + "mask3", axis1], [p + "count"], keepdims=0),
        # Clip (min only), not Max: JSEP, Chromium's build, has no Max kernel.
        helper.make_node(
            "Clip", [p + "count", const("eps_count", np.array(1e-9, np.float32))], [p + "count_c"]
        ),
        helper.make_node("Div", [p + "sum", p + "count_c"], [p + "mean"]),
        # ReduceL2 takes its axes as an attribute until opset 18.
        helper.make_node("ReduceL2", [p + "mean"], [p + "norm"], axes=[1], keepdims=1),
        helper.make_node(
            "Clip", [p + "norm", const("eps_norm", np.array(1e-12, np.float32))], [p + "norm_c"]
        ),
        helper.make_node("Div", [p + "mean", p + "norm_c"], [POOLED_OUTPUT]),
    ]
    for node in nodes:
        node.name = p + node.output[0].removeprefix(p)
    g.node.extend(nodes)
    hidden_info = next(o for o in g.output if o.name == hidden_output)
    dims = hidden_info.type.tensor_type.shape.dim
    batch = dims[0].dim_param or dims[0].dim_value
    size = dims[2].dim_value if len(dims) > 2 and dims[2].dim_value else "hidden"
    g.value_info.append(hidden_info)
    del g.output[:]
    g.output.append(
        helper.make_tensor_value_info(POOLED_OUTPUT, onnx.TensorProto.FLOAT, [batch, size])
    )
    onnx.checker.check_model(model)
    return model


def _float_mask(graph: Any, out: str) -> Any:
    """A node making ``attention_mask`` (int64 0/1) float: a Gather from [0.0, 1.0].

    Not a Cast: neither WebGPU build of onnxruntime-web casts int64 on the GPU,
    so a Cast runs on the CPU and copies the mask over; Gather takes int64
    indices on the GPU (that node was the last one off the GPU).
    """
    from onnx import helper, numpy_helper

    graph.initializer.append(
        numpy_helper.from_array(np.array([0.0, 1.0], np.float32), out + "_values")
    )
    return helper.make_node("Gather", [out + "_values", "attention_mask"], [out], axis=0)


def strip_mean_pooling(model: Any) -> tuple[Any, str] | None:
    """The model without :func:`add_mean_pooling`'s tail, and the output it pooled (or None)."""
    g = model.graph
    if [o.name for o in g.output] != [POOLED_OUTPUT]:
        return None
    tail = [n for n in g.node if n.name.startswith(POOL_PREFIX)]
    if not tail:
        return None
    hidden = tail[[n.op_type for n in tail].index("Mul")].input[0]
    info = next((v for v in g.value_info if v.name == hidden), None)
    if info is None:
        return None
    body = type(model)()
    body.CopyFrom(model)
    bg = body.graph
    keep = [n for n in bg.node if not n.name.startswith(POOL_PREFIX)]
    del bg.node[:]
    bg.node.extend(keep)
    inits = [i for i in bg.initializer if not i.name.startswith(POOL_PREFIX)]
    del bg.initializer[:]
    bg.initializer.extend(inits)
    del bg.output[:]
    bg.output.append(info)
    return body, hidden
