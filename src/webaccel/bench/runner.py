"""Runs the benchmarks of DESIGN.md through the contract in :mod:`webaccel.bench.core`.

One result per benchmark, a dict in DESIGN.md's shape (keys in this order)::

    {"benchmark": NAME, "ratio": R, "ratio_is": "<what over what>",
     "figures": {...}, "hardware": {...}, "versions": {...}, "at": ISO-time}

or, when the feature is not built or not usable here,
``{"benchmark", "unavailable": "<why>", "ratio_is"?, "hardware", "versions", "at"}``,
or, when the benchmark itself crashed, ``{"benchmark", "error": "<type: message>", ...}``.

A benchmark may put a ``versions`` dict in its figures (e.g. the exact browser
it drove); the runner moves it into ``versions``.  Figures are made JSON-safe
(numpy scalars and arrays become numbers and lists).
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from webaccel.bench.core import BenchContext, BenchmarkUnavailable, BenchSpec, Measurement, load
from webaccel.metrics import sysinfo

if TYPE_CHECKING:
    from webaccel.metrics.store import MetricsStore

log = logging.getLogger(__name__)


def jsonable(value: Any) -> Any:
    """Turn numpy scalars/arrays, tuples, Paths and non-finite floats into JSON values."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalar or array
        return jsonable(value.tolist())
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def run_one(name: str, spec: BenchSpec | str, ctx: BenchContext) -> dict[str, Any]:
    """Run one benchmark (or describe why it cannot run); never raises for the benchmark's sake."""
    versions = dict(sysinfo.versions())
    if isinstance(spec, str):
        return {"benchmark": name, "unavailable": spec, "hardware": sysinfo.hardware(),
                "versions": versions, "at": _now()}
    try:
        m = spec.fn(ctx)
        if not isinstance(m, Measurement):
            raise TypeError(f"{spec.module} returned {type(m).__name__}, not Measurement")
        ratio = float(m.ratio)
        if not math.isfinite(ratio):
            raise ValueError(f"ratio is {ratio}")
    except BenchmarkUnavailable as exc:
        return {"benchmark": name, "unavailable": str(exc) or "unavailable",
                "ratio_is": spec.ratio_is, "hardware": sysinfo.hardware(),
                "versions": versions, "at": _now()}
    except Exception as exc:  # report it as a result; the CLI exits non-zero
        log.debug("benchmark %s failed:\n%s", name, traceback.format_exc())
        return {"benchmark": name, "error": f"{type(exc).__name__}: {exc}",
                "ratio_is": spec.ratio_is, "hardware": sysinfo.hardware(),
                "versions": versions, "at": _now()}
    figures = jsonable(dict(m.figures))
    extra_versions = figures.pop("versions", None)
    if isinstance(extra_versions, dict):
        versions.update(extra_versions)
    return {"benchmark": name, "ratio": ratio, "ratio_is": spec.ratio_is, "figures": figures,
            "hardware": sysinfo.hardware(), "versions": versions, "at": _now()}


def run_benchmarks(
    names: Iterable[str] | None = None,
    *,
    repeat: int = 20,
    warmup: int = 20,
    home: Path | None = None,
    options: dict[str, Any] | None = None,
    store: MetricsStore | None = None,
    on_start: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Load and run ``names`` (all of DESIGN.md's when None), yielding one result each.

    With a ``store``, a ``bench`` run is recorded and every result stored in it.
    """
    specs = load(list(names) if names else None)
    if store is not None:
        store.record_run_start("bench", info={"benchmarks": list(specs), "repeat": repeat,
                                              "warmup": warmup})
    for name, spec in specs.items():
        if on_start is not None:
            on_start(name)
        ctx = BenchContext(repeat=repeat, warmup=warmup, home=home, options=dict(options or {}))
        started = time.perf_counter()
        result = run_one(name, spec, ctx)
        log.info("benchmark %s took %.1f s", name, time.perf_counter() - started)
        if store is not None:
            better = spec.better if isinstance(spec, BenchSpec) else None
            store.record_benchmark(result, better=better)
        yield result


def print_line(name: str, ctx: BenchContext) -> int:
    """Run benchmark ``name`` and print its JSON line without the metrics store.

    For GPU machines whose Python lacks duckdb (``python -m webaccel.bench.<module>``):
    bring the line back and store it with ``scripts/gpu/store_results.py``.
    """
    import json

    from webaccel.bench.core import REGISTRY

    result = run_one(name, REGISTRY[name], ctx)
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m webaccel.bench.runner NAME [-o KEY=VALUE]...``: one benchmark's JSON line.

    For GPU machines whose Python lacks duckdb/typer (see :func:`print_line`), e.g.
    ``python3 -m webaccel.bench.runner pipeline -o browser=node-webgpu -o stages=4``.
    """
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m webaccel.bench.runner")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="one JSON object (the default)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("-o", "--option", action="append", default=[], help="KEY=VALUE (JSON value)")
    args = p.parse_args(argv)
    options: dict[str, Any] = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    found = load([args.name])[args.name]
    if isinstance(found, str):
        p.error(found)
    ctx = BenchContext(repeat=args.repeat, warmup=args.warmup, options=options)
    return print_line(args.name, ctx)


if __name__ == "__main__":
    raise SystemExit(main())
