"""The pool's worker I/O: what runs in short tasks beside the actor.

Running an assignment (merge a batch, pad it to a captured shape bucket, load
the model and warm it up, run it, check the answer, split the rows), opening
a session (place its model), the runs of an open session, and keeping what
each page holds (loads, bucket sessions, evictions) in step with the pool's
state.  These methods post their outcome back to the actor as commands
(:mod:`webaccel.pool.commands`); only the actor changes the state's queues.
They are a mixin of :class:`~webaccel.pool.pool.ResourcePool`, kept here so
the actor's file holds the handle and the actor and this one the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from webaccel.errors import (
    CancelledError_,
    InternalError,
    TimeoutError_,
    WebAccelError,
    WorkerLostError,
    WrongAnswerError,
)
from webaccel.pool import commands as cmd
from webaccel.pool.batching import merge, split
from webaccel.pool.resolver import ResolvedModel
from webaccel.pool.results import Lease, WorkerSession
from webaccel.pool.state import SESSION, Assignment
from webaccel.pool.transport import LoadInfo, ModelRef, RunResult, WorkerTransport
from webaccel.pool.verify import disagreement

if TYPE_CHECKING:
    import random
    from collections.abc import Callable

    from webaccel.pool.memory import MemoryProbe
    from webaccel.pool.state import Outcome, PoolState
    from webaccel.pool.verify import VerifyPolicy


def _as_error(exc: BaseException | None, what: str) -> WebAccelError:
    """Any failure as a :class:`WebAccelError` (foreign ones become INTERNAL, chained)."""
    if isinstance(exc, WebAccelError):
        return exc
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return CancelledError_(f"{what} was cancelled")
    err = InternalError(f"{what} failed: {exc!r}")
    err.__cause__ = exc
    return err


class WorkerIO:
    """The I/O half of :class:`~webaccel.pool.pool.ResourcePool` (its only user); the
    annotations below are the pool's own attributes and methods this half uses."""

    _state: PoolState
    _workers: dict[str, WorkerTransport]
    _models: dict[str, ResolvedModel]
    _tickets: dict[int, Any]
    _exec: dict[int, asyncio.Task[None]]
    _load_locks: dict[tuple[str, str], asyncio.Lock]
    _admitted: int
    _verify_rng: random.Random
    _clock: Callable[[], float]
    graph_capture: bool
    bucket_sessions: int
    load_timeout: float
    request_timeout: float
    verify: VerifyPolicy
    warmup_runs: int
    warmup_budget_s: float
    warmups: dict[str, dict[str, dict[str, Any]]]
    memory_probe: MemoryProbe | None

    if TYPE_CHECKING:

        def _post(self, command: cmd.Command) -> None: ...

        def _event(self, kind: str, detail: str) -> None: ...

        def _browser_of(self, wid: str) -> str: ...

        def _settle_worker_after(self, wid: str, out: Outcome | None = None) -> None: ...

    async def _session_run(
        self,
        s: WorkerSession,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        timeout: float,
        options: dict[str, Any] | None,
        output_names: list[str] | None,
    ) -> RunResult:
        if s.assignment_id not in self._state.running:
            raise WorkerLostError(
                f"worker {s.worker_id} was lost during this session; run the job again"
            )
        self._state.run_started(s.worker_id, key)
        try:
            return await asyncio.wait_for(
                s.worker.run(
                    key, inputs, output_names=output_names, timeout=timeout, options=options
                ),
                timeout + 1.0,
            )
        except TimeoutError as exc:
            raise TimeoutError_(
                f"{s.worker_id} did not answer {key} within {timeout} s",
                details={"worker_suspect": True},
            ) from exc
        finally:
            self._state.run_ended(s.worker_id, key)

    def _start(self, a: Assignment) -> None:
        if a.variant is None:  # a lease: hand the worker to its holder
            req = a.requests[0]
            t = self._tickets.get(req.id)
            w = self._workers[a.worker_id]
            if t is None or t.future.done():
                self._settle_worker_after(a.worker_id, self._state.finish(a.id, self._clock()))
                self._tickets.pop(req.id, None)
                return
            lease = Lease(
                w, w.id, self._browser_of(w.id), self._state.lease_backend(req, w.id), a.reasons
            )
            self._tickets.pop(req.id)
            self._admitted -= 1
            t.future.set_result((lease, a.id))
            return
        what = self._open_session(a) if a.kind == SESSION else self._execute(a)
        self._exec[a.id] = asyncio.create_task(what, name=f"webaccel-{a.kind}-{a.id}")

    async def _execute(self, a: Assignment) -> None:
        try:
            res, parts, load = await self._execute_inner(a)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - every failure leaves through the table
            self._post(
                cmd.Failed(a.id, _as_error(exc, f"running {a.requests[0].model} on {a.worker_id}"))
            )
        else:
            self._post(cmd.Done(a.id, res, parts, load))

    async def _open_session(self, a: Assignment) -> None:
        """Place a session's model on its worker, then hand the session over."""
        try:
            w = self._workers.get(a.worker_id)
            if w is None:
                raise WorkerLostError(f"worker {a.worker_id} is gone")
            await self._evict(w, a.evict)
            assert a.variant is not None
            model = self._models.get(a.requests[0].model)
            load = None
            if model is None or model.load_on_session:
                load = await self._ensure_loaded(w, a.variant)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001
            self._post(
                cmd.Failed(a.id, _as_error(exc, f"loading {a.requests[0].model} on {a.worker_id}"))
            )
        else:
            self._post(cmd.Opened(a.id, load))

    async def _evict(self, w: WorkerTransport, keys: Sequence[str]) -> None:
        for key in keys:
            for bucket_key in self._state.buckets_of(w.id, key):
                await self._unload(w, bucket_key)
            if self._state.is_resident(w.id, key):
                await self._unload(w, key)

    async def _execute_inner(self, a: Assignment) -> tuple[RunResult, list[Any], LoadInfo | None]:
        w = self._workers.get(a.worker_id)
        if w is None:
            raise WorkerLostError(f"worker {a.worker_id} is gone")
        v = a.variant
        assert v is not None
        await self._evict(w, a.evict)
        tickets = [self._tickets.get(r.id) for r in a.requests]
        model = next((t.model for t in tickets if t is not None and t.model is not None), None)
        axis = model.batch_axis if model is not None else 0
        inputs = [t.inputs if t is not None and t.inputs is not None else {} for t in tickets]
        merged = merge(inputs, axis) if len(inputs) > 1 else inputs[0]
        buckets = model.shape_buckets if model is not None else None
        bucket = buckets.fit(merged) if buckets is not None and self._captures(w, v) else None
        asked = merged  # as the callers gave it (a bucket pads it below)
        run_ref = v
        if bucket is not None:
            run_ref = dataclasses.replace(
                v,
                key=f"{v.key}@{bucket.label}",
                session_options={
                    **v.session_options,
                    "ort": {
                        **v.session_options.get("ort", {}),
                        "freeDimensionOverrides": dict(bucket.shape),
                        "enableGraphCapture": True,
                    },
                },
            )
            merged = bucket.inputs
        load = await self._ensure_loaded(w, run_ref)
        if bucket is not None:
            await self._touch_bucket(w, v.key, run_ref.key)
        names = next((t.output_names for t in tickets if t is not None and t.output_names), None)
        now = self._clock()
        deadlines = [r.deadline for r in a.requests if r.deadline is not None]
        budget = max(
            [r.run_timeout for r in a.requests if r.run_timeout is not None],
            default=self.request_timeout,
        )
        by_deadline = False
        if deadlines:
            left = max(deadlines) - now  # the batch runs for its most patient member
            if left < budget:
                budget, by_deadline = max(left, 0.001), True
        self._state.run_started(a.worker_id, run_ref.key)
        try:
            res = await asyncio.wait_for(
                w.run(run_ref.key, merged, output_names=names, timeout=budget), budget + 1.0
            )
        except (TimeoutError, TimeoutError_) as exc:
            # A page that outlives the pool's own run timeout is hung (a killed
            # renderer fails silently, docs/FACTS.md): treat the worker as lost.
            raise TimeoutError_(
                f"{a.worker_id} did not answer {run_ref.key} within {budget:.3f} s",
                details={"worker_suspect": not by_deadline},
            ) from exc
        finally:
            self._state.run_ended(a.worker_id, run_ref.key)
        if bucket is not None and buckets is not None:
            res = dataclasses.replace(
                res, outputs=buckets.unpad(res.outputs, bucket), shape_bucket=bucket.label
            )
        if model is not None and model.reference is not None:
            await self._check_answer(w, run_ref.key, model, v.precision, asked, res.outputs)
        parts = split(res.outputs, [r.rows for r in a.requests], axis)
        return res, parts, load

    async def _check_answer(
        self,
        w: WorkerTransport,
        key: str,
        model: ResolvedModel,
        precision: str,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
    ) -> None:
        """Hold an answer until it matches the trusted reference, when the policy says
        so: always the first of each loaded variant (admission), then a sample."""
        rec = self._state.workers.get(w.id)
        first = self.verify.admits() and not self._state.is_checked(w.id, key)
        remote = rec.remote if rec is not None else False
        if not (first or self.verify.check_this(remote, self._verify_rng)):
            return
        assert model.reference is not None
        try:
            want = await asyncio.to_thread(model.reference, inputs, precision)
        except Exception as exc:  # noqa: BLE001 - no reference is no verdict on the worker
            self._state.counters["checks_without_reference"] += 1
            self._event("check_skipped", f"{model.name} ({precision}): reference failed: {exc!r}")
            return
        why = disagreement(outputs, {k: v for k, v in want.items() if k in outputs}, precision)
        self._state.counters["answers_checked"] += 1
        if why is not None:
            raise WrongAnswerError(
                f"worker {w.id} answered {model.name} ({key}) wrongly: {why}; quarantined, "
                "the request runs again elsewhere",
                details={"worker": w.id, "admission": first},
            )
        self._state.passed_check(w.id, key)

    def _captures(self, w: WorkerTransport, v: ModelRef) -> bool:
        """Whether ``v`` runs as captured bucket sessions on ``w`` (JSEP WebGPU only:
        the WebGPU EP build replays wrong outputs, onnxruntime issue 29594)."""
        build = (w.capabilities.get("ort") or {}).get("build")
        return self.graph_capture and v.backend == "webgpu" and build == "all"

    async def _ensure_loaded(self, w: WorkerTransport, ref: ModelRef) -> LoadInfo | None:
        if self._state.is_resident(w.id, ref.key):
            return None
        async with self._load_locks.setdefault((w.id, ref.key), asyncio.Lock()):
            if self._state.is_resident(w.id, ref.key):
                return None
            before = await self._measure(w)
            info = await w.load_model(ref, timeout=self.load_timeout)
            await self._warm_up(w, ref)
            after = await self._measure(w) if before is not None else None
            self._state.page_loaded(w.id, ref.key)
            if before is not None and after is not None:  # the model's memory on this worker
                info = dataclasses.replace(info, rss_before_bytes=before, rss_after_bytes=after)
            return info

    async def _measure(self, w: WorkerTransport) -> int | None:
        """The RSS of ``w``'s local browser process tree (None: not measured); in a thread,
        as it reads ``/proc``.  A failing probe never fails a load."""
        probe = self.memory_probe
        if probe is None:
            return None
        try:
            return await asyncio.to_thread(probe, w)
        except Exception:  # noqa: BLE001 - a measurement, not a reason to fail
            return None

    async def _warm_up(self, w: WorkerTransport, ref: ModelRef) -> None:
        """Dummy runs of a just-loaded model before it takes traffic (not for captured
        bucket sessions: they take one fixed shape, and replay is already fast)."""
        model = self._models.get(ref.name)
        if (
            not self.warmup_runs
            or model is None
            or not model.warmup_inputs
            or (ref.session_options.get("ort") or {}).get("enableGraphCapture")
        ):
            return
        names = list(model.output_names) if model.output_names else None
        times: list[float] = []
        t0 = self._clock()
        try:
            for i in range(self.warmup_runs):
                if i and self._clock() - t0 > self.warmup_budget_s:
                    break
                dummy = model.warmup_inputs[i % len(model.warmup_inputs)]
                feeds = {k: np.asarray(v) for k, v in dummy.items()}
                res = await w.run(ref.key, feeds, output_names=names, timeout=self.load_timeout)
                times.append(res.page_ms)
        except WebAccelError as exc:  # a warm-up that fails is no reason not to serve
            self._event("warmup_failed", f"{w.id} {ref.key}: {exc.code} {exc.message}")
        self.warmups.setdefault(w.id, {})[ref.key] = {
            "model": ref.name,
            "runs": len(times),
            "ms": (self._clock() - t0) * 1000,
            "shapes": [
                {k: list(np.shape(v)) for k, v in feeds.items()} for feeds in model.warmup_inputs
            ],
            "page_ms_first": times[0] if times else None,
            "page_ms_last": times[-1] if times else None,
        }
        self._event("warmup", f"{w.id} {ref.key}: {len(times)} runs")

    async def _touch_bucket(self, w: WorkerTransport, variant_key: str, key: str) -> None:
        """Mark ``key`` most recently used; unload the oldest idle bucket sessions over the cap."""
        for old in self._state.touch_bucket(w.id, variant_key, key, self.bucket_sessions):
            await self._unload(w, old)

    async def _unload(self, w: WorkerTransport, key: str) -> None:
        with contextlib.suppress(WebAccelError):
            await w.unload(key)
        self._state.page_unloaded(w.id, key)
