"""``int8``: dynamic quantization, per-channel weights, QUInt8.

Per-tensor lost too much accuracy on MiniLM (see docs/FACTS.md).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import onnx

from webaccel.models.precision.files import load_model


def to_int8(
    src: str | os.PathLike[str], dest: str | os.PathLike[str], *, per_channel: bool = True
) -> Path:
    """Dynamic int8: weights quantized offline, activations at run time (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = load_model(src)  # typed error for a missing/corrupt file before ORT's own
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.addFilter(_NO_PREPROCESS_HINT)
    model_input: str | onnx.ModelProto = str(src)
    if any(n.domain == "com.microsoft" for n in model.graph.node):
        # onnx's shape inference stops at contrib ops (fused Attention, ...) and
        # quantize_dynamic then cannot type the tensors after them;
        # onnxruntime's symbolic shape inference knows those ops.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        model_input = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    try:
        quantize_dynamic(
            model_input,
            str(dest),
            per_channel=per_channel,
            # QUInt8 weights: the combination docs/FACTS.md found accurate (cos >= 0.988).
            weight_type=QuantType.QUInt8,
        )
    finally:
        root.removeFilter(_NO_PREPROCESS_HINT)
    return Path(dest)


class _DropPreprocessHint(logging.Filter):
    # quantize_dynamic logs "Please consider to run pre-processing" on the root
    # logger for every model; shape-inference pre-processing changed nothing
    # measurable for dynamic quantization here, so the hint is noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return "consider to run pre-processing" not in record.getMessage()


_NO_PREPROCESS_HINT = _DropPreprocessHint()


__all__ = ["to_int8"]
