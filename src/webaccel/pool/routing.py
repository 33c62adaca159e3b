"""Routing policy: which worker, backend and precision serve a request (pure, no I/O).

The order of concerns, each one explainable in a sentence:

1. **Capability** is a hard filter, read from one parse of the page's report
   (:meth:`WorkerCaps.parse`).  A backend the worker does not report is never
   chosen; fp16 needs WebGPU with ``shader-f16`` (or WebNN); a software WebGPU
   adapter (SwiftShader, ``isFallbackAdapter``) is not a GPU, so it is only
   used when the caller passes ``allow_software`` (docs/FACTS.md: it is
   85-1700x slower than WASM).  A (model, backend) whose circuit breaker is
   open is skipped for a while.  Every "no" is a :class:`Rejection` with a
   :class:`Reason` code.
2. **The caller's order**: ``Constraints.backends`` (a ``priority_list``) is a
   preference; a worker's best candidate is its first backend it serves well,
   and a better-ranked candidate beats any estimate.
3. **Affinity**: among free workers, one that already holds the variant wins,
   so models are not reloaded.
4. **Estimated latency** per (model, browser, backend, precision): the EWMA of
   measured round trips once there are ``min_samples``; before that a static
   prior (preferred browser family for the model type, GPU before WebNN before
   WASM) scaled by the best measured latency of the model.  Measurements
   therefore override the static defaults as soon as they disagree.
5. **Power of two choices** (ray ``pow_2_router``) among the workers whose
   estimate is within ``tie_tolerance`` of the best: sample two, take the less
   loaded, which spreads load without herding onto one "best" worker.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from webaccel.errors import InvalidInputError
from webaccel.pool.transport import ModelRef

# Model type -> preferred browser family (seed-document defaults).  "edge"
# means "a WebNN-capable worker": Edge is where WebNN ships; any worker that
# really reports the webnn backend matches it.
DEFAULT_BROWSER_PREFERENCES: dict[str, str] = {
    "audio": "firefox",
    "vision": "chromium",
    "text_embedding": "edge",
}

# The one table of browser spellings (seed documents, CLI, HTTP) -> the family
# name workers report.  Routing reads it; launchers read LAUNCH_FAMILY below.
BROWSER_ALIASES: dict[str, str] = {
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
# What to start for a family that is a routing preference, not a binary we have:
# Edge is a Chromium, and on Linux Chromium is what can be launched.
LAUNCH_FAMILY: dict[str, str] = {"edge": "chromium"}

# The default order of backends when the caller states none: a real GPU, then
# WebNN, then WebAssembly (DESIGN.md "Routing and precision").
DEFAULT_BACKEND_ORDER: tuple[str, ...] = ("webgpu", "webnn", "wasm")


def normalize_browser(name: str | None) -> str | None:
    """Seed spellings ("chrome", "msedge") -> family names used by workers."""
    if name is None or name in ("", "auto"):
        return None
    return BROWSER_ALIASES.get(name.lower(), name.lower())


def launch_family(name: str | None) -> str | None:
    """The family a launcher starts for ``name`` ("edge" -> "chromium"); None if unknown."""
    fam = normalize_browser(name)
    if fam is None:
        return None
    return LAUNCH_FAMILY.get(fam, fam)


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


class Reason(StrEnum):
    """Why a worker/variant was not used: a stable code, so nothing matches on message text."""

    CALLER_BROWSER = "caller_browser"  # the caller pinned another browser family
    CALLER_BACKEND = "caller_backend"  # the backend is not in the caller's list
    CALLER_PRECISION = "caller_precision"
    NO_BACKEND = "no_backend"  # the worker does not offer the backend
    SOFTWARE_ADAPTER = "software_adapter"  # WebGPU is a CPU rasterizer, not a GPU
    NO_SHADER_F16 = "no_shader_f16"
    FP16_ON_WASM = "fp16_on_wasm"
    CIRCUIT_OPEN = "circuit_open"  # the (model, backend) failed repeatedly
    NO_ROOM = "no_room"  # the memory budget is held by running models
    BUSY = "busy"
    AVOIDED = "avoided"  # the caller asked for another worker (a pipeline's other stage)
    SLOWER = "slower"  # servable, but another choice was estimated faster
    NOT_READY = "not_ready"
    NO_VARIANT = "no_variant"


# Rejections worth telling the caller even when another variant served.
NOTABLE_REASONS = frozenset(
    {Reason.SOFTWARE_ADAPTER, Reason.NO_SHADER_F16, Reason.CIRCUIT_OPEN, Reason.NO_ROOM}
)


@dataclass(frozen=True)
class Rejection:
    code: Reason
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class WorkerCaps:
    """Everything routing knows about a worker: the ONE parse of a page's capability report."""

    backends: tuple[str, ...]  # offered, best first (a software WebGPU adapter last)
    shader_f16: bool = False
    software_webgpu: bool = False  # the WebGPU adapter is a CPU fallback
    memory_budget_bytes: int | None = None
    webgpu_reason: str | None = None  # why WebGPU is missing, as the page said
    webnn_reason: str | None = None
    adapter: Mapping[str, Any] | None = None  # vendor, architecture, ... when WebGPU exists

    @classmethod
    def parse(cls, capabilities: Mapping[str, Any]) -> WorkerCaps:
        """Read a page's report (``web/capabilities.mjs``; tolerant of nesting).

        Keys read: ``webgpu.available``/``reason``; ``webgpu.shaderF16`` /
        ``webgpu.features`` (``shader-f16``) / ``shader_f16``;
        ``webgpu.software`` / ``webgpu.isFallbackAdapter`` /
        ``webgpu.info.isFallbackAdapter`` / architecture ``swiftshader`` /
        ``software_webgpu``; ``webnn.available``/``reason``;
        ``memory_budget_bytes``; ``backends`` (a worker that states its list,
        e.g. the native runner).
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
        nn = capabilities.get("webnn") or {}
        if not isinstance(nn, Mapping):
            nn = {}
        stated = capabilities.get("backends")
        if isinstance(stated, (list, tuple)):
            backends = tuple(str(b) for b in stated)
        else:
            has_gpu = bool(gpu.get("available"))
            out = ["webgpu"] if has_gpu and not software else []
            if nn.get("available"):
                out.append("webnn")
            out.append("wasm")
            if has_gpu and software:
                out.append("webgpu")
            backends = tuple(out)
        budget = capabilities.get("memory_budget_bytes")
        return cls(
            backends=backends,
            shader_f16=f16,
            software_webgpu=software,
            memory_budget_bytes=int(budget) if budget else None,
            webgpu_reason=None
            if "webgpu" in backends
            else str(gpu.get("reason") or "no WebGPU adapter"),
            webnn_reason=None
            if "webnn" in backends
            else str(nn.get("reason") or "navigator.ml missing"),
            adapter={k: gpu.get(k, info.get(k)) for k in ("vendor", "architecture")}
            | {"software": software}
            if "webgpu" in backends
            else None,
        )


@dataclass(frozen=True)
class Constraints:
    """What the caller asked for one request; None = let the pool choose.

    ``backends`` is an ordered preference (a seed ``priority_list``, or
    ``platform=X`` followed by the default fallbacks): the first entry a
    worker can serve *well* wins, later entries are fallbacks, backends not
    listed are never used.  ``None``: the pool picks by estimate among all.
    A software WebGPU adapter only counts as webgpu with ``allow_software``.
    """

    browser: str | None = None
    backends: tuple[str, ...] | None = None
    precision: str | None = None
    allow_software: bool = False

    @property
    def backend(self) -> str | None:
        """The most preferred backend, if the caller stated any."""
        return self.backends[0] if self.backends else None

    def rank(self, backend: str) -> int:
        """0 for the most preferred backend; all backends rank 0 when none was stated."""
        if not self.backends:
            return 0
        return self.backends.index(backend) if backend in self.backends else len(self.backends)

    def order(self) -> tuple[str, ...]:
        return self.backends or DEFAULT_BACKEND_ORDER


def constraints_for(
    *,
    browser: str | None = None,
    platform: str | None = None,
    priority_list: Sequence[str] | None = None,
    precision: str | int | None = None,
    allow_software: bool = False,
) -> Constraints:
    """The one translation of what callers say (``platform``, a seed
    ``priority_list``, ``browser``, ``precision``) into :class:`Constraints`.

    ``platform="webgpu"`` means "webgpu first, then the usual fallbacks";
    ``priority_list`` is the exact order (``"cpu"``, native onnxruntime, is
    the caller's own last resort and not a worker backend).
    """
    backends: tuple[str, ...] | None = None
    if priority_list is not None:
        order = [str(p).lower() for p in priority_list]
        bad = [p for p in order if p not in (*DEFAULT_BACKEND_ORDER, "cpu")]
        if bad:
            raise InvalidInputError(
                f"priority_list entries {bad} are not backends; use webgpu, webnn, wasm or cpu"
            )
        backends = tuple(dict.fromkeys(p for p in order if p != "cpu")) or None
    elif platform not in (None, "", "auto"):
        first = str(platform).lower()
        if first not in DEFAULT_BACKEND_ORDER:
            raise InvalidInputError(
                f"unknown platform {platform!r}; choose one of auto, "
                + ", ".join(DEFAULT_BACKEND_ORDER)
            )
        backends = (first, *(b for b in DEFAULT_BACKEND_ORDER if b != first))
    return Constraints(
        normalize_browser(browser), backends, normalize_precision(precision), allow_software
    )


def backend_rejection(
    caps: WorkerCaps, backend: str, precision: str, want: Constraints
) -> Rejection | None:
    """Why ``backend`` at ``precision`` cannot be served well by a worker with ``caps``."""
    if want.backends is not None and backend not in want.backends:
        return Rejection(Reason.CALLER_BACKEND, f"caller's backends are {list(want.backends)}")
    if backend not in caps.backends:
        why = {"webgpu": caps.webgpu_reason, "webnn": caps.webnn_reason}.get(backend)
        return Rejection(Reason.NO_BACKEND, f"{backend} unavailable" + (f": {why}" if why else ""))
    if backend == "webgpu" and caps.software_webgpu and not want.allow_software:
        arch = (caps.adapter or {}).get("architecture") or "software"
        return Rejection(
            Reason.SOFTWARE_ADAPTER,
            f"the WebGPU adapter is a software rasterizer ({arch}), not a GPU; wasm is faster "
            "(pass allow_software=True to use it anyway)",
        )
    if needs_f16(precision):
        if backend == "webgpu" and not caps.shader_f16:
            return Rejection(
                Reason.NO_SHADER_F16, "fp16 needs shader-f16, which this WebGPU adapter lacks"
            )
        if backend == "wasm" and want.precision is None:  # asked for by name: it runs
            return Rejection(Reason.FP16_ON_WASM, "fp16 on wasm is emulated; use fp32 there")
    return None


def reject_reason(
    caps: WorkerCaps, browser: str, variant_backend: str, variant_precision: str, want: Constraints
) -> Rejection | None:
    """Why this worker cannot run this variant at all (None = it can).  Static facts only."""
    if want.browser is not None and want.browser != browser:
        return Rejection(Reason.CALLER_BROWSER, f"caller asked for {want.browser}")
    if want.precision is not None and want.precision != variant_precision:
        return Rejection(Reason.CALLER_PRECISION, f"caller asked for {want.precision}")
    return backend_rejection(caps, variant_backend, variant_precision, want)


def best_backend(
    caps: WorkerCaps, want: Constraints, precision: str = "fp32"
) -> tuple[str | None, tuple[Rejection, ...]]:
    """The first backend in the caller's order this worker serves well, and why each
    better-ranked one was skipped (None when none is servable)."""
    skipped: list[Rejection] = []
    for backend in want.order():
        r = backend_rejection(caps, backend, precision, want)
        if r is None:
            return backend, tuple(skipped)
        skipped.append(Rejection(r.code, f"{backend}: {r.message}"))
    return None, tuple(skipped)


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
    rank: int = 0  # position of the variant's backend in the caller's order (0 = first)
    streams: int = 0  # generation streams of this variant the worker runs now (its page batch)


def choose(
    candidates: Sequence[Candidate],
    rng: random.Random,
    tie_tolerance: float,
    *,
    pack: bool = False,
) -> Candidate:
    """The caller's backend order first, then affinity, then estimate; power of two
    choices among near-ties.  ``pack`` (a generation stream): among workers holding
    the variant, the one already decoding the most streams of it, so the stream
    joins that page's batch (see :class:`webaccel.pool.ResourcePool`,
    ``pack_streams``)."""
    if not candidates:
        raise ValueError("no candidates")
    top = min(c.rank for c in candidates)
    candidates = [c for c in candidates if c.rank == top]
    best_loaded = any(c.loaded for c in candidates)
    pool = [c for c in candidates if c.loaded == best_loaded]
    best = min(c.est_ms for c in pool)
    tier = sorted(
        (c for c in pool if c.est_ms <= best * (1.0 + tie_tolerance) + 1e-9),
        key=lambda c: (c.est_ms, c.worker_id),
    )
    if pack and best_loaded:
        batching = [c for c in pool if c.streams > 0]
        if batching:
            return min(batching, key=lambda c: (-c.streams, c.est_ms, c.worker_id))
    if not best_loaded:
        # Placing a model (a load): spread models over workers, so models
        # served at the same time do not queue behind each other on one page.
        return min(tier, key=lambda c: (c.load, c.resident, c.est_ms, c.worker_id))
    pick = tier if len(tier) <= 2 else rng.sample(tier, 2)
    return min(pick, key=lambda c: (c.load, c.est_ms, c.worker_id))
