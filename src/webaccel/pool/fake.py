"""A fake :class:`~webaccel.pool.transport.WorkerTransport` for scheduler unit tests ONLY.

It runs no model: by default it doubles every input (``y = 2 * x`` for the
first input), which is enough to check that each caller got its own rows
back.  It is never registered as a worker kind and nothing outside tests
should construct it (DESIGN.md: a fake may stand in for a browser only in
scheduler unit tests).

Control knobs: ``run_latency`` / ``load_latency`` (seconds, asyncio sleeps),
``manual=True`` (each run waits until the test calls :meth:`FakeCall.complete`
or :meth:`FakeWorker.release`), :meth:`FakeWorker.kill` (the browser dies:
pending runs raise WorkerLostError and ``alive`` turns False),
:meth:`FakeWorker.hang` (the page stops answering but looks alive, like a
killed renderer), ``fail_loads`` / ``fail_runs`` (errors to raise).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webaccel.errors import (
    BackendUnavailableError,
    BrowserLaunchError,
    LoadFailedError,
    ModelNotFoundError,
    TimeoutError_,
    WebAccelError,
    WorkerLostError,
)
from webaccel.pool.transport import LoadInfo, ModelRef, RunResult, StreamEvent

Compute = Callable[[str, dict[str, np.ndarray]], dict[str, np.ndarray]]


def double_first(key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    first = inputs[sorted(inputs)[0]]
    return {"y": np.asarray(first, dtype=np.float32) * 2}


def fake_next_token(seq: list[int], vocab_size: int = 256) -> int:
    """The fake decoder's next token: a function of the whole sequence, like greedy."""
    h = 1469598103934665603
    for t in seq:
        h = ((h ^ t) * 1099511628211) % (1 << 64)
    return h % vocab_size


def capabilities_for(
    backends: Iterable[str], *, shader_f16: bool = False, software_webgpu: bool = False
) -> dict[str, Any]:
    """Capabilities shaped like ``web/capabilities.mjs`` reports them."""
    b = set(backends)
    gpu = {
        "available": "webgpu" in b,
        "software": software_webgpu,
        "isFallbackAdapter": software_webgpu,
        "shaderF16": shader_f16,
        "features": ["shader-f16"] if shader_f16 else [],
    }
    return {"webgpu": gpu, "webnn": {"available": "webnn" in b}, "wasm": {"simd": True}}


@dataclass(eq=False)
class FakeCall:
    worker: FakeWorker
    key: str
    inputs: dict[str, np.ndarray]
    future: asyncio.Future[dict[str, np.ndarray]] = field(repr=False)

    def complete(self, outputs: dict[str, np.ndarray] | None = None) -> None:
        if not self.future.done():
            self.future.set_result(
                outputs if outputs is not None else self.worker.compute(self.key, self.inputs)
            )

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


_ids = itertools.count(1)


