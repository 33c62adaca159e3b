from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
HELPERS = Path(__file__).with_name("procs.py")


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("WEBACCEL_HOME", str(h))
    monkeypatch.delenv("WEBACCEL_METRICS_DB", raising=False)
    return h


@pytest.fixture
def db_path(home: Path) -> Path:
    return home / "metrics.duckdb"


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start ``procs.py ARGS...`` (a helper process) with line-buffered stdout."""
    return subprocess.Popen([sys.executable, str(HELPERS), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env())


def wait_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 20.0) -> str:
    import select
    import time

    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith(prefix):
                return line.strip()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2)
    err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
    raise AssertionError(f"no {prefix!r} line from helper within {timeout} s; stderr: {err}")


def tiny_onnx(path: Path, dim: int = 64) -> Path:
    """A real ONNX model (MatMul + Relu), built here, no downloads."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((dim, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def plot_texts(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every text each plot drew (titles, axis labels, tick labels, offsets, bar labels),
    one list per saved figure, captured as :func:`webaccel.metrics.plots._save` runs."""
    from webaccel.metrics import plots

    figs: list[list[str]] = []
    real_save = plots._save

    def keep(fig: Any, path: Path) -> Path:
        fig.canvas.draw()  # tick labels and offset texts exist only once drawn
        texts = [fig._suptitle.get_text()] if fig._suptitle else []
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                texts += [t.get_text() for t in axis.get_ticklabels(which="both")]
                texts += [axis.get_offset_text().get_text(), axis.get_label().get_text()]
            texts += [t.get_text() for t in ax.texts] + [ax.get_title()]
        figs.append([t for t in texts if t])
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figs


def scientific(texts: list[str]) -> list[str]:
    """The labels written in scientific, offset or power-of-ten notation."""
    return [t for t in texts if re.search(r"\d[eE][+-]?\d|10\^|\\times|×10|mathdefault", t)]
