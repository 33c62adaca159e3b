"""Graph rewrites that keep outputs: checked against onnxruntime on the original graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from webaccel.models.rewrites import nan_guards_on_gpu


def guarded_softmax() -> onnx.ModelProto:
    """Softmax(x) with transformers' guard: Where(IsNaN(p), 0, p)."""
    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=-1),
        helper.make_node("IsNaN", ["p"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "p"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_nan_guards_become_equal_and_keep_outputs():
    x = np.array([[1.0, 2.0, 3.0], [-np.inf, -np.inf, -np.inf]], np.float32)  # row 2: all masked
    before = run(guarded_softmax(), x)
    model = guarded_softmax()
    assert nan_guards_on_gpu(model) == 1
    ops = [n.op_type for n in model.graph.node]
    assert "IsNaN" not in ops and "Equal" in ops
    onnx.checker.check_model(model)
    after = run(model, x)
    assert np.isnan(before).sum() == 0 and (before[1] == 0).all()  # the guard did its job
    np.testing.assert_array_equal(after, before)


def test_isnan_used_otherwise_is_left_alone():
    exposed = guarded_softmax()  # also a graph output
    exposed.graph.output.append(helper.make_tensor_value_info("nan", TensorProto.BOOL, [2, 3]))
    negated = guarded_softmax()  # also read by another op
    negated.graph.node.append(helper.make_node("Not", ["nan"], ["not_nan"]))
    for model in (exposed, negated):
        assert nan_guards_on_gpu(model) == 0
        assert "IsNaN" in [n.op_type for n in model.graph.node]
