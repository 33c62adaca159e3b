"""Backend choice from a page's report: software WebGPU is not a GPU, the caller's
order is a preference, and every fallback says why with a coded reason."""

from __future__ import annotations

import pytest

from webaccel.errors import InvalidInputError
from webaccel.pool.routing import Reason, WorkerCaps, best_backend, constraints_for

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


def choice(caps: dict, **route) -> tuple[str | None, list[Reason], str]:
    backend, skipped = best_backend(
        WorkerCaps.parse(caps), constraints_for(**route), route.get("precision") or "fp32"
    )
    return backend, [r.code for r in skipped], "; ".join(r.message for r in skipped)


def test_auto_skips_software_adapter_and_says_why():
    backend, codes, text = choice(SWIFTSHADER)
    assert backend == "wasm"
    assert codes == [Reason.SOFTWARE_ADAPTER, Reason.NO_BACKEND]
    assert "software" in text and "WebNN is not supported" in text


def test_a_priority_list_starting_with_webgpu_is_a_preference_not_a_demand():
    # The README's pool example: ["webgpu", "wasm", "cpu"] on a software adapter.
    backend, codes, _ = choice(SWIFTSHADER, priority_list=["webgpu", "wasm", "cpu"])
    assert backend == "wasm" and codes == [Reason.SOFTWARE_ADAPTER]
    assert choice(SWIFTSHADER, platform="webgpu")[0] == "wasm"
    forced = choice(SWIFTSHADER, priority_list=["webgpu"], allow_software=True)
    assert forced[0] == "webgpu" and forced[1] == []
    assert choice(SWIFTSHADER, priority_list=["webgpu"])[0] is None  # demanded, not allowed


def test_real_gpu_is_chosen_and_fp16_needs_shader_f16():
    assert choice(GPU)[0] == "webgpu"
    no_f16 = {"webgpu": {**GPU["webgpu"], "shaderF16": False}, "webnn": GPU["webnn"]}
    backend, codes, text = choice(no_f16, platform="webgpu", precision="fp16")
    assert backend == "wasm"  # asked for by name, fp16 runs (emulated) on wasm
    assert codes[0] == Reason.NO_SHADER_F16 and "shader-f16" in text
    auto = best_backend(WorkerCaps.parse(no_f16), constraints_for(), "fp16")
    assert auto[0] is None  # never chosen automatically: no shader-f16, emulated on wasm


def test_fallback_order_follows_the_caller():
    assert choice(NO_GPU, platform="webgpu")[0] == "webnn"
    assert choice(SWIFTSHADER, platform="webnn")[0] == "wasm"
    assert choice(GPU, platform="webnn")[0] == "webgpu"
    assert choice(GPU, platform="wasm")[0] == "wasm"
    assert choice(GPU, priority_list=["wasm", "webgpu"])[0] == "wasm"


def test_unknown_platform_and_priority_entries_are_rejected():
    with pytest.raises(InvalidInputError):
        constraints_for(platform="cuda")
    with pytest.raises(InvalidInputError):
        constraints_for(priority_list=["webgpu", "tpu"])
