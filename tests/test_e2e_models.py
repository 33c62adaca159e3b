"""The vision models in headless Chromium equal native onnxruntime; user ONNX files; bad input."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from webaccel.errors import BadRequestError, InvalidInputError, LoadFailedError
from webaccel.models import registry
from webaccel.native import NativeRunner

pytestmark = pytest.mark.browser

IMAGE = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)


def native(name: str, data):
    spec = registry.get(name)
    proc = spec.processor()
    prepared = proc.preprocess(data, {})
    outputs, _, _ = NativeRunner().run(spec, prepared.tensors)
    return proc.postprocess(outputs, prepared)["results"]


def test_nsfw_classifier_in_the_page_equals_native(accelerator):
    page = accelerator.accelerate("nsfw-cnn", IMAGE, platform="wasm")
    assert page["browser"] == "chromium" and page["backend"] == "wasm"
    want = native("nsfw-cnn", IMAGE)
    assert page["results"]["label"] == want["label"]
    for label, score in want["scores"].items():
        assert page["results"]["scores"][label] == pytest.approx(score, abs=1e-4)


def test_saliency_map_in_the_page_equals_native(accelerator):
    page = accelerator.accelerate("vit-saliency", IMAGE, platform="wasm")["results"]["heatmap"]
    want = native("vit-saliency", IMAGE)["heatmap"]
    a, b = page.ravel(), want.ravel()
    assert float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) >= 0.9999
    assert np.abs(page - want).max() < 1e-3


def test_corrupt_image_is_a_clear_error(accelerator):
    with pytest.raises(InvalidInputError, match="not a readable image"):
        accelerator.accelerate("nsfw-cnn", b"\x89PNG but not really")


def _tiny_onnx(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_user_onnx_file_runs_on_raw_tensors_and_bad_files_are_refused(accelerator, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(LoadFailedError, match="not a valid ONNX model"):
        registry.register_onnx("garbage", garbage, task="vision")
    good = tmp_path / "relu.onnx"
    _tiny_onnx(good)
    registry.register_onnx("user-relu", good, task="vision", replace=True)
    out = accelerator.accelerate("user-relu", {"x": [[-1.0, 0.5, 2.0]]}, platform="wasm")
    np.testing.assert_allclose(out["y"], [[0.0, 0.5, 2.0]])
    with pytest.raises(BadRequestError, match="missing \\[x\\]"):  # inputs that do not match
        accelerator.accelerate("user-relu", {"wrong": [[1.0, 2.0, 3.0]]}, platform="wasm")
    with pytest.raises(InvalidInputError, match="raw tensors"):
        accelerator.accelerate("user-relu", "a string is not a tensor")
