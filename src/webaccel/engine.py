"""The async core behind :class:`webaccel.api.WebAccelerator`, the CLI and the server.

It turns "model name + user input" into a page run: look the model up in the
registry, preprocess in Python, pick a worker and backend, make sure the
variant is loaded there, run, postprocess, and say where and how fast it ran.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webaccel.browsers import BrowserWorker, launch_worker
from webaccel.errors import InvalidInputError, WorkerLostError
from webaccel.models import registry
from webaccel.models.registry import ModelSpec, Prepared
from webaccel.platforms import BackendChoice, choose_backend
from webaccel.pool.transport import ModelRef
from webaccel.server import WebAccelServer

# The option keys of the seed API; anything else is a typo we should not ignore.
OPTION_KEYS = frozenset(
    {"precision", "mixed_precision", "optimize_for_audio", "use_ipfs", "timeout", "priority",
     "browser"})
PRECISION_BITS = {4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}


def parse_precision(options: dict[str, Any]) -> str:
    if options.get("mixed_precision"):
        return "mixed"
    value = options.get("precision", "fp32")
    if value in (None, "auto"):
        return "fp32"
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in PRECISION_BITS:
            raise InvalidInputError(f"precision {value} bits is not offered; use 4, 8, 16 or 32")
        return PRECISION_BITS[value]
    if isinstance(value, str) and value.lower() in registry.PRECISIONS:
        return value.lower()
    raise InvalidInputError(f"unknown precision {value!r}; use bits (4, 8, 16, 32) or one of "
                            f"{registry.PRECISIONS}")


def validate_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise InvalidInputError(
            f"unknown option(s) {sorted(unknown)}; accepted options are {sorted(OPTION_KEYS)}")
    return options


def raw_tensors(data: dict[str, Any]) -> dict[str, np.ndarray]:
    """A dict of input name -> list/array, as the seed API accepts; ints become int64."""
    out: dict[str, np.ndarray] = {}
    for name, value in data.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise InvalidInputError(f"input {name!r} is ragged or not numeric; give equal-length rows")
        if arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind == "f" and arr.dtype != np.float16:
            arr = arr.astype(np.float32)
        if arr.size == 0:
            raise InvalidInputError(f"input {name!r} is empty")
        out[name] = arr
    if not out:
        raise InvalidInputError("no input tensors given")
    return out


@dataclass
class _WorkerSlot:
    worker: BrowserWorker
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    loaded: dict[str, float] = field(default_factory=dict)  # model key -> load ms
    inflight: int = 0


class Engine:
    """Owns the server and the browser workers; one per accelerator."""

    def __init__(self, *, max_connections: int = 4, default_browser: str = "chromium",
                 default_platform: str = "webgpu", threads: int = 1, host: str = "127.0.0.1",
                 port: int = 0, launch_timeout: float = 30.0) -> None:
        self.max_connections = max(1, max_connections)
        self.default_browser = default_browser
        self.default_platform = default_platform
        self.threads = threads
        self.launch_timeout = launch_timeout
        self.server = WebAccelServer(host, port)
        self._slots: list[_WorkerSlot] = []
        self._launching = asyncio.Lock()

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        slots, self._slots = self._slots, []
        await asyncio.gather(*(s.worker.close() for s in slots), return_exceptions=True)
        await self.server.stop()

    # -------------------------------------------------------------- workers
    async def _slot(self) -> _WorkerSlot:
        self._slots = [s for s in self._slots if s.worker.alive]
        idle = [s for s in self._slots if s.inflight == 0]
        if idle:
            return idle[0]
        async with self._launching:
            self._slots = [s for s in self._slots if s.worker.alive]
            if len(self._slots) < self.max_connections and (not self._slots or
                                                            all(s.inflight for s in self._slots)):
                worker = await launch_worker(self.server, self.default_browser,
                                             timeout=self.launch_timeout, threads=self.threads)
                self._slots.append(_WorkerSlot(worker))
        return min(self._slots, key=lambda s: s.inflight)

    async def any_worker(self) -> BrowserWorker:
        return (await self._slot()).worker

    # -------------------------------------------------------------- requests
    def _model_ref(self, spec: ModelSpec, precision: str, backend: str) -> ModelRef:
        path = spec.ensure_onnx(precision)
        key = f"{spec.name}/{precision}/{backend}"
        url = self.server.model_files.add(f"{spec.name}/{precision}/model.onnx", path)
        return ModelRef(key=key, name=spec.name, url=url, backend=backend, precision=precision,
                        size_bytes=path.stat().st_size)

    async def accelerate(self, model_name: str, input_data: Any, options: dict[str, Any] | None = None,
                         *, platform: str | None = None, model_type: str | None = None) -> dict[str, Any]:
        t_start = time.perf_counter()
        options = validate_options(options)
        precision = parse_precision(options)
        spec = registry.get(model_name)
        if model_type is not None and model_type != spec.model_type:
            raise InvalidInputError(f"{model_name} is a {spec.model_type} model, not {model_type}")
        if input_data is None:
            raise InvalidInputError("no input: pass input_data (or input_text)")
        raw = isinstance(input_data, dict)
        if raw:
            prepared = Prepared(raw_tensors(input_data))
        else:
            prepared = await asyncio.to_thread(spec.processor().preprocess, input_data, options)
        t_pre = time.perf_counter()
        timeout = float(options.get("timeout", 120.0))
        explicit = platform is not None
        requested = platform or self.default_platform
        for attempt in range(3):
            slot = await self._slot()
            choice = choose_backend(requested, slot.worker.capabilities, precision=precision,
                                    explicit=explicit)
            ref = self._model_ref(spec, precision, choice.backend)
            slot.inflight += 1
            try:
                async with slot.lock:
                    load_ms = None
                    if ref.key not in slot.loaded:
                        info = await slot.worker.load_model(ref, timeout=timeout)
                        slot.loaded[ref.key] = load_ms = info.load_ms
                    result = await slot.worker.run(
                        ref.key, prepared.tensors,
                        output_names=None if raw else list(spec.output_names or []) or None,
                        timeout=timeout)
                break
            except WorkerLostError:
                if attempt == 2:
                    raise
            finally:
                slot.inflight -= 1
        t_run = time.perf_counter()
        if raw:
            outputs: dict[str, Any] = dict(result.outputs)
        else:
            outputs = await asyncio.to_thread(spec.processor().postprocess, result.outputs, prepared)
        t_end = time.perf_counter()
        return self._describe(spec, slot.worker, choice, precision, outputs, result.page_ms,
                              result.round_trip_ms, load_ms,
                              {"preprocess_ms": (t_pre - t_start) * 1000,
                               "postprocess_ms": (t_end - t_run) * 1000,
                               "latency_ms": (t_end - t_start) * 1000})

    @staticmethod
    def _describe(spec: ModelSpec, worker: BrowserWorker, choice: BackendChoice, precision: str,
                  outputs: dict[str, Any], page_ms: float, round_trip_ms: float,
                  load_ms: float | None, times: dict[str, float]) -> dict[str, Any]:
        gpu = worker.capabilities.get("webgpu") or {}
        return {
            "model": spec.name,
            "task": spec.task,
            **outputs,
            "browser": worker.browser,
            "worker_id": worker.id,
            "user_agent": worker.capabilities.get("userAgent", ""),
            "backend": choice.backend,
            "requested_backend": choice.requested,
            "fallback_reason": choice.reason,
            "adapter": {k: gpu.get(k) for k in ("vendor", "architecture", "software")} if gpu.get(
                "available") else None,
            "precision": precision,
            "page_ms": page_ms,
            "round_trip_ms": round_trip_ms,
            "load_ms": load_ms,
            **times,
        }
