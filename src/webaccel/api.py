"""The Python API: :class:`WebAccelerator`, a synchronous facade over the async engine.

The engine (server, browsers, bridge) lives on a background event loop in
its own thread, so scripts and notebooks call plain methods::

    with WebAccelerator() as acc:
        out = acc.accelerate("minilm", ["hello", "world"])
        out["embeddings"], out["backend"], out["latency_ms"]
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from webaccel.browsers.process import install_cleanup
from webaccel.engine import Engine
from webaccel.errors import InvalidInputError
from webaccel.models import registry
from webaccel.pool.routing import WorkerCaps, best_backend, constraints_for

T = TypeVar("T")

__all__ = [
    "IPFSWebAccelerator",
    "ModelHandle",
    "ResourcePoolBridgeIntegration",
    "WebAccelerator",
    "create_ipfs_web_accelerator",
]


def _open_metrics(setting: bool | str | os.PathLike[str]) -> Any:
    if setting is False or setting is None:
        return None
    from webaccel.metrics.store import MetricsStore

    return MetricsStore(None if setting is True else Path(setting))


class _LoopThread:
    """An event loop running forever in a daemon thread (it also forks the browsers' parent)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="webaccel-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class _RunningEngine:
    """An :class:`Engine` on its own loop thread, with its metrics store; stopped once."""

    def __init__(self, metrics: bool | str | os.PathLike[str], **engine_options: Any) -> None:
        install_cleanup()  # from the caller's (usually main) thread: SIGTERM handler + atexit
        self.metrics = _open_metrics(metrics)
        self.loop = _LoopThread()
        self.engine = Engine(metrics=self.metrics, **engine_options)
        try:
            self.loop.run(self.engine.start())
        except BaseException:
            self._release()
            raise

    def stop(self) -> None:
        try:
            self.loop.run(self.engine.close(), timeout=30)
        finally:
            self._release()

    def _release(self) -> None:
        self.loop.stop()
        if self.metrics is not None:
            self.metrics.close()


class WebAccelerator:
    """Run registered models in browser workers; results say where and how fast they ran."""

    def __init__(
        self,
        enable_resource_pool: bool = True,
        max_connections: int | None = None,
        browser_preferences: dict[str, str] | None = None,
        default_browser: str = "chrome",
        default_platform: str = "webgpu",
        *,
        threads: int = 1,
        launch_timeout: float = 30.0,
        metrics: bool | str | os.PathLike[str] = True,
        port: int | None = None,
        allow_software: bool = False,
    ) -> None:
        """``metrics``: record every load and inference in DuckDB (True: the default
        file under $WEBACCEL_HOME; a path: that file; False: off).  ``port``: the
        loopback port to serve pages on (default: any free one).
        ``allow_software``: let a software WebGPU adapter (SwiftShader) count as
        webgpu; by default it never does, as it is far slower than wasm.
        ``max_connections``: browser workers at most (default: one per core, at
        most 4; ``get_metrics()["pool"]["settings"]`` says what was chosen)."""
        self.enable_resource_pool = enable_resource_pool
        self.browser_preferences = dict(browser_preferences or {})
        self._running = _RunningEngine(
            metrics,
            max_connections=max_connections if enable_resource_pool else 1,
            browser_preferences=browser_preferences,
            default_browser=default_browser,
            default_platform=default_platform,
            threads=threads,
            launch_timeout=launch_timeout,
            port=port or 0,
            allow_software=allow_software,
        )
        self.metrics = self._running.metrics
        self._loop = self._running.loop
        self._engine = self._running.engine
        self._closed = False
        _open_accelerators.add(self)

    @property
    def server_url(self) -> str:
        return self._engine.server.url

    def start_worker(self) -> str:
        """Start a browser worker now (else the first request does); returns its browser."""
        return str(self._loop.run(self._engine.any_worker()).browser)

    def accelerate(
        self,
        model_name: str,
        input_data: Any = None,
        options: dict[str, Any] | None = None,
        *,
        input_text: str | list[str] | None = None,
        model_type: str | None = None,
        platform: str | None = None,
        browser: str | None = None,
        priority_list: list[str] | None = None,
        allow_software: bool | None = None,
    ) -> dict[str, Any]:
        """Run ``model_name`` on ``input_data`` (or ``input_text``) in a browser worker.

        ``platform`` is tried first, the other backends are fallbacks (the
        result's ``fallback_reason`` says why); ``priority_list`` gives the
        exact order instead.

        Returns the model's outputs (e.g. ``embeddings``) plus ``browser``, ``backend``,
        ``precision``, ``fallback_reason`` and timings (``latency_ms``, ``page_ms``...).
        ``browser`` pins a browser family (else routing picks, falling back to
        another installed browser when the preferred one cannot start).
        """
        if input_data is not None and input_text is not None:
            raise InvalidInputError("give input_data or input_text, not both")
        data = input_text if input_text is not None else input_data
        if options and isinstance(options.get("precision"), str):
            # transformers.js dtype names (q8, uint8, q4, q4f16...) -> our variants
            from webaccel.dtypes import to_precision

            options = {**options, "precision": to_precision(options["precision"]) or "auto"}
        return self._loop.run(
            self._engine.accelerate(
                model_name,
                data,
                options,
                platform=platform,
                model_type=model_type,
                browser=browser,
                priority_list=priority_list,
                allow_software=allow_software,
            )
        )

    def get_optimal_hardware(
        self, model_name: str, model_type: str | None = None
    ) -> dict[str, Any]:
        """Which browser, backend and precision would serve ``model_name`` here, and why."""
        spec = registry.get(model_name)
        worker = self._loop.run(self._engine.any_worker())
        caps = WorkerCaps.parse(worker.capabilities)
        backend, skipped = best_backend(caps, constraints_for(**self._engine.route(None)))
        return {
            "model": spec.name,
            "model_type": model_type or spec.model_type,
            "browser": worker.browser,
            "platform": backend,
            "precision": "fp32",
            "available_backends": list(caps.backends),
            "reason": "; ".join(r.message for r in skipped)
            or f"{backend} is the best backend this browser offers",
        }

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._running.stop()

    close = shutdown

    def get_metrics(self) -> dict[str, Any]:
        """Live figures (per model, per worker, aggregate) and the pool's state."""
        live = self.metrics.get_metrics() if self.metrics is not None else {}
        return {**live, "pool": {**self._engine.pool.stats(), "settings": self._engine.settings}}

    def __enter__(self) -> WebAccelerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def __del__(self) -> None:
        # Best effort only: during interpreter shutdown the loop thread may be
        # unable to finish, and the atexit hook plus PDEATHSIG end the browsers anyway.
        if not getattr(self, "_closed", True) and not sys.is_finalizing():
            with contextlib.suppress(Exception):
                self.shutdown()

    # ------------------------------------------------------------ text generation
    def generate(
        self,
        model_name: str,
        prompt: str | list[dict[str, Any]],
        *,
        platform: str | None = None,
        precision: str = "fp32",
        timeout: float = 900.0,
        return_result: bool = False,
        allow_software: bool | None = None,
        **params: Any,
    ) -> Any:
        """Generate text in a browser page; ``prompt`` is a string or chat messages.

        ``params``: max_tokens, temperature (0 = greedy), top_k, top_p, seed,
        repetition_penalty, stop_token_ids, stop (strings).  Returns the text, or
        with ``return_result=True`` a :class:`webaccel.generation.GenerationResult`
        (token ids, finish reason, usage, ``stats`` with ttft_ms and tokens/s).
        """
        from webaccel.generation import generate

        prompt_kw = {"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt}
        result = self._loop.run(
            generate(
                self._engine,
                model_name,
                platform=platform,
                precision=precision,
                timeout=timeout,
                allow_software=allow_software,
                **prompt_kw,
                **params,
            )
        )
        return result if return_result else result.text

    def stream(
        self,
        model_name: str,
        prompt: str | list[dict[str, Any]],
        *,
        platform: str | None = None,
        precision: str = "fp32",
        timeout: float = 900.0,
        allow_software: bool | None = None,
        **params: Any,
    ) -> Any:
        """Like :meth:`generate`, but a sync iterator of text pieces as the page makes them.

        The iterator's ``result`` holds the GenerationResult once it is exhausted;
        ``close()`` (or leaving a ``for`` loop early and dropping it) cancels the
        generation in the page.
        """
        from webaccel.generation import stream_generate
        from webaccel.generation.sync import SyncTextStream

        prompt_kw = {"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt}
        astream = stream_generate(
            self._engine,
            model_name,
            platform=platform,
            precision=precision,
            timeout=timeout,
            allow_software=allow_software,
            **prompt_kw,
            **params,
        )
        return SyncTextStream(astream, self._loop.loop)


_open_accelerators: weakref.WeakSet[WebAccelerator] = weakref.WeakSet()


@atexit.register
def _shutdown_open_accelerators() -> None:
    for acc in list(_open_accelerators):
        with contextlib.suppress(Exception):
            acc.shutdown()


# --------------------------------------------------------------------------
# The names the seed documents use, on top of the same engine.

HARDWARE_KEYS = frozenset(
    {
        "priority_list",
        "enable_ipfs",
        "precompile_shaders",
        "use_firefox_optimizations",
        "precision",
        "mixed_precision",
        "browser",
    }
)
_BROWSER_BACKENDS = ("webgpu", "webnn", "wasm")


def _parse_hardware(prefs: dict[str, Any] | None) -> dict[str, Any]:
    prefs = dict(prefs or {})
    unknown = set(prefs) - HARDWARE_KEYS
    if unknown:
        raise InvalidInputError(
            f"unknown hardware preference(s) {sorted(unknown)}; accepted: {sorted(HARDWARE_KEYS)}"
        )
    order = [str(p).lower() for p in prefs.get("priority_list") or ["webgpu", "webnn", "wasm"]]
    constraints_for(priority_list=order)  # validates the entries
    browser_order = [p for p in order if p in _BROWSER_BACKENDS]
    return {
        # An ordered preference: the pool takes the first backend a worker
        # serves well (never a software WebGPU adapter) and reports why.
        "priority_list": browser_order,
        "native_fallback": "cpu" in order,
        "native_only": not browser_order,
        "options": {k: prefs[k] for k in ("precision", "mixed_precision") if k in prefs}
        | ({"use_ipfs": True} if prefs.get("enable_ipfs") else {}),
        "browser": prefs.get("browser")
        or ("firefox" if prefs.get("use_firefox_optimizations") else None),
        "precompile": bool(prefs.get("precompile_shaders")),
    }


class ModelHandle:
    """A model bound to hardware preferences; call it with inputs."""

    def __init__(
        self,
        integration: ResourcePoolBridgeIntegration,
        model_name: str,
        model_type: str | None,
        hardware: dict[str, Any],
    ) -> None:
        self.integration = integration
        self.model_name = model_name
        self.model_type = model_type
        self.hardware = hardware

    async def run_async(self, inputs: Any) -> dict[str, Any]:
        engine = self.integration.engine
        hw = self.hardware
        if hw["native_only"]:
            spec = registry.get(self.model_name)
            proc = spec.processor()
            prepared = proc.preprocess(inputs, {})
            outputs, run_ms, _ = await asyncio.to_thread(
                engine.native.run,
                spec,
                prepared.tensors,
                "fp32",
                list(spec.output_names or []) or None,
            )
            return {
                **proc.postprocess(outputs, prepared),
                "browser": "native",
                "backend": "cpu",
                "latency_ms": run_ms,
            }
        return await engine.accelerate(
            self.model_name,
            inputs,
            hw["options"],
            priority_list=hw["priority_list"],
            model_type=self.model_type,
            browser=hw["browser"],
            native_fallback=hw["native_fallback"],
        )

    def __call__(self, inputs: Any) -> dict[str, Any]:
        return self.integration.loop.run(self.run_async(inputs))

    def __repr__(self) -> str:
        return f"ModelHandle({self.model_name!r}, type={self.model_type!r})"


class ResourcePoolBridgeIntegration:
    """Seed-compatible pool facade: ``initialize()``, ``get_model()``, ``execute_concurrent()``."""

    def __init__(
        self,
        max_connections: int = 4,
        browser_preferences: dict[str, str] | None = None,
        adaptive_scaling: bool = True,
        *,
        threads: int = 1,
        metrics: bool | str | os.PathLike[str] = True,
    ) -> None:
        self.max_connections = max_connections
        self.browser_preferences = dict(browser_preferences or {})
        self.adaptive_scaling = adaptive_scaling
        self.threads = threads
        self._metrics_setting = metrics
        self.metrics: Any = None
        self._loop: _LoopThread | None = None
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        self.initialize()
        assert self._engine is not None
        return self._engine

    @property
    def loop(self) -> _LoopThread:
        self.initialize()
        assert self._loop is not None
        return self._loop

    def initialize(self) -> bool:
        if self._engine is not None:
            return True
        self._running = _RunningEngine(
            self._metrics_setting,
            max_connections=self.max_connections,
            browser_preferences=self.browser_preferences or None,
            adaptive_scaling=self.adaptive_scaling,
            threads=self.threads,
        )
        self.metrics = self._running.metrics
        self._loop = self._running.loop
        self._engine = self._running.engine
        return True

    def get_model(
        self,
        model_type: str | None,
        model_name: str,
        hardware_preferences: dict[str, Any] | None = None,
    ) -> ModelHandle:
        self.initialize()
        spec = registry.get(model_name)
        if model_type is not None and model_type not in (spec.model_type, spec.task):
            raise InvalidInputError(f"{model_name} is a {spec.model_type} model, not {model_type}")
        handle = ModelHandle(
            self, model_name, model_type or spec.model_type, _parse_hardware(hardware_preferences)
        )
        if handle.hardware["precompile"] and not handle.hardware["native_only"]:
            # Load (and compile shaders) now rather than on the first request.
            self.loop.run(self.engine.pool.resolve(model_name, handle.model_type))
        return handle

    def execute_concurrent(self, models_and_inputs: list[tuple[Any, Any]]) -> list[Any]:
        """Run ``[(model_or_name, inputs), ...]`` at once; failures are returned, not raised."""
        self.initialize()

        async def all_of() -> list[Any]:
            jobs = []
            for model, inputs in models_and_inputs:
                handle = model if isinstance(model, ModelHandle) else self.get_model(None, model)
                jobs.append(handle.run_async(inputs))
            return list(await asyncio.gather(*jobs, return_exceptions=True))

        return self.loop.run(all_of())

    def get_stats(self) -> dict[str, Any]:
        return self._engine.pool.stats() if self._engine else {}

    def close(self) -> None:
        if self._engine is None:
            return
        try:
            self._running.stop()
        finally:
            self._engine = None

    def __enter__(self) -> ResourcePoolBridgeIntegration:
        self.initialize()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class IPFSWebAccelerator:
    """What ``create_ipfs_web_accelerator`` returns (the seed's accelerator object)."""

    def __init__(self, integration: ResourcePoolBridgeIntegration, enable_ipfs: bool) -> None:
        self.integration = integration
        self.enable_ipfs = enable_ipfs
        self._handles: dict[str, ModelHandle] = {}
        self._stats: dict[str, Any] = {"inferences": 0, "errors": 0, "latency_ms_total": 0.0}

    def accelerate_model(
        self, model_name: str, model_type: str | None = None, platform: str | None = None
    ) -> ModelHandle:
        prefs = {
            "priority_list": [platform, "cpu"] if platform else ["webgpu", "webnn", "wasm", "cpu"],
            "enable_ipfs": self.enable_ipfs,
        }
        handle = self.integration.get_model(model_type, model_name, prefs)
        self._handles[model_name] = handle
        return handle

    def run_inference(self, model_name: str, inputs: Any) -> dict[str, Any]:
        handle = self._handles.get(model_name) or self.accelerate_model(model_name)
        try:
            result = handle(inputs)
        except Exception:
            self._stats["errors"] += 1
            raise
        self._stats["inferences"] += 1
        self._stats["latency_ms_total"] += float(result.get("latency_ms", 0.0))
        return result

    def get_metrics(self) -> dict[str, Any]:
        n = self._stats["inferences"]
        live = self.integration.metrics.get_metrics() if self.integration.metrics else {}
        return {
            **live,
            **self._stats,
            "mean_latency_ms": self._stats["latency_ms_total"] / n if n else None,
            "pool": self.integration.get_stats(),
            "models": sorted(self._handles),
        }

    def close(self) -> None:
        self.integration.close()

    def __enter__(self) -> IPFSWebAccelerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def create_ipfs_web_accelerator(
    max_connections: int = 4,
    browser_preferences: dict[str, str] | None = None,
    enable_ipfs: bool = True,
    **_ignored_seed_kwargs: Any,
) -> IPFSWebAccelerator:
    """The seed's entry point: a pool-backed accelerator with IPFS model delivery."""
    integration = ResourcePoolBridgeIntegration(max_connections, browser_preferences)
    integration.initialize()
    return IPFSWebAccelerator(integration, enable_ipfs)
