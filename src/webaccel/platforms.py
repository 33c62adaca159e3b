"""Which backend serves a request on a given worker, and why.  Pure.

Rules (DESIGN.md "Routing and precision"):

* ``auto`` and the *default* platform never pick a software WebGPU adapter
  (SwiftShader, ``isFallbackAdapter``): it is correct but 85-1700x slower than
  WASM here (FACTS.md).  An *explicit* ``webgpu`` request still uses it.
* Fallback order: webgpu -> webnn -> wasm; every fallback says why.
* fp16 on WebGPU needs ``shader-f16``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webaccel.errors import InvalidInputError

PLATFORMS = ("auto", "webgpu", "webnn", "wasm")


@dataclass(frozen=True)
class BackendChoice:
    backend: str
    requested: str
    reason: str | None = None  # why the requested backend was not used (None: it was)

    @property
    def fell_back(self) -> bool:
        return self.reason is not None


def _webgpu(caps: dict[str, Any]) -> dict[str, Any]:
    return caps.get("webgpu") or {}


def _webgpu_problem(caps: dict[str, Any], precision: str, *, allow_software: bool) -> str | None:
    gpu = _webgpu(caps)
    if not gpu.get("available"):
        return f"WebGPU unavailable: {gpu.get('reason', 'no adapter')}"
    if gpu.get("software") and not allow_software:
        arch = gpu.get("architecture") or gpu.get("description") or "software"
        return (
            f"the WebGPU adapter is a software rasterizer ({arch}, isFallbackAdapter="
            f"{gpu.get('isFallbackAdapter')}), not a GPU; wasm is faster"
        )
    if precision == "fp16" and not gpu.get("shaderF16"):
        return "the WebGPU adapter lacks shader-f16, which fp16 models need"
    return None


def _webnn_problem(caps: dict[str, Any]) -> str | None:
    nn = caps.get("webnn") or {}
    if nn.get("available"):
        return None
    return f"WebNN unavailable: {nn.get('reason', 'navigator.ml missing')}"


def choose_backend(
    requested: str | None, caps: dict[str, Any], *, precision: str = "fp32", explicit: bool = True
) -> BackendChoice:
    """Pick the backend for ``requested`` on a worker with ``caps``.

    ``explicit`` is False when ``requested`` is only a default (e.g.
    ``WebAccelerator(default_platform="webgpu")``); then a software adapter is
    skipped just as for ``auto``.
    """
    req = (requested or "auto").lower()
    if req not in PLATFORMS:
        raise InvalidInputError(f"unknown platform {requested!r}; choose one of {PLATFORMS}")
    if req == "wasm":
        return BackendChoice("wasm", req)
    reasons: list[str] = []
    if req in ("auto", "webgpu"):
        problem = _webgpu_problem(caps, precision, allow_software=(req == "webgpu" and explicit))
        if problem is None:
            return BackendChoice("webgpu", req)
        reasons.append(problem)
    problem = _webnn_problem(caps)
    if problem is None:
        return BackendChoice("webnn", req, "; ".join(reasons) or None)
    reasons.append(problem)
    if req == "webnn":
        gpu_problem = _webgpu_problem(caps, precision, allow_software=False)
        if gpu_problem is None:
            return BackendChoice("webgpu", req, "; ".join(reasons))
    return BackendChoice("wasm", req, "; ".join(reasons))
