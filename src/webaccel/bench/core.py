"""The benchmark contract.

A benchmark is a function ``fn(ctx: BenchContext) -> Measurement`` registered
with :func:`benchmark`.  It measures its own baseline in the same run, warms
up, repeats ``ctx.repeat`` times and returns the ratio plus absolute figures
(use :func:`summarize` for median/spread).  When its feature does not exist
here it raises :class:`BenchmarkUnavailable` with the reason; the runner turns
that into ``{"unavailable": reason}`` instead of a ratio.

The runner (``webaccel bench``) adds ``hardware``, ``versions`` and ``at``,
prints one JSON line per benchmark and stores it in the metrics store.
"""

from __future__ import annotations

import importlib
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class BenchmarkUnavailable(Exception):
    """The benchmark's feature is missing here; the message says why."""


@dataclass
class BenchContext:
    repeat: int = 20
    warmup: int = 20
    home: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    ratio: float
    figures: dict[str, Any]


@dataclass(frozen=True)
class BenchSpec:
    name: str
    ratio_is: str
    better: Literal["higher", "lower"]
    fn: Callable[[BenchContext], Measurement]
    module: str


REGISTRY: dict[str, BenchSpec] = {}

# Every benchmark name of DESIGN.md, and the module that implements it.  A
# module that does not exist yet makes that benchmark "unavailable".
BENCHMARK_MODULES: dict[str, str] = {
    "bridge-overhead": "webaccel.bench.bridge_overhead",
    "wasm-vs-native": "webaccel.bench.wasm_vs_native",
    "concurrency": "webaccel.bench.concurrency",
    "warm-load": "webaccel.bench.warm_load",
    "precision": "webaccel.bench.precision",
    "multi-source": "webaccel.bench.multi_source",
    "import": "webaccel.bench.import_speed",
    "generation": "webaccel.bench.generation",
    "webgpu-vs-wasm": "webaccel.bench.webgpu_vs_wasm",
    "pool-saturation": "webaccel.bench.pool_saturation",
    "soak": "webaccel.bench.soak",
    "pipeline": "webaccel.bench.pipeline",
    "corpus": "webaccel.bench.corpus",
}


def benchmark(name: str, *, ratio_is: str, better: Literal["higher", "lower"]):
    """Register ``fn`` as the benchmark ``name`` (one of BENCHMARK_MODULES)."""

    def register(
        fn: Callable[[BenchContext], Measurement],
    ) -> Callable[[BenchContext], Measurement]:
        REGISTRY[name] = BenchSpec(name, ratio_is, better, fn, fn.__module__)
        return fn

    return register


def load(names: Iterable[str] | None = None) -> dict[str, BenchSpec | str]:
    """Import the modules of ``names`` (all when None); value is the spec or why it is missing."""
    out: dict[str, BenchSpec | str] = {}
    for name in names or BENCHMARK_MODULES:
        module = BENCHMARK_MODULES.get(name)
        if module is None:
            out[name] = f"unknown benchmark {name!r}; known: {', '.join(BENCHMARK_MODULES)}"
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            out[name] = "not built yet"
            continue
        out[name] = REGISTRY.get(name) or f"{module} registers no benchmark {name!r}"
    return out


def summarize(samples: list[float]) -> dict[str, float]:
    """Median and spread of ``samples`` (ms or any unit), for a benchmark's figures."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)

    def pct(p: float) -> float:
        k = (len(ordered) - 1) * p
        lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
        return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)

    return {
        "median": statistics.median(ordered),
        "p10": pct(0.10),
        "p90": pct(0.90),
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }
