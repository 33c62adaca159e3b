"""The ``webaccel`` command as a user runs it (real subprocesses, real browser)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.browser

WEBACCEL = [sys.executable, "-m", "webaccel.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WEBACCEL, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_run_minilm_json():
    proc = run("run", "minilm", "Grüße aus Köln", "--backend", "wasm", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["embedding"]) == 384
    assert out["browser"] == "chromium" and out["backend"] == "wasm"
    assert out["precision"] == "fp32" and out["latency_ms"] > 0


def test_errors_are_one_clear_line_and_exit_2():
    proc = run("run", "no-such-model", "x")
    assert proc.returncode == 2
    assert "MODEL_NOT_FOUND" in proc.stderr and "known models" in proc.stderr
    assert "Traceback" not in proc.stderr
    no_chromium = {"WEBACCEL_CHROMIUM": "/nope/chromium"}
    missing = run("run", "minilm", "x", "--browser", "chromium", "--json", env=no_chromium)
    assert missing.returncode == 2
    err = json.loads(missing.stdout)["error"]
    assert err["code"] == "BACKEND_UNAVAILABLE" and "does not exist" in err["message"]
    # Without a browser pinned, the pool falls back to another installed browser.
    fallback = run("run", "minilm", "x", "--json", env=no_chromium)
    if fallback.returncode == 0:
        assert json.loads(fallback.stdout)["browser"] != "chromium"
    else:
        assert "BACKEND_UNAVAILABLE" in fallback.stdout


def test_doctor_reports_each_browser():
    proc = run("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    chromium = next(b for b in report["browsers"] if b["browser"] == "chromium")
    caps = chromium["capabilities"]
    assert caps["wasm"]["simd"] is True
    assert "isFallbackAdapter" in caps["webgpu"] or caps["webgpu"]["available"] is False
    assert chromium["advice"]  # WebNN is missing on Debian's Chromium: doctor says what to do
