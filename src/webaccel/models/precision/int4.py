"""``int4``: weight-only block quantization with onnxruntime's ``MatMulNBits`` quantizer.

MatMul -> ``MatMulNBits`` and, where an embedding table dominates the size,
Gather -> ``GatherBlockQuantized`` (com.microsoft contrib ops).  The same
pass at 8 bits serves ``mixed``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import onnx

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.models.precision.files import load_model, save_model
from webaccel.models.precision.weights import (
    _nameless_nodes_named,
    _weight_bytes,
    weight_nodes,
)

log = logging.getLogger(__name__)

# An embedding table is worth quantizing when it holds at least this share of
# the model's weight bytes (MiniLM's word embeddings are ~52% of 90 MB).
EMBEDDING_SHARE_TO_QUANTIZE = 0.15

# Weights per 4-bit block.  16 would suit onnxruntime-web's JSEP build better
# (its MatMulNBits fails when a column's packed zero points are not a multiple
# of 4 bytes: 6 on MiniLM's K=384 with 32), but JSEP also computes
# GatherBlockQuantized wrongly, so pages refuse 4-bit weights on JSEP WebGPU
# anyway (runtime.mjs), and 16 made Whisper's int4 33% of fp32 instead of <30%
# and the tiny test Llama's WASM and native int4 tokens differ.
DEFAULT_BLOCK_SIZE = 32
# MatMulNBits ``accuracy_level=4`` computes with int8 activations.  On MiniLM
# (1 thread) it took int4 from 6.3 to 3.9 ms and the 8-bit-heavy mixed plan
# from 18.6 to 3.6 ms per run, moving worst cosine by < 1e-3 (measured).
DEFAULT_ACCURACY_LEVEL: int | None = 4


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _opset_for_int4_tables(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert to opset 21 before 4-bit tables are written.

    The quantizer only *relabels* the opset to 21 (UINT4 tensors need it),
    which breaks ops whose signature changed (ReduceMean's ``axes`` became an
    input in opset 18); onnx's version converter rewrites them properly.
    """
    if _default_opset(model) >= 21:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, 21)
    except Exception as exc:
        raise LoadFailedError(
            f"cannot move the model to opset 21 for 4-bit embedding tables ({exc}); "
            "use quantize_embeddings=False"
        ) from exc


def _untie_column_gathers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give ``Gather(table, ids, axis=1)`` lookups their own row-major table.

    A decoder that shares one [hidden, vocab] table between its token lookup
    (Gather on axis 1) and its output projection (MatMul) stores it once in
    fp32, but the 4-bit quantizer can only shrink the MatMul: the Gather
    would keep the fp32 table alive.  A transposed copy looked up on axis 0
    (then transposed back) is quantized to GatherBlockQuantized instead.
    Only 1-D index tensors are rewritten (the permutation needs the rank).
    """
    from onnx import helper, numpy_helper, shape_inference

    inits = {i.name: i for i in model.graph.initializer}
    candidates = [
        n
        for n in model.graph.node
        if n.op_type == "Gather"
        and n.input[0] in inits
        and len(inits[n.input[0]].dims) == 2
        and any(a.name == "axis" and a.i == 1 for a in n.attribute)
    ]
    if not candidates:
        return model
    try:
        inferred = shape_inference.infer_shapes(model)
        ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in [*inferred.graph.value_info, *inferred.graph.input]
            if v.type.tensor_type.HasField("shape")
        }
    except Exception:
        return model
    nodes = []
    for node in model.graph.node:
        if node not in candidates or ranks.get(node.input[1]) != 1:
            nodes.append(node)
            continue
        table = inits[node.input[0]]
        rows = table.name + ".rows"
        if rows not in inits:
            inits[rows] = numpy_helper.from_array(
                np.ascontiguousarray(numpy_helper.to_array(table).T), rows
            )
            model.graph.initializer.append(inits[rows])
        looked_up = node.output[0] + ".rows"
        nodes.append(
            helper.make_node(
                "Gather",
                [rows, node.input[1]],
                [looked_up],
                name=(node.name or "Gather") + ".rows",
                axis=0,
            )
        )
        nodes.append(
            helper.make_node(
                "Transpose",
                [looked_up],
                [node.output[0]],
                name=(node.name or "Gather") + ".rows_T",
                perm=[1, 0],
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _nbits_pass(
    model: onnx.ModelProto,
    nodes: Iterable[str],
    *,
    bits: int,
    block_size: int,
    accuracy_level: int | None,
    symmetric: bool = False,
) -> onnx.ModelProto:
    """Quantize exactly ``nodes`` (MatMul and/or Gather) to ``bits`` with MatMulNBitsQuantizer."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    wanted = set(nodes)
    if not wanted:
        return model
    ops = {n.op_type for n in model.graph.node if n.name in wanted}
    if "Gather" in ops:
        model = _opset_for_int4_tables(model)
    # nodes_to_include does not restrict (it widens op types), so exclude the rest.
    exclude = [n.name for n in model.graph.node if n.name not in wanted]
    # The quantizer logs one INFO line per node and warns that it raises the
    # IR version/opset, which we do on purpose (see _opset_for_int4_tables).
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    q = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        # Asymmetric (zero points) was more accurate than symmetric on MiniLM.
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        nodes_to_exclude=exclude,
        op_types_to_quantize=tuple(sorted(ops & {"MatMul", "Gather"})),
        # Gather tables are [vocab, hidden]: quantize along hidden so a row
        # dequantizes from its own blocks.
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    q.process()
    return q.model.model


