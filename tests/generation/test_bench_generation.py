"""The ``generation`` benchmark on the tiny test Llama: one result in DESIGN.md's shape."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.browser


def test_generation_benchmark_tiny(tiny):
    from webaccel.bench.core import BenchContext, load
    from webaccel.bench.runner import run_one

    spec = load(["generation"])["generation"]
    assert not isinstance(spec, str), spec
    result = run_one(
        "generation",
        spec,
        BenchContext(repeat=2, options={"model": "tiny-llama", "max_tokens": 24, "torch": "cpu"}),
    )
    assert "error" not in result, result.get("error")
    json.dumps(result)  # JSON-safe
    fig = result["figures"]
    assert result["ratio"] > 0 and result["ratio_is"].startswith("in-page decode tokens/s")
    assert fig["tokens_identical_to_native"] is True
    assert fig["wasm"]["backend"] == "wasm" and fig["wasm"]["page_ttft_ms"]["median"] > 0
    assert fig["native"]["decode_tokens_per_s"]["n"] == 2
    assert (
        abs(
            result["ratio"]
            - fig["wasm"]["decode_tokens_per_s"]["median"]
            / fig["native"]["decode_tokens_per_s"]["median"]
        )
        < 1e-9
    )
    assert "skipped" in fig["webgpu"] or "decode_tokens_per_s" in fig["webgpu"]
    # -o torch=cpu: transformers generate on the same weights makes the same greedy tokens
    ref = fig["torch"]
    assert ref["device"] == "cpu" and ref["tokens_identical_to_native"] is True
    assert len(ref["token_ids"]) == 24 and ref["ttft_ms"] > 0
    assert ref["decode_tokens_per_s"] > 0 and ref["streams"] == 1


def test_generation_benchmark_streams_option(tiny):
    """``-o streams=3``: concurrent streams vs one at a time, texts checked, batch seen."""
    from webaccel.bench.core import BenchContext, load
    from webaccel.bench.runner import run_one

    spec = load(["generation"])["generation"]
    assert not isinstance(spec, str), spec
    result = run_one(
        "generation",
        spec,
        BenchContext(
            repeat=1, options={"model": "tiny-llama", "max_tokens": 150, "streams": 3, "workers": 1}
        ),
    )
    assert "error" not in result, result.get("error")
    json.dumps(result)
    fig = result["figures"]
    streams = fig["streams"]
    assert fig["streams_over_one"] == streams["streams_over_one"] > 0
    assert streams["streams"] == 3 and len(set(streams["prompts"])) == 3
    assert streams["texts_identical_to_solo"] is True
    assert streams["batch_max"] >= 2 and streams["workers"] == streams["workers_used"] == 1
    assert streams["backends"] == ["wasm"]  # no GPU here: the pool picks wasm
    assert streams["one_stream_tokens_per_s"]["n"] == 1
