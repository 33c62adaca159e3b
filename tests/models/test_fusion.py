"""MiniLM's GPU graph (webaccel.models.fusion) against the op-by-op export it replaces.

The registry's file (fused, attention spelled out as MatMuls, pooling in the
graph) must give the embeddings of the plain export pooled in numpy, padding
included, and hold only ops both onnxruntime-web WebGPU builds run on the GPU.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort

from webaccel.models import registry
from webaccel.models.fusion import POOLED_OUTPUT
from webaccel.models.text import export_unfused, mean_pool_normalize

# Op types checked on the GPU in both builds (ORT verbose placements in Dawn).
GPU_OPS = {
    "Add", "Clip", "Constant", "Div", "Gather", "Gelu", "LayerNormalization", "MatMul",
    "Mul", "ReduceL2", "ReduceSum", "Reshape", "Shape", "SkipLayerNormalization", "Slice",
    "Softmax", "Sub", "Transpose", "Unsqueeze",
}  # fmt: skip


def feeds() -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(1000, 29000, (3, 20)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def test_gpu_graph_equals_the_plain_export_pooled(tmp_path):
    path = registry.get("minilm").ensure_onnx("fp32")
    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in model.graph.node)
    assert "MultiHeadAttention" not in ops and "Attention" not in ops
    assert set(ops) <= GPU_OPS, set(ops) - GPU_OPS
    assert ops["SkipLayerNormalization"] == 12 and ops["Softmax"] == 6

    plain = tmp_path / "plain.onnx"
    export_unfused(plain)
    f = feeds()
    hidden = ort.InferenceSession(str(plain)).run(["last_hidden_state"], f)[0]
    want = mean_pool_normalize(hidden, f["attention_mask"])
    got = ort.InferenceSession(str(path)).run([POOLED_OUTPUT], f)[0]
    assert got.shape == (3, 384)
    assert np.abs(got - want).max() < 1e-5
