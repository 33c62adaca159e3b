"""End to end: MiniLM in headless Chromium equals native onnxruntime."""

from __future__ import annotations

import re

import numpy as np
import pytest

from webaccel.errors import BackendUnavailableError, InvalidInputError, ModelNotFoundError
from webaccel.models import registry
from webaccel.native import NativeRunner

pytestmark = pytest.mark.browser

SENTENCES = [
    "Hi.",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln: Straße, Maß und Öl.",
    "東京は日本の首都です。",
    "Привет, как дела? Всё хорошо.",
    "Emoji are tokens too 🚀🔥 — and so are dashes.",
    "In 1905 Einstein published four papers that changed physics: on the photoelectric effect, "
    "Brownian motion, special relativity and mass-energy equivalence.",
    "def f(x): return x ** 2  # code is text as well",
    "   leading and trailing spaces   ",
]


def native_embeddings(texts, precision="fp32"):
    spec = registry.get("minilm")
    proc = spec.processor()
    prepared = proc.preprocess(texts, {})
    outputs, _, _ = NativeRunner().run(spec, prepared.tensors, precision)
    return proc.postprocess(outputs, prepared)["embeddings"]


def cosines(a, b):
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_batched_wasm_embeddings_equal_native(accelerator):
    out = accelerator.accelerate("minilm", SENTENCES, platform="wasm")
    assert out["backend"] == "wasm" and out["browser"] == "chromium"
    assert out["embeddings"].shape == (len(SENTENCES), 384)
    cos = cosines(out["embeddings"], native_embeddings(SENTENCES))
    assert cos.min() >= 0.9999, cos
    assert out["page_ms"] > 0 and out["latency_ms"] >= out["page_ms"]


@pytest.mark.slow
def test_batched_webgpu_embeddings_match_native(software_gpu_accelerator):
    accelerator = software_gpu_accelerator
    worker = accelerator._loop.run(accelerator._engine.any_worker())
    if not (worker.capabilities.get("webgpu") or {}).get("available"):
        pytest.skip("this Chromium has no WebGPU adapter")
    # SwiftShader runs WebGPU on the CPU: correct but slow, so allow it time.
    out = accelerator.accelerate(
        "minilm", SENTENCES, {"timeout": 600}, priority_list=["webgpu"], allow_software=True
    )
    assert out["backend"] == "webgpu" and out["fallback_reason"] is None
    cos = cosines(out["embeddings"], native_embeddings(SENTENCES))
    assert cos.min() >= 0.999, cos
    # Chromium loads JSEP: each micro-batch (the list is split by length, so short
    # sentences are not padded to the longest) ran padded to a fixed shape, captured.
    assert out["shape_bucket"] is not None and re.fullmatch(r"\d+x\d+", out["shape_bucket"])
    assert len(out["embeddings"]) == len(SENTENCES)


@pytest.mark.slow
def test_int4_on_chromium_webgpu_is_refused_not_wrong(software_gpu_accelerator):
    accelerator = software_gpu_accelerator
    # JSEP computes GatherBlockQuantized (int4 embedding tables) wrongly and its
    # MatMulNBits fails on MiniLM's shapes: the page refuses the load with a clear
    # error instead of failing mid-run or returning wrong embeddings.
    worker = accelerator._loop.run(accelerator._engine.any_worker())
    if not (worker.capabilities.get("webgpu") or {}).get("available"):
        pytest.skip("this Chromium has no WebGPU adapter")
    with pytest.raises(BackendUnavailableError, match="4-bit weights"):
        accelerator.accelerate(
            "minilm",
            SENTENCES[:2],
            {"precision": "int4"},
            priority_list=["webgpu"],
            allow_software=True,
        )
    out = accelerator.accelerate("minilm", SENTENCES[:2], {"precision": "int4"}, platform="wasm")
    assert cosines(out["embeddings"], native_embeddings(SENTENCES[:2], "int4")).min() >= 0.999


def test_default_platform_does_not_use_software_webgpu(accelerator, software_gpu_accelerator):
    out = accelerator.accelerate("minilm", "hello")
    caps = accelerator._loop.run(accelerator._engine.any_worker()).capabilities
    gpu = caps.get("webgpu") or {}
    if gpu.get("software"):
        # The page did not even load the WebGPU build: it starts faster without it.
        assert caps["ort"] == {**caps["ort"], "build": "wasm", "requested": "auto"}
        assert out["backend"] == "wasm" and not gpu["available"]
        assert "software rasterizer" in gpu["reason"] and "allow_software=True" in gpu["reason"]
        allowed = software_gpu_accelerator._loop.run(
            software_gpu_accelerator._engine.any_worker()
        ).capabilities
        assert allowed["ort"]["build"] == "all" and allowed["webgpu"]["available"]
    else:  # a real GPU: the WebGPU build, and webgpu preferred
        assert caps["ort"]["build"] == "all" and out["backend"] == "webgpu"


def test_raw_tensors_are_accepted(accelerator):
    prepared = registry.get("minilm").processor().preprocess(["hello world"], {})
    raw = {k: v.tolist() for k, v in prepared.tensors.items()}
    out = accelerator.accelerate("minilm", raw, platform="wasm")
    # Raw tensors in, the graph's raw outputs back (MiniLM pools in its graph).
    assert out["sentence_embedding"].shape == (1, 384)


def test_long_input_is_truncated_and_says_so(accelerator):
    text = "word " * 2000  # 10k characters
    out = accelerator.accelerate("minilm", [text, "short"], platform="wasm")
    assert out["truncated"] == [True, False]
    assert "truncated" in out["warning"]
    assert np.isclose(np.linalg.norm(out["embeddings"][0]), 1.0, atol=1e-4)


@pytest.mark.parametrize("bad", [[], "", ["fine", "   "], [1, 2]])
def test_empty_or_invalid_input_is_a_clear_error(accelerator, bad):
    with pytest.raises(InvalidInputError):
        accelerator.accelerate("minilm", bad)


def test_unknown_model_and_option_are_clear_errors(accelerator):
    with pytest.raises(ModelNotFoundError, match="known models: .*minilm"):
        accelerator.accelerate("no-such-model", "x")
    with pytest.raises(InvalidInputError, match="unknown option"):
        accelerator.accelerate("minilm", "x", {"precison": 8})
    with pytest.raises(InvalidInputError, match="precision"):
        accelerator.accelerate("minilm", "x", {"precision": 3})


def test_seed_api_shape(accelerator):
    out = accelerator.accelerate("minilm", input_text="hello", options={"use_ipfs": False})
    for key in ("browser", "backend", "precision", "latency_ms", "page_ms", "embeddings"):
        assert key in out
    hw = accelerator.get_optimal_hardware("minilm")
    assert hw["browser"] == "chromium" and hw["platform"] in hw["available_backends"]
