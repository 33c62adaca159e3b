"""The pipeline driver: one pool session per stage, micro-batches in flight.

Each stage of a :class:`~webaccel.sharding.stages.SplitModel` gets its own
pool session (``pool.session(stage_model, avoid_workers=<the other stages'
workers>)``), so the pool places, loads and records it like any session and
no two stages share a worker while the pool may launch enough of them.
Micro-batches walk through the stages in order; up to ``in_flight`` of them
are in the pipeline at once, so while stage 1 runs micro-batch ``i``, stage 0
already runs ``i + 1``.  Intermediate tensors (the hidden state) travel
through Python: stage ``k``'s feeds are the previous stage's outputs plus the
model inputs it still needs (the attention mask).

A stage whose worker is lost (WorkerLostError, or a run timing out on a
worker the pool suspects) is re-placed: its session ends, a new one opens on
another worker (the pool launches one if needed), and every micro-batch that
was in that stage -- and only those -- runs there again from the inputs the
driver kept.  Every stage is deterministic, so the results are exactly those
of an undisturbed run.  Results come back in submission order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from webaccel.pool.results import WorkerSession
from webaccel.sharding.parts import worker_lost as _lost
from webaccel.sharding.stages import SplitModel, Stage

Tensors = dict[str, np.ndarray]


class _StageRunner:
    def __init__(self, pipe: Pipeline, stage: Stage) -> None:
        self.pipe, self.stage = pipe, stage
        self.ctx: Any = None
        self.session: WorkerSession | None = None
        self.gen = 0
        self.lock = asyncio.Lock()
        self.workers: list[str] = []  # every worker this stage ran on, in order
        self.runs = 0
        self.replayed = 0  # micro-batches run again after this stage's worker was lost
        self.page_ms = 0.0
        self.round_trip_ms = 0.0
        self.load_ms = 0.0

    async def open(self) -> WorkerSession:
        others = [
            r.session.worker_id
            for r in self.pipe.runners
            if r is not self and r.session is not None
        ]
        ctx = self.pipe.pool.session(
            self.stage.name,
            precision="fp32",
            avoid_workers=others if self.pipe.spread else (),
            record=False,
            **self.pipe.route,
        )
        s: WorkerSession = await ctx.__aenter__()
        self.ctx, self.session = ctx, s
        self.workers.append(s.worker_id)
        if s.load_info is not None:
            self.load_ms += s.load_info.load_ms
        return s

    async def close(self, exc: BaseException | None = None) -> None:
        ctx, self.ctx, self.session = self.ctx, None, None
        if ctx is not None:
            await ctx.__aexit__(type(exc) if exc else None, exc, None)

    async def run(self, feeds: Tensors) -> Tensors:
        attempt = 0
        while True:
            async with self.lock:
                s = self.session if self.session is not None else await self.open()
                gen = self.gen
            try:
                res = await s.run(s.variant.key, feeds, timeout=self.pipe.timeout)
            except Exception as exc:
                if not _lost(exc) or attempt >= self.pipe.max_replays:
                    raise
                attempt += 1
                self.replayed += 1
                async with self.lock:
                    if self.gen == gen:  # the first to notice re-places the stage
                        self.gen += 1
                        await self.close(exc)
                continue
            self.runs += 1
            self.page_ms += res.page_ms
            self.round_trip_ms += res.round_trip_ms
            return dict(res.outputs)

    def report(self) -> dict[str, Any]:
        s = self.session
        return {
            "stage": self.stage.index,
            "model": self.stage.name,
            "layers": list(self.stage.layers),
            "worker_id": self.workers[-1] if self.workers else None,
            "workers": list(self.workers),
            "browser": s.browser if s is not None else None,
            "backend": s.backend if s is not None else None,
            "bytes": self.stage.size_bytes(),
            "runs": self.runs,
            "replayed": self.replayed,
            "page_ms": round(self.page_ms, 3),
            "round_trip_ms": round(self.round_trip_ms, 3),
            "load_ms": round(self.load_ms, 3),
        }


class Pipeline:
    """``async with Pipeline(pool, split) as p: outs = await p.run(micro_batches)``.

    ``in_flight``: micro-batches in the pipeline at once (default: two per
    stage, so a stage's next input is already there when it finishes one);
    1 runs one micro-batch through all stages before the next starts.
    ``spread``: put each stage on its own worker (default True).
    ``route``: pool.session keywords (``platform``, ``browser``, ...).
    """

    def __init__(
        self,
        pool: Any,
        split: SplitModel,
        *,
        in_flight: int | None = None,
        spread: bool = True,
        timeout: float = 120.0,
        max_replays: int = 3,
        **route: Any,
    ) -> None:
        self.pool, self.split = pool, split
        self.in_flight = in_flight or 2 * len(split.stages)
        self.spread = spread
        self.timeout = timeout
        self.max_replays = max_replays
        self.route = {k: v for k, v in route.items() if v is not None}
        self.runners = [_StageRunner(self, s) for s in split.stages]

    async def open(self) -> None:
        """Place every stage now (in order, each avoiding the ones placed before)."""
        for r in self.runners:
            async with r.lock:
                if r.session is None:
                    await r.open()

    async def close(self) -> None:
        for r in self.runners:
            await r.close()

    async def __aenter__(self) -> Pipeline:
        try:
            await self.open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(
        self, batches: Sequence[Mapping[str, np.ndarray]], *, in_flight: int | None = None
    ) -> list[Tensors]:
        """Each micro-batch through every stage; the model's outputs, in order."""
        sem = asyncio.Semaphore(in_flight or self.in_flight)
        # The model's outputs: the last stage's, and any an earlier stage gives that no
        # later stage takes (a KV cache's present.N leaves from its layer's stage).
        taken = {i for s in self.split.stages for i in s.inputs}
        last = [o for s in self.split.stages for o in s.outputs if o not in taken]

        async def one(feeds: Mapping[str, np.ndarray]) -> Tensors:
            async with sem:
                avail: Tensors = {k: np.asarray(v) for k, v in feeds.items()}
                for r in self.runners:
                    avail.update(await r.run({k: avail[k] for k in r.stage.inputs}))
                return {k: avail[k] for k in last}

        return list(await asyncio.gather(*(one(b) for b in batches)))

    def report(self) -> list[dict[str, Any]]:
        return [r.report() for r in self.runners]

    @property
    def replayed(self) -> int:
        return sum(r.replayed for r in self.runners)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), max(1, size))]


