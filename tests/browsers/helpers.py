"""Test helpers shared by the launcher tests (not part of webaccel)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from webaccel.server import WebAccelServer


async def smoke_test(
    worker: Any, server: WebAccelServer, *, width: int = 16, runs: int = 3, timeout: float = 120.0
) -> dict[str, Any]:
    """Load a tiny generated MLP on ``worker`` (wasm) and check its answers against numpy.

    Proves that a launcher gives a page that really serves: model bytes over
    HTTP with the page's token, tensors over the bridge.  Returns timings.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from webaccel.pool.transport import ModelRef

    rng = np.random.default_rng(width)
    w1 = (rng.standard_normal((width, width)) / 4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        f"smoke{width}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", width])],
        [numpy_helper.from_array(w1, "w1")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    directory = Path(tempfile.mkdtemp(prefix="webaccel-smoke-"))
    try:
        path = directory / "smoke.onnx"
        onnx.save(model, str(path))
        rel = server.model_files.add(f"smoke/{width}", path)
        ref = ModelRef(key=f"smoke{width}:wasm", name="smoke", url=rel, backend="wasm")
        info = await worker.load_model(ref, timeout=timeout)
        page_ms = []
        for _ in range(runs):
            x = rng.standard_normal((2, width)).astype(np.float32)
            result = await worker.run(ref.key, {"x": x}, timeout=timeout)
            want = np.maximum(x @ w1, 0)
            got = result.outputs["y"]
            if not np.allclose(got, want, atol=1e-4):
                raise AssertionError(
                    f"worker {worker.id} answered wrongly: "
                    f"max error {float(np.abs(got - want).max())}"
                )
            page_ms.append(result.page_ms)
        return {"load_ms": info.load_ms, "page_ms": page_ms, "backend": info.backend}
    finally:
        shutil.rmtree(directory, ignore_errors=True)
