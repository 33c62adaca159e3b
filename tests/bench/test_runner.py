from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from webaccel.bench.core import BENCHMARK_MODULES
from webaccel.bench.runner import jsonable, run_benchmarks
from webaccel.metrics.store import MetricsStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the shared toy
from metrics import toybench  # noqa: E402

KEYS = ["benchmark", "ratio", "ratio_is", "figures", "hardware", "versions", "at"]


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBACCEL_HOME", str(tmp_path / "home"))


def test_result_has_design_shape_and_real_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    toybench.install(monkeypatch)
    (r,) = run_benchmarks([toybench.NAME], repeat=7, warmup=2)
    assert list(r) == KEYS
    json.dumps(r)  # JSON-safe (numpy scalars converted)
    f = r["figures"]
    assert f["python_ms"]["n"] == 7 and f["numpy_ms"]["n"] == 7
    assert f["python_ms"]["min"] <= f["python_ms"]["median"] <= f["python_ms"]["max"]
    assert r["ratio"] == pytest.approx(f["python_ms"]["median"] / f["numpy_ms"]["median"])
    assert r["ratio"] > 1  # numpy beats a Python loop over 20k floats
    assert isinstance(f["n"], int) and f["n"] == 20_000
    assert "versions" not in f and r["versions"]["numpy"]  # moved into versions
    v, h = r["versions"], r["hardware"]
    assert v["webaccel"] and v["python"] and v["onnxruntime"]
    assert h["threads"] >= 1 and h["memory_gb"] > 0 and isinstance(h["gpus"], list)
    assert r["at"].endswith("+00:00")


def test_missing_benchmarks_are_unavailable_not_faked(monkeypatch: pytest.MonkeyPatch) -> None:
    toybench.install(monkeypatch)
    monkeypatch.setitem(BENCHMARK_MODULES, "ghost", "webaccel.bench.ghost_not_built")
    # DESIGN.md names whose module nobody has written yet (others may exist by now).
    missing = [n for n, m in BENCHMARK_MODULES.items() if importlib.util.find_spec(m) is None]
    assert "ghost" in missing
    results = {r["benchmark"]: r for r in run_benchmarks([toybench.NAME, *missing], repeat=3,
                                                         warmup=0)}
    assert "ratio" in results.pop(toybench.NAME)
    assert set(results) == set(missing)
    for r in results.values():
        assert "ratio" not in r and r["unavailable"] == "not built yet", r
        assert list(r) == ["benchmark", "unavailable", "hardware", "versions", "at"]


def test_unavailable_and_crashing_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    toybench.install(monkeypatch, "toy-unavailable", toybench.unavailable)
    toybench.install(monkeypatch, "toy-broken", toybench.broken)
    a, b = run_benchmarks(["toy-unavailable", "toy-broken"], repeat=1, warmup=0)
    assert a["unavailable"] == "needs a GPU adapter that is not a fallback adapter"
    assert a["ratio_is"] == toybench.RATIO_IS
    assert b["error"] == "RuntimeError: boom" and "ratio" not in b


def test_results_are_stored(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    toybench.install(monkeypatch)
    toybench.install(monkeypatch, "toy-unavailable", toybench.unavailable, better="lower")
    with MetricsStore(tmp_path / "m.duckdb") as store:
        results = list(run_benchmarks([toybench.NAME, "toy-unavailable"], repeat=3, warmup=1,
                                      store=store))
        rows = store.query("SELECT * FROM benchmarks ORDER BY benchmark")
        runs = store.query("SELECT kind, info FROM runs")
    assert [r["benchmark"] for r in rows] == ["toy-sum", "toy-unavailable"]
    assert rows[0]["ratio"] == results[0]["ratio"] and rows[0]["better"] == "higher"
    assert json.loads(rows[0]["record"]) == results[0]
    assert rows[1]["ratio"] is None and rows[1]["unavailable"] and rows[1]["better"] == "lower"
    assert runs[0]["kind"] == "bench"


def test_jsonable() -> None:
    import numpy as np

    assert jsonable({"a": np.float32(1.5), "b": (1, np.arange(3)), "c": float("nan"),
                     "d": Path("/x")}) == {"a": 1.5, "b": [1, [0, 1, 2]], "c": None, "d": "/x"}
