"""A model of several graphs (Whisper: encoder, decoder) with each graph on its own worker.

The family's own ``run_loop`` drives the job as in one session
(:meth:`webaccel.engine.Engine._run_loop`); only its ``step(part, feeds)``
changes: each part runs in its own pool session, the sessions placed on
different workers (``avoid_workers``).  Tensors between the graphs (the
encoder's states, the decoder's KV cache) travel through Python, as they do
in one session.  Large inputs a step sends again unchanged (the encoder
states) are kept in that part's page after the first send.

When a part's worker is lost, that part is re-placed on another worker
(its graph loaded there) and the step that failed runs again with full
inputs; the loop's state lives in Python, so the result is exactly that of an
undisturbed run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from webaccel.errors import TimeoutError_, WorkerLostError
from webaccel.pool.results import WorkerSession
from webaccel.pool.transport import ModelRef


def worker_lost(exc: BaseException) -> bool:
    """The worker is gone or hung (the pool re-places what it held): replay on another."""
    if isinstance(exc, WorkerLostError):
        return True
    return isinstance(exc, TimeoutError_) and bool(exc.details.get("worker_suspect"))


# Inputs this large that a step sends again unchanged stay in the page (as in one session).
KEEP_INPUT_BYTES = 1 << 20


def _kept_inputs_step(session: WorkerSession, key: str, timeout: float) -> Any:
    """``step(part, feeds)`` over one session: an input that is the very array sent
    before (Whisper's encoder states) is reused from the page, not resent.  A new
    session (after a loss) starts with nothing kept, so it gets every input in full."""
    sent: dict[str, np.ndarray] = {}

    async def step(part: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        send: dict[str, np.ndarray] = {}
        reuse: list[str] = []
        keep: list[str] = []
        for name, arr in feeds.items():
            if sent.get(name) is arr:
                reuse.append(name)
                continue
            send[name] = arr
            if arr.nbytes >= KEEP_INPUT_BYTES:
                keep.append(name)
                sent[name] = arr  # holding it keeps its id() unique
        opts = {"reuse": reuse, "keep": keep} if reuse or keep else None
        res = await session.run(key, send, timeout=timeout, options=opts)
        return dict(res.outputs)

    return step


class _PartRunner:
    def __init__(self, job: PartsJob, part: str, path: Any) -> None:
        self.job, self.part, self.path = job, part, path
        self.ctx: Any = None
        self.session: WorkerSession | None = None
        self.step: Any = None
        self.workers: list[str] = []
        self.replayed = 0
        self.runs = 0
        self.load_ms = 0.0

    async def open(self) -> None:
        job = self.job
        others = [r.session.worker_id for r in job.runners.values()
                  if r is not self and r.session is not None]
        ctx = job.engine.pool.session(
            job.spec.name, precision="fp32", avoid_workers=others, record=False, **job.route
        )
        s: WorkerSession = await ctx.__aenter__()
        self.ctx, self.session = ctx, s
        try:
            url, cid = await job.engine.host.model_url(
                f"{job.spec.name}/fp32/{self.part}.onnx", self.path
            )
            ref = ModelRef(key=f"{job.spec.name}/fp32/{self.part}/{s.backend}", name=job.spec.name,
                           url=url, backend=s.backend, precision="fp32", cid=cid)
            info = await s.load(ref)
        except BaseException as exc:
            await self.close(exc)
            raise
        self.load_ms += info.load_ms if info is not None else 0.0
        self.workers.append(s.worker_id)
        self.step = _kept_inputs_step(s, ref.key, job.timeout)

    async def close(self, exc: BaseException | None = None) -> None:
        ctx, self.ctx, self.session, self.step = self.ctx, None, None, None
        if ctx is not None:
            await ctx.__aexit__(type(exc) if exc else None, exc, None)

    async def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        attempt = 0
        while True:
            if self.step is None:
                await self.open()
            try:
                out: dict[str, np.ndarray] = await self.step(self.part, feeds)
            except Exception as exc:
                if not worker_lost(exc) or attempt >= self.job.max_replays:
                    raise
                attempt += 1
                self.replayed += 1
                await self.close(exc)  # a fresh session resends every input in full
                continue
            self.runs += 1
            return out

    def report(self) -> dict[str, Any]:
        s = self.session
        return {
            "part": self.part,
            "worker_id": self.workers[-1] if self.workers else None,
            "workers": list(self.workers),
            "browser": s.browser if s is not None else None,
            "backend": s.backend if s is not None else None,
            "runs": self.runs,
            "replayed": self.replayed,
            "page_ms": round(s.page_ms, 3) if s is not None else None,
            "load_ms": round(self.load_ms, 3),
        }


class PartsJob:
    """``async with PartsJob(engine, spec) as job: out = await job.run(data, options)``."""

    def __init__(self, engine: Any, spec: Any, parts: Mapping[str, Any], *,
                 timeout: float = 300.0, max_replays: int = 3, **route: Any) -> None:
        self.engine, self.spec = engine, spec
        self.timeout, self.max_replays = timeout, max_replays
        self.route = {k: v for k, v in route.items() if v is not None}
        self.runners = {part: _PartRunner(self, part, path) for part, path in parts.items()}

    async def __aenter__(self) -> PartsJob:
        try:
            for r in self.runners.values():
                await r.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        for r in self.runners.values():
            await r.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def step(self, part: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self.runners[part].run(feeds)

    async def run(self, data: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        assert self.spec.run_loop is not None
        out: dict[str, Any] = await self.spec.run_loop(self.step, data, options)
        return out

    def report(self) -> list[dict[str, Any]]:
        return [{"stage": i, **r.report()} for i, r in enumerate(self.runners.values())]


async def accelerate_parts(engine: Any, model_name: str, data: Any, *,
                           platform: str | None = None, browser: str | None = None,
                           options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``engine.accelerate`` for a multi-graph model with every graph on its own worker."""
    from webaccel.models import registry

    t0 = time.perf_counter()
    spec = registry.get(model_name)
    parts = await asyncio.to_thread(spec.ensure_parts, "fp32")
    route = engine.route(platform)
    async with PartsJob(engine, spec, parts, browser=browser, platform=route["platform"],
                        allow_software=route["allow_software"]) as job:
        out = await job.run(data, dict(options or {}))
        report = job.report()
    return {
        "model": spec.name,
        "task": spec.task,
        **out,
        "stages": report,
        "sharded": f"{len(parts)} graphs ({', '.join(parts)}) on separate workers",
        "replayed": sum(r["replayed"] for r in report),
        "backend": report[0]["backend"],
        "browser": report[0]["browser"],
        "precision": "fp32",
        "latency_ms": (time.perf_counter() - t0) * 1000,
    }


__all__ = ["PartsJob", "accelerate_parts"]
