"""Graph capture in a real Chromium page (JSEP build; SwiftShader WebGPU here).

A captured session replays the GPU commands recorded on its first run, with
inputs and outputs in GPU buffers of its own: replays with new inputs must
equal native onnxruntime, and a request of another shape must be refused.
"""

from __future__ import annotations

from pathlib import Path

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
        # the WebGPU build even on a software adapter (SwiftShader here): capture is what is tested
        worker = await launch_worker(server, "chromium", timeout=60, ort_build="all")
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


async def test_capture_is_refused_on_the_webgpu_ep_build_and_the_worker_goes_on():
    # The WebGPU EP build (ort.webgpu, the Node worker's default) replays wrong
    # outputs (max abs 0.2 on MiniLM here; onnxruntime issue 29594): refused at
    # load with a typed error; the worker keeps serving.
    from webaccel.browsers.node import launch_node_worker
    from webaccel.errors import BackendUnavailableError

    path = registry.get("minilm").ensure_onnx("fp32")
    async with WebAccelServer() as server:
        icd = Path("/usr/lib/chromium/vk_swiftshader_icd.json")  # Dawn's CPU adapter here
        env = {"VK_ICD_FILENAMES": str(icd)} if icd.is_file() else {}
        worker = await launch_node_worker(server, build="webgpu", env=env, timeout=120)
        try:
            if not worker.capabilities["webgpu"]["available"]:
                pytest.skip(f"Dawn found no WebGPU adapter: {worker.capabilities['webgpu']}")
            url = server.model_files.add("minilm/fp32/model.onnx", path)
            cap = ModelRef(
                key="cap", name="minilm", url=url, backend="webgpu",
                session_options={"ort": CAPTURE},
            )
            with pytest.raises(BackendUnavailableError, match="JSEP"):
                await worker.load_model(cap, timeout=300)
            plain = ModelRef(key="plain", name="minilm", url=url, backend="wasm")
            await worker.load_model(plain, timeout=120)
            out = (await worker.run("plain", token_feeds(3, 4), timeout=120)).outputs
            assert out["sentence_embedding"].shape == (BATCH, 384)
        finally:
            await worker.close()
