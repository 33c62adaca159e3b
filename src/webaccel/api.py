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
import sys
import threading
import weakref
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from webaccel.browsers.process import install_cleanup
from webaccel.browsers.worker import backends_from_capabilities
from webaccel.engine import Engine
from webaccel.errors import InvalidInputError
from webaccel.models import registry
from webaccel.platforms import choose_backend

T = TypeVar("T")

__all__ = ["WebAccelerator"]


class _LoopThread:
    """An event loop running forever in a daemon thread (it also forks the browsers' parent)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="webaccel-loop",
                                        daemon=True)
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


class WebAccelerator:
    """Run registered models in browser workers; results say where and how fast they ran."""

    def __init__(self, enable_resource_pool: bool = True, max_connections: int = 4,
                 browser_preferences: dict[str, str] | None = None, default_browser: str = "chrome",
                 default_platform: str = "webgpu", *, threads: int = 1,
                 launch_timeout: float = 30.0) -> None:
        self.enable_resource_pool = enable_resource_pool
        self.browser_preferences = dict(browser_preferences or {})
        install_cleanup()  # from the caller's (usually main) thread: SIGTERM handler + atexit
        self._loop = _LoopThread()
        self._engine = Engine(max_connections=max_connections if enable_resource_pool else 1,
                              browser_preferences=browser_preferences,
                              default_browser=default_browser, default_platform=default_platform,
                              threads=threads, launch_timeout=launch_timeout)
        try:
            self._loop.run(self._engine.start())
        except BaseException:
            self._loop.stop()
            raise
        self._closed = False
        _open_accelerators.add(self)

    @property
    def server_url(self) -> str:
        return self._engine.server.url

    def accelerate(self, model_name: str, input_data: Any = None, options: dict[str, Any] | None = None,
                   *, input_text: str | list[str] | None = None, model_type: str | None = None,
                   platform: str | None = None) -> dict[str, Any]:
        """Run ``model_name`` on ``input_data`` (or ``input_text``) in a browser worker.

        Returns the model's outputs (e.g. ``embeddings``) plus ``browser``, ``backend``,
        ``precision``, ``fallback_reason`` and timings (``latency_ms``, ``page_ms``...).
        """
        if input_data is not None and input_text is not None:
            raise InvalidInputError("give input_data or input_text, not both")
        data = input_text if input_text is not None else input_data
        return self._loop.run(self._engine.accelerate(model_name, data, options, platform=platform,
                                                      model_type=model_type))

    def get_optimal_hardware(self, model_name: str, model_type: str | None = None) -> dict[str, Any]:
        """Which browser, backend and precision would serve ``model_name`` here, and why."""
        spec = registry.get(model_name)
        worker = self._loop.run(self._engine.any_worker())
        choice = choose_backend(self._engine.default_platform or "auto", worker.capabilities,
                                explicit=False)
        return {
            "model": spec.name,
            "model_type": model_type or spec.model_type,
            "browser": worker.browser,
            "platform": choice.backend,
            "precision": "fp32",
            "available_backends": backends_from_capabilities(worker.capabilities),
            "reason": choice.reason or f"{choice.backend} is the best backend this browser offers",
        }

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._loop.run(self._engine.close(), timeout=30)
        finally:
            self._loop.stop()

    close = shutdown

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
    def generate(self, model_name: str, prompt: str | list[dict[str, Any]], *,
                 platform: str | None = None, precision: str = "fp32", timeout: float = 900.0,
                 return_result: bool = False, **params: Any) -> Any:
        """Generate text in a browser page; ``prompt`` is a string or chat messages.

        ``params``: max_tokens, temperature (0 = greedy), top_k, top_p, seed,
        repetition_penalty, stop_token_ids, stop (strings).  Returns the text, or
        with ``return_result=True`` a :class:`webaccel.generation.GenerationResult`
        (token ids, finish reason, usage, ``stats`` with ttft_ms and tokens/s).
        """
        from webaccel.generation import generate

        prompt_kw = {"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt}
        result = self._loop.run(generate(self._engine, model_name, platform=platform,
                                         precision=precision, timeout=timeout, **prompt_kw,
                                         **params))
        return result if return_result else result.text

    def stream(self, model_name: str, prompt: str | list[dict[str, Any]], *,
               platform: str | None = None, precision: str = "fp32", timeout: float = 900.0,
               **params: Any) -> Any:
        """Like :meth:`generate`, but a sync iterator of text pieces as the page makes them.

        The iterator's ``result`` holds the GenerationResult once it is exhausted;
        ``close()`` (or leaving a ``for`` loop early and dropping it) cancels the
        generation in the page.
        """
        from webaccel.generation import stream_generate
        from webaccel.generation.sync import SyncTextStream

        prompt_kw = {"messages": prompt} if isinstance(prompt, list) else {"prompt": prompt}
        astream = stream_generate(self._engine, model_name, platform=platform, precision=precision,
                                  timeout=timeout, **prompt_kw, **params)
        return SyncTextStream(astream, self._loop.loop)


_open_accelerators: weakref.WeakSet[WebAccelerator] = weakref.WeakSet()


@atexit.register
def _shutdown_open_accelerators() -> None:
    for acc in list(_open_accelerators):
        with contextlib.suppress(Exception):
            acc.shutdown()
