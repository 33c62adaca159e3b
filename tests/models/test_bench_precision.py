"""The ``precision`` benchmark (lives here because tests/models is this module's owner)."""

from __future__ import annotations

from webaccel.bench.core import BenchContext, load


def test_precision_benchmark_registers_and_measures(minilm_onnx) -> None:
    spec = load(["precision"])["precision"]
    assert not isinstance(spec, str), spec
    m = spec.fn(
        BenchContext(
            repeat=2, warmup=1, options={"mixed": False, "models": ["nsfw-cnn"], "node_wasm": False}
        )
    )
    v = m.figures["variants"]
    assert set(v) == {"fp32", "fp16", "int8", "int4"}
    assert m.ratio == v["int4"]["bytes"] / v["fp32"]["bytes"] <= 0.2
    assert v["fp16"]["cosine_worst"] > 0.9999
    assert all(x["native_latency_ms"]["median"] > 0 for x in v.values())
    nsfw = m.figures["models"]["nsfw-cnn"]
    assert nsfw["int8"]["ratio_to_fp32"] < 0.3 and nsfw["fp16"]["accuracy_worst"] == 1.0
    assert "note" in nsfw["int4"]  # a CNN has no MatMul weights for int4 to shrink