class FakeWorker:
    def __init__(
        self,
        browser: str = "chromium",
        backends: Iterable[str] = ("wasm",),
        *,
        worker_id: str | None = None,
        shader_f16: bool = False,
        software_webgpu: bool = False,
        capabilities: Mapping[str, Any] | None = None,
        run_latency: float = 0.0,
        load_latency: float = 0.0,
        manual: bool = False,
        compute: Compute = double_first,
        fail_loads: WebAccelError | None = None,
        fail_runs: WebAccelError | None = None,
        fail_backends: Iterable[str] = (),
        step_latency: float = 0.0,
        vocab_size: int = 256,
    ) -> None:
        self.id = worker_id or f"fake-{browser}-{next(_ids)}"
        self.browser = browser
        self._backends = list(backends)
        self.capabilities: dict[str, Any] = dict(
            capabilities
            or capabilities_for(
                self._backends, shader_f16=shader_f16, software_webgpu=software_webgpu
            )
        )
        self.run_latency = run_latency
        self.load_latency = load_latency
        self.manual = manual
        self.compute = compute
        self.fail_loads = fail_loads
        self.fail_runs = fail_runs
        self.fail_backends = set(fail_backends)  # loads on these fail with LOAD_FAILED
        self.step_latency = step_latency  # seconds per streamed step
        self.vocab_size = vocab_size
        self.streams: list[str] = []  # keys of the streams started here
        self.tokens_streamed = 0
        self.loaded: dict[str, ModelRef] = {}
        self.pending: list[FakeCall] = []
        self.peak_in_flight = 0  # the most runs this worker ever held at once
        self.calls: list[FakeCall] = []
        self.loads: list[str] = []
        self.unloads: list[str] = []
        self.closed = False
        self._alive = True
        self._hung = False
        self._arrived = asyncio.Event()

    # --- WorkerTransport -------------------------------------------------
    @property
    def alive(self) -> bool:
        return self._alive and not self.closed

    def available_backends(self) -> list[str]:
        # Like the real worker: a software WebGPU adapter goes last.
        if "webgpu" in self._backends and self.capabilities.get("webgpu", {}).get("software"):
            return [b for b in self._backends if b != "webgpu"] + ["webgpu"]
        return list(self._backends)

    def _check(self) -> None:
        if not self.alive:
            raise WorkerLostError(f"fake worker {self.id} is gone")

    async def load_model(self, model: ModelRef, *, timeout: float = 120.0) -> LoadInfo:
        self._check()
        if model.backend not in self._backends:
            raise BackendUnavailableError(f"fake worker {self.id} has no {model.backend}")
        if self.load_latency:
            await asyncio.sleep(self.load_latency)
        self._check()
        if self.fail_loads is not None:
            raise self.fail_loads
        if model.backend in self.fail_backends:
            raise LoadFailedError(f"fake worker {self.id}: {model.backend} session failed")
        self.loaded[model.key] = model
        self.loads.append(model.key)
        return LoadInfo(key=model.key, backend=model.backend, load_ms=self.load_latency * 1000)

    async def run(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        output_names: list[str] | None = None,
        timeout: float = 60.0,
        options: dict[str, Any] | None = None,
    ) -> RunResult:
        self._check()
        if key not in self.loaded:
            raise ModelNotFoundError(f"fake worker {self.id} has no session {key!r}; load it first")
        loop = asyncio.get_running_loop()
        call = FakeCall(self, key, inputs, loop.create_future())
        self.calls.append(call)
        self.pending.append(call)
        self.peak_in_flight = max(self.peak_in_flight, len(self.pending))
        self._arrived.set()
        start = loop.time()
        try:
            if self.fail_runs is not None:
                call.fail(self.fail_runs)
            elif not self.manual and not self._hung:
                if self.run_latency:
                    await asyncio.sleep(self.run_latency)
                call.complete()
            try:
                outputs = await asyncio.wait_for(asyncio.shield(call.future), timeout)
            except TimeoutError:
                raise TimeoutError_(
                    f"fake worker {self.id} did not answer within {timeout} s"
                ) from None
        finally:
            if call in self.pending:
                self.pending.remove(call)
        ms = (loop.time() - start) * 1000
        return RunResult(outputs=outputs, page_ms=ms, round_trip_ms=ms)

    async def stream(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        kind: str = "generate",
        options: dict[str, Any] | None = None,
        timeout: float = 900.0,
    ) -> AsyncGenerator[StreamEvent, None]:
        """A deterministic "greedy decoder": each token is a hash of the whole sequence
        so far, so a replay of prompt + tokens continues exactly where it stopped
        (what greedy decoding gives a real model).  Honors ``max_tokens`` and
        ``stop_token_ids``; a :meth:`kill` mid-stream raises WorkerLostError."""
        self._check()
        if key not in self.loaded:
            raise ModelNotFoundError(f"fake worker {self.id} has no session {key!r}; load it first")
        opts = options or {}
        seq = [int(t) for t in np.asarray(inputs["input_ids"]).reshape(-1)]
        stops = {int(t) for t in opts.get("stop_token_ids", ())}
        self.streams.append(key)
        finish = "length"
        for _ in range(int(opts.get("max_tokens", 16))):
            await asyncio.sleep(self.step_latency)
            self._check()
            token = fake_next_token(seq, self.vocab_size)
            seq.append(token)
            self.tokens_streamed += 1
            yield StreamEvent({"token": token})
            if token in stops:
                finish = "stop"
                break
        yield StreamEvent({"finish_reason": finish, "tokens": len(seq)}, final=True)

    async def unload(self, key: str) -> None:
        self._check()
        self.loaded.pop(key, None)
        self.unloads.append(key)

    async def close(self) -> None:
        self.closed = True
        for call in list(self.pending):
            call.fail(WorkerLostError(f"fake worker {self.id} was closed"))

    # --- test controls ---------------------------------------------------
    def kill(self) -> None:
        """The browser process died: runs in flight fail, ``alive`` is False."""
        self._alive = False
        for call in list(self.pending):
            call.fail(WorkerLostError(f"fake worker {self.id} was killed"))

    def hang(self) -> None:
        """The page stops answering but the process looks alive (a killed renderer)."""
        self._hung = True
        self.manual = True

    def release(self, n: int | None = None) -> int:
        """Complete up to ``n`` pending manual runs (all when None); returns how many."""
        todo = list(self.pending)[: n if n is not None else None]
        for call in todo:
            call.complete()
        return len(todo)

    async def wait_calls(self, n: int, timeout: float = 2.0) -> None:
        """Wait until at least ``n`` runs are pending."""

        async def _wait() -> None:
            while len(self.pending) < n:
                self._arrived.clear()
                await self._arrived.wait()

        await asyncio.wait_for(_wait(), timeout)


class FakeLauncher:
    """A :data:`~webaccel.pool.transport.WorkerLauncher` that makes FakeWorkers.

    ``families`` maps a family to FakeWorker keyword arguments; a family not
    in it (or in ``broken``) fails to launch like a missing browser binary.
    """

    def __init__(
        self,
        families: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        launch_latency: float = 0.0,
        broken: Iterable[str] = (),
    ) -> None:
        self.families = {k: dict(v) for k, v in (families or {"chromium": {}}).items()}
        self.launch_latency = launch_latency
        self.broken = set(broken)
        self.workers: list[FakeWorker] = []
        self.attempts: list[str] = []

    async def __call__(self, family: str) -> FakeWorker:
        self.attempts.append(family)
        if self.launch_latency:
            await asyncio.sleep(self.launch_latency)
        if family in self.broken or family not in self.families:
            raise BrowserLaunchError(f"fake launcher cannot start {family!r}")
        w = FakeWorker(family, **self.families[family])
        self.workers.append(w)
        return w

    def live(self) -> list[FakeWorker]:
        return [w for w in self.workers if w.alive]
