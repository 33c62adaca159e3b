from __future__ import annotations

import statistics

import pytest

from webaccel.bench.core import BenchContext, load


@pytest.mark.browser
@pytest.mark.slow
def test_minilm_page_vs_native_one_thread() -> None:
    spec = load(["wasm-vs-native"])["wasm-vs-native"]
    assert not isinstance(spec, str), spec
    assert spec.better == "lower"
    m = spec.fn(BenchContext(repeat=3, warmup=3, options={"models": "minilm"}))
    f = m.figures
    assert f["models"] == ["minilm"] and f["threads"] == 1
    assert "Chrom" in f["user_agent"]
    assert list(f["per_model"]) == ["minilm"]
    for fig in f["per_model"].values():
        for key in ("page_ms", "native_ms"):
            assert fig[key]["n"] == 3
            assert 0 < fig[key]["min"] <= fig[key]["median"] <= fig[key]["max"]
        assert fig["ratio"] == pytest.approx(fig["page_ms"]["median"] / fig["native_ms"]["median"])
        assert fig["ratio"] > 0
    assert m.ratio == pytest.approx(statistics.median(r["ratio"] for r in f["per_model"].values()))
