"""The concurrency benchmark: streams balanced in time, and a real run's figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from webaccel.bench.concurrency import balanced_counts


def test_streams_are_balanced_to_the_slowest_models_length() -> None:
    counts = balanced_counts({"minilm": 16.0, "nsfw-cnn": 91.0}, 20)
    assert counts == {"minilm": 114, "nsfw-cnn": 20}  # 114 x 16 ms ~ 20 x 91 ms
    assert balanced_counts({"a": 1.0, "b": 1000.0}, 5) == {"a": 50, "b": 5}  # capped at 10x
    assert balanced_counts({"a": 30.0, "b": 29.0}, 5) == {"a": 5, "b": 5}


@pytest.mark.browser
def test_concurrency_bench_in_chromium() -> None:
    if not Path("/usr/lib/chromium/chromium").exists():
        pytest.skip("Chromium is not installed")
    from webaccel.bench import concurrency
    from webaccel.bench.core import BenchContext

    m = concurrency.concurrency(BenchContext(repeat=2, warmup=3))
    f = m.figures
    assert f["models"] == ["minilm", "nsfw-cnn"] and f["workers"] == 2
    assert f["requests_per_model"] == balanced_counts(f["warmup_latency_ms"], 5)
    assert m.ratio == pytest.approx(f["sequential_s"] / f["concurrent_s"])
    assert 0 < f["weighted_speedup"] <= 2 * len(f["models"])
