from __future__ import annotations

import sys

import pytest

from webaccel.bench.core import BenchContext, BenchmarkUnavailable, load


def test_registered_under_its_design_name() -> None:
    spec = load(["pool-saturation"])["pool-saturation"]
    assert not isinstance(spec, str), spec
    assert spec.better == "higher"


def test_unavailable_without_a_real_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = load(["pool-saturation"])["pool-saturation"]
    assert not isinstance(spec, str)
    monkeypatch.setitem(sys.modules, "webaccel.browsers", None)  # import fails
    with pytest.raises(BenchmarkUnavailable, match="needs browser workers"):
        spec.fn(BenchContext(repeat=1))


@pytest.mark.browser
def test_measures_a_real_pool() -> None:
    spec = load(["pool-saturation"])["pool-saturation"]
    assert not isinstance(spec, str)
    try:
        m = spec.fn(BenchContext(repeat=1, options={"window_s": 0.5, "windows": 1}))
    except BenchmarkUnavailable as exc:
        pytest.skip(str(exc))
    assert 0.0 < m.ratio <= 1.0
    assert m.figures["completed"] > 0 and m.figures["queue_wait_ms_p99"] is not None
    assert m.figures["stats"].get("done", 0) >= m.figures["completed"]
    burst = m.figures["burst"]
    assert burst["refused"] >= burst["offered"] // 2  # 10x max_pending: most refused
    assert burst["refusal_ms"]["max"] < 100  # at once, not after queueing
