"""What the pool hands back: an inference's answer, a leased worker, a session.

A :class:`Lease` is a whole worker for a caller that drives it itself (benchmarks,
probes).  A :class:`WorkerSession` is the pool's own way to give multi-step work
(a generated stream, Whisper's decoder loop) one worker for its whole life:
the model is placed and loaded by the pool, every load and run goes through
the pool (so what the page holds is known in one place), and the session ends
with a figure the pool records.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from webaccel.pool.transport import LoadInfo, ModelRef, RunResult, StreamEvent, WorkerTransport

if TYPE_CHECKING:
    from webaccel.pool.pool import ResourcePool


@dataclass(frozen=True)
class InferenceResult:
    """One request's answer and where/how it ran."""

    model: str
    outputs: Any  # dict name -> array, or what the model's postprocess returned
    worker_id: str
    browser: str
    backend: str
    precision: str
    attempts: int  # 1 + retries after lost workers / failed loads
    queue_ms: float  # submit -> the (last) assignment started
    run_ms: float  # round trip of the run, bridge included
    page_ms: float  # inference time inside the page
    load_ms: float | None  # when this assignment had to load the model first
    batch_size: int  # requests sharing the run
    reasons: tuple[str, ...] = ()  # why this worker/backend/precision
    # "BxS": the batch ran padded to this shape in a graph-captured session
    shape_bucket: str | None = None
    # Why better-ranked backends were not used (None: the first choice served)
    fallback_reason: str | None = None
    # frame in -> result out, inside the page; run_ms - handle_ms is the bridge itself
    handle_ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "outputs"}
        d["reasons"] = list(self.reasons)
        return d


@dataclass
class Lease:
    """A whole worker, held by one caller until the ``async with`` block ends."""

    worker: WorkerTransport
    worker_id: str
    browser: str
    backend: str
    reasons: tuple[str, ...]

    # Convenience pass-throughs; the caller owns what it loads.
    async def load_model(self, *a: Any, **k: Any) -> LoadInfo:
        return await self.worker.load_model(*a, **k)

    async def run(self, *a: Any, **k: Any) -> RunResult:
        return await self.worker.run(*a, **k)


@dataclass(eq=False)
class WorkerSession:
    """One worker, a model placed on it, held by a caller for a multi-step job."""

    pool: ResourcePool
    assignment_id: int
    worker: WorkerTransport
    model: str
    variant: ModelRef
    reasons: tuple[str, ...]
    fallback_reason: str | None
    queue_ms: float
    load_info: LoadInfo | None  # the load this session's model needed, if any
    attempts: int = 1
    opened_at: float = 0.0  # on the pool's clock
    figures: dict[str, Any] = field(default_factory=dict)  # what the job reports at its end
    page_ms: float = 0.0
    round_trip_ms: float = 0.0
    runs: int = 0

    @property
    def worker_id(self) -> str:
        return self.worker.id

    @property
    def browser(self) -> str:
        return self.pool._browser_of(self.worker.id)

    @property
    def backend(self) -> str:
        return self.variant.backend

    @property
    def precision(self) -> str:
        return self.variant.precision

    async def load(self, ref: ModelRef) -> LoadInfo | None:
        """Load another graph of the model (a part) on this worker; None if resident."""
        return await self.pool._ensure_loaded(self.worker, ref)

    async def run(
        self,
        key: str,
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float = 60.0,
        options: dict[str, Any] | None = None,
        output_names: list[str] | None = None,
    ) -> RunResult:
        res = await self.pool._session_run(
            self, key, dict(inputs), timeout=timeout, options=options, output_names=output_names
        )
        self.page_ms += res.page_ms
        self.round_trip_ms += res.round_trip_ms
        self.runs += 1
        return res

    def stream(
        self,
        inputs: Mapping[str, np.ndarray],
        *,
        key: str | None = None,
        kind: str = "generate",
        options: dict[str, Any] | None = None,
        timeout: float = 900.0,
    ) -> AsyncGenerator[StreamEvent, None]:
        return self.worker.stream(
            key or self.variant.key, dict(inputs), kind=kind, options=options, timeout=timeout
        )

    def report(self, **figures: Any) -> None:
        """Figures for the metrics row written when the session ends (see
        ``MetricsStore.record_generation``: prompt_tokens, completion_tokens, ttft_ms, ...)."""
        self.figures.update(figures)
