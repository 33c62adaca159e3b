"""Precision variants of an fp32 ONNX model, and their measured cost.

Variants are real ONNX files made with onnxruntime's own tools, so the page
runs them with the same kernels native onnxruntime uses:

==========  ==============================================================
``fp16``    ``onnxruntime.transformers.float16`` with fp32 inputs/outputs
            (``keep_io_types``) so callers never see half floats.
``int8``    dynamic quantization, per-channel weights, QUInt8 (per-tensor
            lost too much accuracy on MiniLM: see docs/FACTS.md).
``int4``    weight-only block quantization: MatMul -> ``MatMulNBits`` and,
            where an embedding table dominates the size, Gather ->
            ``GatherBlockQuantized`` (com.microsoft contrib ops).
``mixed``   per layer group one of fp32 / 8-bit / 4-bit ``MatMulNBits``,
            chosen from a *measured* per-group sensitivity so the model
            meets an accuracy target at the smallest size.
==========  ==============================================================

One job per module: ``files`` (load, save, size), ``weights`` (weight nodes
and layer groups), ``fp16``, ``int8``, ``int4``, ``mixed`` (the variants),
``accuracy`` (scores against fp32, native latency, word error rate),
``records`` (reports saved beside each variant, picking by them) and
``variants`` (:func:`make_variant`, the front door).  Every public name stays
importable from ``webaccel.models.precision``.
"""

from __future__ import annotations

from webaccel.models.precision.accuracy import (
    Feed,
    Metric,
    VariantReport,
    compare_outputs,
    cosine_rows,
    evaluate,
    normalize_words,
    run_feeds,
    session,
    word_error_rate,
)
from webaccel.models.precision.files import PRECISIONS, Precision, load_model, model_bytes
from webaccel.models.precision.fp16 import to_fp16
from webaccel.models.precision.int4 import (
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_BLOCK_SIZE,
    EMBEDDING_SHARE_TO_QUANTIZE,
    to_int4,
)
from webaccel.models.precision.int8 import to_int8
from webaccel.models.precision.mixed import Choice, MixedPlan, apply_plan, to_mixed
from webaccel.models.precision.records import (
    DEFAULT_TARGETS,
    load_report,
    measure_variants,
    pick_smallest,
    report_path,
    save_report,
    summary,
)
from webaccel.models.precision.variants import make_variant, variant_path
from webaccel.models.precision.weights import WeightNode, layer_group, weight_nodes

__all__ = [
    "DEFAULT_ACCURACY_LEVEL",
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_TARGETS",
    "EMBEDDING_SHARE_TO_QUANTIZE",
    "PRECISIONS",
    "Choice",
    "Feed",
    "Metric",
    "MixedPlan",
    "Precision",
    "VariantReport",
    "WeightNode",
    "apply_plan",
    "compare_outputs",
    "cosine_rows",
    "evaluate",
    "layer_group",
    "load_model",
    "load_report",
    "make_variant",
    "measure_variants",
    "model_bytes",
    "normalize_words",
    "pick_smallest",
    "report_path",
    "run_feeds",
    "save_report",
    "session",
    "summary",
    "to_fp16",
    "to_int4",
    "to_int8",
    "to_mixed",
    "variant_path",
    "weight_nodes",
    "word_error_rate",
]
