"""Routing policy: which worker, backend and precision serve a request (pure, no I/O).

The order of concerns, each one explainable in a sentence:

1. **Capability** is a hard filter.  A backend the worker does not report is
   never chosen; fp16 needs WebGPU with ``shader-f16`` (or WebNN); a software
   WebGPU adapter (SwiftShader, ``isFallbackAdapter``) is not a GPU, so it is
   only used when the caller asked for ``webgpu`` explicitly (FACTS.md: it is
   85-1700x slower than WASM).  A (model, backend) whose circuit breaker is
   open is skipped for a while.
2. **Affinity**: among free workers, one that already holds the variant wins,
   so models are not reloaded.
3. **Estimated latency** per (model, browser, backend, precision): the EWMA of
   measured round trips once there are ``min_samples``; before that a static
   prior (preferred browser family for the model type, GPU before WebNN before
   WASM) scaled by the best measured latency of the model.  Measurements
   therefore override the static defaults as soon as they disagree.
4. **Power of two choices** (ray ``pow_2_router``) among the workers whose
   estimate is within ``tie_tolerance`` of the best: sample two, take the less
   loaded, which spreads load without herding onto one "best" worker.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webaccel.pool.transport import ModelRef

# Model type -> preferred browser family (seed-document defaults).  "edge"
# means "a WebNN-capable worker": Edge is where WebNN ships; any worker that
# really reports the webnn backend matches it.
DEFAULT_BROWSER_PREFERENCES: dict[str, str] = {
    "audio": "firefox",
    "vision": "chromium",
    "text_embedding": "edge",
}

_BROWSER_ALIASES = {
    "chrome": "chromium",
    "chromium": "chromium",
    "google-chrome": "chromium",
    "firefox": "firefox",
    "firefox-esr": "firefox",
    "edge": "edge",
    "msedge": "edge",
    "webnn": "edge",
    "node": "node-webgpu",
    "node-webgpu": "node-webgpu",
    "native": "native",
    "cpu": "native",
}


def normalize_browser(name: str | None) -> str | None:
    """Seed spellings ("chrome", "msedge") -> family names used by workers."""
    if name is None or name in ("", "auto"):
        return None
    return _BROWSER_ALIASES.get(name.lower(), name.lower())


def normalize_backend(name: str | None) -> str | None:
    if name is None or name in ("", "auto"):
        return None
    return name.lower()


def normalize_precision(p: str | int | None) -> str | None:
    """Seed documents give bits (4, 8, 16, 32); the registry uses names."""
    if p is None or p in ("", "auto"):
        return None
    bits = {4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}
    if isinstance(p, int):
        return bits.get(p, str(p))
    if p.isdigit():
        return bits.get(int(p), p)
    return p.lower()


def needs_f16(precision: str) -> bool:
    return precision == "fp16" or "f16" in precision  # fp16, q4f16


@dataclass(frozen=True)
class WorkerCaps:
    """What routing needs to know about a worker, normalized from its hello."""

    backends: tuple[str, ...]  # really usable, best first
    shader_f16: bool = False
    software_webgpu: bool = False  # the WebGPU adapter is a CPU fallback
    memory_budget_bytes: int | None = None

    @classmethod
    def from_transport(cls, backends: Sequence[str], capabilities: Mapping[str, Any]) -> WorkerCaps:
        """Read the capability keys the page reports (tolerant of their exact nesting).

        Keys read (``web/capabilities.mjs`` reports the first of each):
        ``webgpu.shaderF16`` / ``webgpu.features`` (list; ``shader-f16``) /
        ``shader_f16``; ``webgpu.software`` / ``webgpu.isFallbackAdapter`` /
        ``webgpu.info.isFallbackAdapter`` /
        ``webgpu.adapter.isFallbackAdapter`` / architecture ``swiftshader`` or
        ``software_webgpu``; ``memory_budget_bytes``.
        """
        gpu = capabilities.get("webgpu") or {}
        if not isinstance(gpu, Mapping):
            gpu = {}
        info = gpu.get("info") or gpu.get("adapter") or {}
        if not isinstance(info, Mapping):
            info = {}
        features = gpu.get("features") or info.get("features") or ()
        f16 = (
            bool(capabilities.get("shader_f16") or gpu.get("shaderF16")) or "shader-f16" in features
        )
        arch = str(info.get("architecture") or gpu.get("architecture") or "").lower()
        software = bool(
            capabilities.get("software_webgpu")
            or gpu.get("software")
            or gpu.get("isFallbackAdapter")
            or info.get("isFallbackAdapter")
            or arch == "swiftshader"
        )
        budget = capabilities.get("memory_budget_bytes")
        return cls(
            backends=tuple(backends),
            shader_f16=f16,
            software_webgpu=software,
            memory_budget_bytes=int(budget) if budget else None,
        )


@dataclass(frozen=True)
class Constraints:
    """What the caller demanded (hard) for one request; None = let the pool choose."""

    browser: str | None = None
    backend: str | None = None
    precision: str | None = None


def reject_reason(
    caps: WorkerCaps, browser: str, variant_backend: str, variant_precision: str, want: Constraints
) -> str | None:
    """Why this worker cannot run this variant at all (None = it can).  Static facts only."""
    if want.browser is not None and want.browser != browser:
        return f"caller asked for {want.browser}"
    if want.backend is not None and want.backend != variant_backend:
        return f"caller asked for {want.backend}"
    if want.precision is not None and want.precision != variant_precision:
        return f"caller asked for {want.precision}"
    if variant_backend not in caps.backends:
        return f"{browser} worker has no {variant_backend}"
    if variant_backend == "webgpu" and caps.software_webgpu and want.backend != "webgpu":
        return "software WebGPU adapter is not a GPU (ask for backend=webgpu to use it)"
    if needs_f16(variant_precision):
        if variant_backend == "webgpu" and not caps.shader_f16:
            return "fp16 needs shader-f16, which this adapter lacks"
        if variant_backend == "wasm":
            return "fp16 on wasm is emulated; use fp32 there"
    return None


def prefers(preference: str | None, browser: str, caps: WorkerCaps) -> bool:
    if preference is None:
        return False
    if preference == "edge":  # "the WebNN-capable browser"
        return browser == "edge" or "webnn" in caps.backends
    return browser == preference


@dataclass
class LatencyTable:
    """EWMA of measured milliseconds per (model, browser, backend, precision)."""

    alpha: float = 0.3
    min_samples: int = 3
    _ewma: dict[tuple[str, str, str, str], tuple[float, int]] = field(default_factory=dict)

    def observe(self, key: tuple[str, str, str, str], ms: float) -> None:
        old = self._ewma.get(key)
        if old is None:
            self._ewma[key] = (ms, 1)
        else:
            self._ewma[key] = (old[0] + self.alpha * (ms - old[0]), old[1] + 1)

    def get(self, key: tuple[str, str, str, str]) -> tuple[float, int] | None:
        v = self._ewma.get(key)
        return v if v is not None and v[1] >= self.min_samples else None

    def best_for(self, model: str, min_samples: int | None = None) -> float | None:
        need = self.min_samples if min_samples is None else min_samples
        vals = [ms for (m, *_), (ms, n) in self._ewma.items() if m == model and n >= need]
        return min(vals) if vals else None

    def snapshot(self, model: str) -> dict[str, dict[str, float]]:
        return {
            "/".join(k[1:]): {"ewma_ms": round(ms, 3), "n": n}
            for k, (ms, n) in self._ewma.items()
            if k[0] == model
        }


@dataclass
class CircuitBreaker:
    """Route a model away from a backend that keeps failing, for ``cooldown`` seconds."""

    threshold: int = 3
    cooldown: float = 30.0
    _fails: dict[tuple[str, str], int] = field(default_factory=dict)
    _open_until: dict[tuple[str, str], float] = field(default_factory=dict)

    def failure(self, model: str, backend: str, now: float) -> bool:
        """Count a failure; True when this one opened the circuit."""
        k = (model, backend)
        self._fails[k] = self._fails.get(k, 0) + 1
        if self._fails[k] >= self.threshold:
            self._fails[k] = 0
            self._open_until[k] = now + self.cooldown
            return True
        return False

    def success(self, model: str, backend: str) -> None:
        self._fails.pop((model, backend), None)

    def is_open(self, model: str, backend: str, now: float) -> bool:
        until = self._open_until.get((model, backend))
        if until is None:
            return False
        if now >= until:  # half-open: let traffic try again
            del self._open_until[(model, backend)]
            return False
        return True

    def reopens_at(self) -> float | None:
        return min(self._open_until.values(), default=None)


@dataclass
class RoutingPolicy:
    browser_preferences: dict[str, str] = field(
        default_factory=lambda: dict(DEFAULT_BROWSER_PREFERENCES)
    )
    default_browser: str = "chromium"
    # Static priors (multiplicative; 1.0 = best).  Only used until measured.
    other_family_factor: float = 1.3
    backend_factor: dict[str, float] = field(
        default_factory=lambda: {"webgpu": 1.0, "webnn": 1.1, "wasm": 2.0}
    )
    webnn_first_factor: float = 0.9  # for model types that prefer the WebNN browser
    software_webgpu_factor: float = 50.0
    precision_factor: dict[str, float] = field(
        default_factory=lambda: {"fp16": 0.8, "fp32": 1.0, "int8": 0.9, "int4": 1.2, "mixed": 0.9}
    )
    tie_tolerance: float = 0.10
    # Precisions chosen without being asked: lossless or nearly (int8/int4 change
    # results, so only on request).  A model may override via ResolvedModel.
    auto_precisions: tuple[str, ...] = ("fp16", "fp32")

    def preference(self, model_type: str | None) -> str:
        pref = self.browser_preferences.get(model_type or "")
        return normalize_browser(pref) or self.default_browser

    def prior_factor(
        self, model_type: str | None, browser: str, caps: WorkerCaps, backend: str, precision: str
    ) -> tuple[float, list[str]]:
        why: list[str] = []
        pref = self.preference(model_type)
        f = 1.0
        if not prefers(pref, browser, caps):
            f *= self.other_family_factor
            why.append(f"not the preferred {pref} x{self.other_family_factor}")
        if backend == "webgpu" and caps.software_webgpu:
            bf = self.software_webgpu_factor
        elif backend == "webnn" and pref == "edge":
            bf = self.webnn_first_factor
        else:
            bf = self.backend_factor.get(backend, 3.0)
        if bf != 1.0:
            f *= bf
            why.append(f"{backend} x{bf}")
        pf = self.precision_factor.get(precision, 1.0)
        if pf != 1.0:
            f *= pf
            why.append(f"{precision} x{pf}")
        return f, why


@dataclass(frozen=True)
class Candidate:
    worker_id: str
    browser: str
    variant: ModelRef | None
    loaded: bool
    est_ms: float
    load: int  # running assignments on the worker
    why: str
    resident: int = 0  # models already loaded on the worker


def choose(candidates: Sequence[Candidate], rng: random.Random, tie_tolerance: float) -> Candidate:
    """Affinity first, then estimate; power of two choices among near-ties."""
    if not candidates:
        raise ValueError("no candidates")
    best_loaded = any(c.loaded for c in candidates)
    pool = [c for c in candidates if c.loaded == best_loaded]
    best = min(c.est_ms for c in pool)
    tier = sorted(
        (c for c in pool if c.est_ms <= best * (1.0 + tie_tolerance) + 1e-9),
        key=lambda c: (c.est_ms, c.worker_id),
    )
    if not best_loaded:
        # Placing a model (a load): spread models over workers, so models
        # served at the same time do not queue behind each other on one page.
        return min(tier, key=lambda c: (c.load, c.resident, c.est_ms, c.worker_id))
    pick = tier if len(tier) <= 2 else rng.sample(tier, 2)
    return min(pick, key=lambda c: (c.load, c.est_ms, c.worker_id))