async def accelerate_split(
    engine: Any,
    model_name: str,
    data: Any,
    *,
    stages: int | None = None,
    micro_batch: int = 8,
    in_flight: int | None = None,
    platform: str | None = None,
    browser: str | None = None,
    why: str | None = None,
) -> dict[str, Any]:
    """What ``engine.accelerate`` returns, computed by the split model.

    ``stages``: None picks the fewest stages whose files each fit the pool's
    per-worker memory budget (:func:`webaccel.sharding.plan.stages_for_budget`).
    Inputs (a list of texts for MiniLM) are cut into micro-batches of
    ``micro_batch`` items, each preprocessed on its own.
    """
    from webaccel.models import registry
    from webaccel.sharding import plan
    from webaccel.sharding.stages import split_model

    t0 = time.perf_counter()
    spec = registry.get(model_name)
    if spec.build_parts is not None:  # Whisper: one graph per worker
        from webaccel.sharding.parts import accelerate_parts

        return await accelerate_parts(engine, spec.name, data, platform=platform, browser=browser)
    budget = engine.pool.memory_budget_bytes
    if stages is None:
        split = await asyncio.to_thread(plan.stages_for_budget, spec.name, budget)
        why = why or plan.why_sharded(split, budget)
    else:
        split = await asyncio.to_thread(split_model, spec.name, stages)
    items = [data] if isinstance(data, str) else list(data)
    proc = spec.processor()
    parts = chunks(items, micro_batch)
    prepared = [await asyncio.to_thread(proc.preprocess, list(p), {}) for p in parts]
    t_pre = time.perf_counter()
    route = engine.route(platform)
    async with Pipeline(
        engine.pool,
        split,
        in_flight=in_flight,
        browser=browser,
        platform=route["platform"],
        allow_software=route["allow_software"],
    ) as pipe:
        outs = await pipe.run([p.tensors for p in prepared])
        report = pipe.report()
    t_run = time.perf_counter()
    results = [proc.postprocess(o, p) for o, p in zip(outs, prepared, strict=True)]
    out: dict[str, Any] = {"model": spec.name, "task": spec.task}
    if "embeddings" in results[0]:
        emb = np.concatenate([r["embeddings"] for r in results])
        out["embeddings"] = emb
        out["truncated"] = [t for r in results for t in r.get("truncated", [])]
    else:
        out["outputs"] = results
    engine.pool.sharded[spec.name] = {
        "stages": len(split.stages),
        "layers_per_stage": list(split.sizes),
        "stage_bytes": [s.size_bytes() for s in split.stages],
        "workers": [r["worker_id"] for r in report],
        "why": why or f"asked for {len(split.stages)} stages",
    }
    out.update(
        {
            "stages": report,
            "sharded": why or f"asked for {len(split.stages)} stages",
            "micro_batches": len(parts),
            "replayed": sum(r["replayed"] for r in report),
            "backend": report[0]["backend"],
            "browser": report[0]["browser"],
            "precision": "fp32",
            "split_and_preprocess_ms": (t_pre - t0) * 1000,
            "pipeline_ms": (t_run - t_pre) * 1000,
            "latency_ms": (time.perf_counter() - t0) * 1000,
        }
    )
    return out


def run_split(acc: Any, model: str, data: Any, *, stages: int, precision: str,
              platform: str | None, browser: str | None) -> dict[str, Any]:
    """``webaccel run ... --stages N``: the split model through a WebAccelerator."""
    from webaccel.errors import InvalidInputError

    if precision not in ("auto", "fp32"):
        raise InvalidInputError("split models run in fp32 only; drop --precision or use fp32")
    return acc._loop.run(  # type: ignore[no-any-return]
        accelerate_split(acc._engine, model, data, stages=stages, platform=platform,
                         browser=browser)
    )


__all__ = ["Pipeline", "accelerate_split", "chunks", "run_split"]
