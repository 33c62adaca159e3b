"""Graph capture in a real Chromium page (JSEP build; SwiftShader WebGPU here).

A captured session replays the GPU commands recorded on its first run, with
inputs and outputs in GPU buffers of its own: replays with new inputs must
equal native onnxruntime, and a request of another shape must be refused.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from webaccel.browsers import launch_worker
from webaccel.errors import BadRequestError, LoadFailedError
from webaccel.models import registry
from webaccel.pool.transport import ModelRef
from webaccel.server import WebAccelServer

pytestmark = pytest.mark.browser

BATCH, SEQ = 2, 12
CAPTURE = {"enableGraphCapture": True, "freeDimensionOverrides": {"batch": BATCH, "sequence": SEQ}}


def token_feeds(seed: int, pad: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(seed).integers(1000, 29000, (BATCH, SEQ)).astype(np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    mask = np.ones_like(ids)
    ids[1, SEQ - pad - 1], ids[1, SEQ - pad :], mask[1, SEQ - pad :] = 102, 0, 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


async def test_captured_minilm_replays_match_native_and_other_shapes_are_refused():
    path = registry.get("minilm").ensure_onnx("fp32")
    native = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    async with WebAccelServer() as server:
        worker = await launch_worker(server, "chromium", timeout=60)
        try:
            if "webgpu" not in worker.available_backends():
                pytest.skip(f"no WebGPU in this Chromium: {worker.capabilities.get('webgpu')}")
            url = server.model_files.add("minilm/fp32/model.onnx", path)
            ref = ModelRef(
                key="cap",
                name="minilm",
                url=url,
                backend="webgpu",
                session_options={"ort": CAPTURE},
            )
            await worker.load_model(ref, timeout=300)
            for seed, pad in ((1, 0), (2, 5), (3, 9)):  # new values, masks and padding each replay
                f = token_feeds(seed, pad)
                out = (await worker.run("cap", f, timeout=300)).outputs["sentence_embedding"]
                want = native.run(None, f)[0]
                assert out.shape == (BATCH, 384)
                assert np.abs(out - want).max() < 1e-3
                assert float((out * want).sum(axis=1).min()) >= 0.999
            wrong = {k: v[:, : SEQ - 2] for k, v in token_feeds(4, 0).items()}
            with pytest.raises(BadRequestError, match="captured"):
                await worker.run("cap", wrong, timeout=60)
            # The session is still good after a refused request.
            f = token_feeds(5, 3)
            out = (await worker.run("cap", f, timeout=300)).outputs["sentence_embedding"]
            assert np.abs(out - native.run(None, f)[0]).max() < 1e-3
            free = ModelRef(
                key="free",
                name="minilm",
                url=url,
                backend="webgpu",
                session_options={"ort": {"enableGraphCapture": True}},
            )
            with pytest.raises(LoadFailedError, match="freeDimensionOverrides"):
                await worker.load_model(free, timeout=300)
        finally:
            await worker.close()
