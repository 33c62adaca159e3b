"""The one seam between the pool and a worker.

A worker is one page (a browser tab, or the Node WebGPU runtime) that runs
ONNX sessions.  The pool only sees this protocol; ``webaccel.browsers`` gives
the real implementation over the WebSocket bridge, and
:mod:`webaccel.pool.fake` (scheduler unit tests only) a fake.

Inputs and outputs are dicts of tensor name -> numpy array.  Every method
raises :mod:`webaccel.errors` types (``WorkerLostError`` when the page is gone,
``TimeoutError_`` when it did not answer in time, ``LoadFailedError`` ...).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

BACKENDS = ("webgpu", "webnn", "wasm")


@dataclass(frozen=True)
class ModelRef:
    """What a worker needs to load one model variant.

    ``key`` names the loaded session in the page (model name + precision +
    backend); ``url`` is where the page fetches the ONNX bytes (our server),
    ``cid`` the content address when known (the page may then use its cache).
    """

    key: str
    name: str
    url: str
    backend: str = "wasm"
    precision: str = "fp32"
    cid: str | None = None
    size_bytes: int | None = None
    session_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LoadInfo:
    key: str
    backend: str
    load_ms: float
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    source: str = "network"  # "network" | "cache" (browser Cache API by CID)
    # A generator on webgpu: "captured" (its decode step is a captured session), or
    # "not captured: <why>"; None where no captured step was asked for.
    decode_step: str | None = None
    # Filled in by the pool, not the worker: the RSS of the worker's local browser
    # process tree before the load and after it (and its warm-up); None: not measured.
    rss_before_bytes: int | None = None
    rss_after_bytes: int | None = None


@dataclass(frozen=True)
class RunResult:
    outputs: dict[str, np.ndarray]
    page_ms: float  # inference time measured inside the page
    round_trip_ms: float  # measured by the caller, includes the bridge
    shape_bucket: str | None = None  # ran padded to this fixed shape, graph captured
    # frame in -> result out, in the page (page_ms plus decoding, queueing, encoding)
    handle_ms: float | None = None


@dataclass(frozen=True)
class StreamEvent:
    """One step of a streamed run (a generated token), or its end.

    ``data`` is what the page sent for the step (``{"token": id, ...}``); the
    last event has ``final=True`` and the page's closing reply (finish
    reason, page-side figures).
    """

    data: dict[str, Any]
    final: bool = False


@runtime_checkable
class WorkerTransport(Protocol):
    id: str
    browser: str  # "chromium" | "firefox" | "node-webgpu" | "native"
    capabilities: dict[str, Any]  # as reported by the page's hello/capabilities

    @property
    def alive(self) -> bool: ...

    def available_backends(self) -> list[str]:
        """Backends this worker can really run, best first (a software WebGPU adapter last)."""
        ...

    async def load_model(self, model: ModelRef, *, timeout: float = 120.0) -> LoadInfo: ...

    async def run(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        output_names: list[str] | None = None,
        timeout: float = 60.0,
        options: dict[str, Any] | None = None,
    ) -> RunResult:
        """``options``: ``{"keep": [names]}`` keeps those inputs in the page for later
        runs of ``key``; ``{"reuse": [names]}`` uses the kept ones instead of sending."""
        ...

    def stream(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        kind: str = "generate",
        options: dict[str, Any] | None = None,
        timeout: float = 900.0,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Start a loop in the page (``kind``: "generate") and yield its steps as they
        come; closing the iterator early cancels the loop in the page."""
        ...

    async def unload(self, key: str) -> None: ...

    async def close(self) -> None: ...


# Launches one worker of a browser family ("chromium", "firefox", ...).
WorkerLauncher = Callable[[str], Awaitable[WorkerTransport]]
