"""The pipeline benchmark is registered under DESIGN.md's name (it runs browsers, so the
measurement itself is exercised by ``webaccel bench pipeline``, not here)."""

from webaccel.bench.core import BenchSpec, load


def test_pipeline_benchmark_is_registered():
    spec = load(["pipeline"])["pipeline"]
    assert isinstance(spec, BenchSpec)
    assert spec.better == "higher" and "one batch at a time" in spec.ratio_is