def to_int4(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    bits: int = 4,
    quantize_embeddings: bool | Literal["auto"] = "auto",
    accuracy_level: int | None = DEFAULT_ACCURACY_LEVEL,
    symmetric: bool = False,
) -> Path:
    """Weight-only ``MatMulNBits`` (and ``GatherBlockQuantized`` for big embedding tables).

    ``block_size`` (a power of two >= 16) trades size for accuracy; ``bits=8``
    gives the 8-bit flavour of the same ops.  With ``quantize_embeddings="auto"``
    a Gather table is quantized only when it holds >= 15% of the weight bytes.
    ``symmetric=True`` stores no zero points (less accurate on MiniLM).
    """
    if block_size < 16 or block_size & (block_size - 1):
        raise InvalidInputError(f"block_size must be a power of two >= 16, got {block_size}")
    if bits not in (4, 8):
        raise InvalidInputError(f"bits must be 4 or 8, got {bits}")
    model = load_model(src)
    _nameless_nodes_named(model)
    if bits == 4 and quantize_embeddings is not False:
        model = _untie_column_gathers(model)
    nodes = weight_nodes(model)
    total = _weight_bytes(model) or 1
    chosen = [n.name for n in nodes if n.op_type == "MatMul"]
    gathers = [n for n in nodes if n.op_type == "Gather"]
    share = sum(n.bytes for n in gathers) / total
    # GatherBlockQuantized exists only at 4 bits; tables stay fp32 in 8-bit mode.
    if bits == 4 and (
        quantize_embeddings is True
        or (quantize_embeddings == "auto" and share >= EMBEDDING_SHARE_TO_QUANTIZE)
    ):
        chosen += [n.name for n in gathers]
    if not chosen:
        log.warning(
            "%s has no MatMul/Gather weights for %d-bit weight-only quantization; "
            "the variant is the fp32 model",
            src,
            bits,
        )
    model = _nbits_pass(
        model,
        chosen,
        bits=bits,
        block_size=block_size,
        accuracy_level=accuracy_level,
        symmetric=symmetric,
    )
    return save_model(model, Path(dest))


__all__ = [
    "DEFAULT_ACCURACY_LEVEL",
    "DEFAULT_BLOCK_SIZE",
    "EMBEDDING_SHARE_TO_QUANTIZE",
    "to_int4",
]
