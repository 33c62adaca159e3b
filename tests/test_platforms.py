"""Backend choice: software WebGPU is not a GPU, fallbacks say why."""

from __future__ import annotations

import pytest

from webaccel.errors import InvalidInputError
from webaccel.platforms import choose_backend

SWIFTSHADER = {
    "webgpu": {
        "available": True,
        "software": True,
        "isFallbackAdapter": True,
        "architecture": "swiftshader",
        "shaderF16": False,
    },
    "webnn": {"available": False, "reason": "WebNN is not supported on this platform"},
}
GPU = {
    "webgpu": {"available": True, "software": False, "shaderF16": True},
    "webnn": {"available": False, "reason": "no"},
}
NO_GPU = {
    "webgpu": {"available": False, "reason": "requestAdapter() returned null"},
    "webnn": {"available": True},
}


def test_auto_skips_software_adapter_and_says_why():
    c = choose_backend("auto", SWIFTSHADER)
    assert c.backend == "wasm" and "software" in c.reason and "WebNN" in c.reason


def test_default_webgpu_skips_software_adapter_but_explicit_uses_it():
    assert choose_backend("webgpu", SWIFTSHADER, explicit=False).backend == "wasm"
    explicit = choose_backend("webgpu", SWIFTSHADER, explicit=True)
    assert explicit.backend == "webgpu" and explicit.reason is None


def test_real_gpu_is_chosen_and_fp16_needs_shader_f16():
    assert choose_backend("auto", GPU).backend == "webgpu"
    no_f16 = {"webgpu": {**GPU["webgpu"], "shaderF16": False}, "webnn": GPU["webnn"]}
    c = choose_backend("webgpu", no_f16, precision="fp16")
    assert c.backend == "wasm" and "shader-f16" in c.reason


def test_webnn_then_wasm_fallback_order():
    assert choose_backend("webgpu", NO_GPU).backend == "webnn"
    assert choose_backend("webnn", SWIFTSHADER).backend == "wasm"
    assert choose_backend("webnn", GPU).backend == "webgpu"
    assert choose_backend("wasm", GPU).backend == "wasm"


def test_unknown_platform_is_rejected():
    with pytest.raises(InvalidInputError):
        choose_backend("cuda", GPU)
