"""A real (if small) benchmark for testing the runner: Python's sum vs numpy's sum."""
from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from webaccel.bench.core import (
    BENCHMARK_MODULES,
    REGISTRY,
    BenchContext,
    BenchmarkUnavailable,
    BenchSpec,
    Measurement,
    summarize,
)

NAME = "toy-sum"
RATIO_IS = "python sum ms / numpy sum ms, 20k floats"


def toy_sum(ctx: BenchContext) -> Measurement:
    data = np.random.default_rng(0).standard_normal(int(ctx.options.get("size", 20_000)))
    as_list = data.tolist()

    def timed(fn) -> list[float]:  # type: ignore[no-untyped-def]
        for _ in range(ctx.warmup):
            fn()
        out = []
        for _ in range(ctx.repeat):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1000)
        return out

    base = timed(lambda: sum(as_list))
    fast = timed(lambda: data.sum())
    b, f = summarize(base), summarize(fast)
    return Measurement(ratio=b["median"] / f["median"], figures={
        "python_ms": b, "numpy_ms": f, "n": np.int64(data.size), "checksum": np.float64(data.sum()),
        "versions": {"numpy": np.__version__},
    })


def unavailable(ctx: BenchContext) -> Measurement:
    raise BenchmarkUnavailable("needs a GPU adapter that is not a fallback adapter")


def broken(ctx: BenchContext) -> Measurement:
    raise RuntimeError("boom")


def install(monkeypatch: pytest.MonkeyPatch, name: str = NAME, fn=toy_sum,  # type: ignore[no-untyped-def]
            ratio_is: str = RATIO_IS, better: str = "higher") -> None:
    monkeypatch.setitem(BENCHMARK_MODULES, name, __name__)
    monkeypatch.setitem(REGISTRY, name, BenchSpec(name, ratio_is, better, fn, __name__))  # type: ignore[arg-type]


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    install(monkeypatch)
    yield NAME
