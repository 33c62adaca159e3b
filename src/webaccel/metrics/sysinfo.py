"""Hardware and software versions attached to every benchmark line.

Each probe is best effort (a missing tool gives None, never an exception) and
cached for the life of the process.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

import webaccel


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpus() -> list[dict[str, Any]]:
    if not shutil.which("nvidia-smi"):
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                "--format=csv,noheader,nounits"])
    result = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            mem = float(parts[1]) / 1024 if parts[1].replace(".", "").isdigit() else None
            result.append({"name": parts[0], "memory_gb": round(mem, 1) if mem else None,
                           "driver": parts[2]})
    return result


@functools.lru_cache(maxsize=1)
def hardware() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "cpu": cpu_model(),
        "cores": psutil.cpu_count(logical=False),
        "threads": os.cpu_count(),
        "memory_gb": round(vm.total / 2**30, 1),
        "gpus": gpus(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
    }


def _dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _repo_root() -> Path:
    return Path(webaccel.__file__).resolve().parents[2]


def onnxruntime_web_version() -> str | None:
    """Installed onnxruntime-web (its package.json), else the version package.json asks for."""
    from webaccel import paths

    pkg_dir = Path(webaccel.__file__).resolve().parent
    candidates = [
        pkg_dir / "web" / "vendor" / "onnxruntime-web" / "package.json",
        _repo_root() / "node_modules" / "onnxruntime-web" / "package.json",
        paths.home() / "node_modules" / "onnxruntime-web" / "package.json",
    ]
    for cand in candidates:
        try:
            return str(json.loads(cand.read_text())["version"])
        except (OSError, ValueError, KeyError):
            continue
    try:
        wanted = json.loads((_repo_root() / "package.json").read_text())["dependencies"]
        return f"{wanted['onnxruntime-web']} (declared, not installed)"
    except (OSError, ValueError, KeyError):
        return None


BROWSERS = {
    "chromium": ["/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome"],
    "firefox": ["firefox-esr", "firefox"],
}


def browser_version(name: str) -> str | None:
    for exe in BROWSERS.get(name, [name]):
        path = exe if os.path.isabs(exe) and os.access(exe, os.X_OK) else shutil.which(exe)
        if path:
            out = _run([path, "--version"], timeout=15.0)
            if out:
                return out.splitlines()[-1].strip()
    return None


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, Any]:
    out: dict[str, Any] = {
        "webaccel": webaccel.__version__,
        "python": platform.python_version(),
        "onnxruntime": _dist_version("onnxruntime"),
        "onnxruntime-web": onnxruntime_web_version(),
        "duckdb": _dist_version("duckdb"),
    }
    for name in BROWSERS:
        v = browser_version(name)
        if v:
            out[name] = v
    return out
