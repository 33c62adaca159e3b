"""The pool's scheduling state: pure data and decisions, no asyncio, no I/O.

:class:`PoolState` is what the :class:`~webaccel.pool.pool.ResourcePool`
actor owns (TGI's ``State``): the actor feeds it facts (a request arrived, a
worker said hello, an assignment finished or failed, a worker was lost, the
clock moved) and asks it for decisions (:meth:`PoolState.next_assignment`,
:meth:`PoolState.scaling_plan`, :meth:`PoolState.expire`).  Every call takes
``now`` from the caller, so tests drive time by hand.

Invariants (checked by the property tests in ``tests/pool/test_state.py``):

* every admitted request is in exactly one place -- queued, running, or
  handed back to the caller in an :class:`Outcome` -- never lost or duplicated;
* ``queued + running <= max_pending`` (admission fails fast with
  :class:`~webaccel.errors.OverloadedError`, it never blocks);
* a request is never assigned to a worker that cannot run it
  (:func:`webaccel.pool.routing.reject_reason`);
* a request is assigned only if no queued request of higher priority could
  have used the same worker (batchable requests may wait up to their model's
  ``max_wait`` for company: that is the one documented exception).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter, OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from webaccel.errors import (
    BackendUnavailableError,
    LoadFailedError,
    ModelNotFoundError,
    OutOfMemoryError,
    OverloadedError,
    TimeoutError_,
    WebAccelError,
    WorkerLostError,
)
from webaccel.pool.lifecycle import (
    ACCEPTS_WORK,
    ALIVE,
    TERMINAL,
    WorkerEvent,
    WorkerState,
    transition,
)
from webaccel.pool.routing import (
    NOTABLE_REASONS,
    Candidate,
    CircuitBreaker,
    Constraints,
    LatencyTable,
    Reason,
    Rejection,
    RoutingPolicy,
    WorkerCaps,
    best_backend,
    choose,
    prefers,
    reject_reason,
)
from webaccel.pool.transport import ModelRef

LEASE = "__lease__"  # queue of requests for a whole worker (get_connection), not a model

# Errors after which the same request may succeed elsewhere.  The breaker
# counts the backend-shaped ones against (model, backend).
_RETRY_ELSEWHERE = (WorkerLostError, LoadFailedError, BackendUnavailableError, OutOfMemoryError)
_BREAKER_ERRORS = (LoadFailedError, BackendUnavailableError, OutOfMemoryError)
# Request kinds: a "run" is one inference (batchable, holds a run slot while it
# runs); a "session" holds a session slot of its worker for its whole life
# (a generated stream, Whisper's decoder loop) and drives the worker itself.
RUN, SESSION = "run", "session"
MAX_RUN_DEPTH = 8  # runs one worker may have in flight at most (run_depth)


@dataclass(frozen=True)
class ModelInfo:
    """What scheduling needs to know about a model (from the resolver)."""

    name: str
    model_type: str | None
    variants: tuple[ModelRef, ...]  # every (backend, precision) it can run as
    max_batch: int = 1  # rows per batch; 1 = never batched
    max_wait: float = 0.0  # seconds a lone batchable request waits for company
    auto_precisions: tuple[str, ...] | None = None  # None: the routing policy's

    @property
    def batchable(self) -> bool:
        return self.max_batch > 1


@dataclass(eq=False)
class Request:
    """One queued unit of work.  ``priority``: higher runs first."""

    id: int
    model: str  # queue name: a model name, or LEASE
    priority: int = 0
    deadline: float | None = None  # absolute, on the caller's clock
    constraints: Constraints = Constraints()
    batch_key: Hashable | None = None  # None: never merged with others
    rows: int = 1
    model_type: str | None = None  # for leases (models take it from ModelInfo)
    kind: str = RUN  # RUN | SESSION
    # Workers this request must not go to (a pipeline's other stages hold them).
    avoid: frozenset[str] = frozenset()
    run_timeout: float | None = None  # seconds one attempt may run (None: the pool's)
    retries: int = 0
    enqueued_at: float = 0.0
    seq: int = 0
    errors: list[str] = field(default_factory=list)
    # More requests of the same job its caller will submit once this one is
    # taken (a long list paced micro-batch by micro-batch): demand the queue
    # alone does not show, for scaling and for spreading a model over workers.
    backlog: int = 0

    def sort_key(self) -> tuple[int, int, int]:
        # A retried request goes to the front of its priority class: it has
        # waited already and was not at fault.
        return (-self.priority, 0 if self.retries else 1, self.seq)

    @property
    def attempts(self) -> int:
        return self.retries + 1


@dataclass(frozen=True)
class Assignment:
    id: int
    worker_id: str
    requests: tuple[Request, ...]
    variant: ModelRef | None  # None for a lease
    load: bool  # the worker must load ``variant`` first
    evict: tuple[str, ...]  # keys to unload first (LRU, memory budget)
    reasons: tuple[str, ...]
    started_at: float
    # Why better-ranked backends (the caller's order, else webgpu > webnn > wasm)
    # were not used on this worker; empty when the first choice served.
    fallback: tuple[Rejection, ...] = ()
    kind: str = RUN
    alone: bool = False  # no other run was in flight on its worker when it started

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.requests)


@dataclass
class Outcome:
    """Where requests went after an event."""

    done: list[Request] = field(default_factory=list)
    retried: list[Request] = field(default_factory=list)
    failed: list[tuple[Request, WebAccelError]] = field(default_factory=list)

    def extend(self, other: Outcome) -> None:
        self.done += other.done
        self.retried += other.retried
        self.failed += other.failed


@dataclass
class WorkerRecord:
    id: str
    browser: str
    state: WorkerState
    caps: WorkerCaps | None = None  # None while launching
    slots: int = 1  # concurrent runs
    session_slots: int = 4  # concurrent sessions (a page batches its generation streams)
    running: set[int] = field(default_factory=set)  # every assignment on it, sessions included
    sessions: set[int] = field(default_factory=set)
    loaded: OrderedDict[str, int] = field(default_factory=OrderedDict)  # key -> bytes, LRU first
    idle_since: float = 0.0
    served: int = 0
    # Residency as the page confirmed it (``loaded`` above is routing's plan):
    resident: set[str] = field(default_factory=set)  # session keys the page holds
    # variant key -> its graph-captured bucket sessions' keys, least recently used first
    buckets: dict[str, OrderedDict[str, None]] = field(default_factory=dict)
    running_keys: Counter[str] = field(default_factory=Counter)  # keys with a run in flight
    checked: set[str] = field(default_factory=set)  # session keys whose answers passed a check
    remote: bool = False  # joined from elsewhere (checked more often)

    @property
    def runs(self) -> int:
        """Runs (not sessions) in flight in its page."""
        return len(self.running) - len(self.sessions)

    @property
    def free(self) -> bool:
        """Has a free run slot."""
        return self.state in ACCEPTS_WORK and self.runs < self.slots

    def free_for(self, kind: str, depth: int = 0) -> bool:
        """Room for a ``kind``; ``depth``: runs a model may have in flight here when
        that is more than ``slots`` (:meth:`PoolState.run_depth`)."""
        if kind == SESSION:
            return self.state in ACCEPTS_WORK and len(self.sessions) < self.session_slots
        return self.state in ACCEPTS_WORK and self.runs < max(self.slots, depth)


@dataclass(frozen=True)
class ScalingPolicy:
    min_workers: int = 1
    max_workers: int = 4
    queue_per_worker: float = 2.0  # launch when more queued than this per worker
    max_queue_wait: float = 0.25  # ...or when the oldest queued request waited this long
    idle_timeout: float = 30.0  # retire a worker idle this long (above the floor)
    launch_backoff: float = 10.0  # skip a family whose launch failed, this long


@dataclass(frozen=True)
class ScalePlan:
    launch: tuple[str, ...] = ()  # browser families to launch
    drain: tuple[str, ...] = ()  # worker ids to retire
    why: tuple[str, ...] = ()


class PoolState:
    def __init__(
        self,
        *,
        max_pending: int = 1024,
        max_retries: int = 3,
        policy: RoutingPolicy | None = None,
        scaling: ScalingPolicy | None = None,
        latency: LatencyTable | None = None,
        breaker: CircuitBreaker | None = None,
        seed: int = 0,
        scan_limit: int = 64,
        adaptive_depth: bool = False,
    ) -> None:
        self.max_pending = max_pending
        # Let a model's runs pipeline deeper than a worker's slots when the bridge's
        # round trip is long next to its run time (run_depth).
        self.adaptive_depth = adaptive_depth
        self._overhead: dict[str, tuple[float, float]] = {}  # model -> EWMA (overhead, page) ms
        self.max_retries = max_retries
        self.policy = policy or RoutingPolicy()
        self.scaling = scaling or ScalingPolicy()
        self.latency = latency or LatencyTable()
        self.breaker = breaker or CircuitBreaker()
        self.load_cost: dict[str, float] = {}  # model -> EWMA of measured load ms
        self.rng = random.Random(seed)
        self.scan_limit = scan_limit
        # True: generation streams join the page already decoding their model (its
        # batch) before another holder is used; see ResourcePool's ``pack_streams``.
        self.pack_streams = False
        self.models: dict[str, ModelInfo] = {}
        self.workers: dict[str, WorkerRecord] = {}
        self.queues: dict[str, list[Request]] = {}
        self.running: dict[int, Assignment] = {}
        self._where: dict[int, int | None] = {}  # request id -> assignment id (None: queued)
        self._seq = 0
        self._aid = 0
        self._tick = 0
        self._last_served: dict[str, int] = {}
        self._launch_failed: dict[str, float] = {}  # family -> until
        self.last_ready_at = -math.inf  # when a worker last said hello (see scaling_plan)
        self.last_decision: dict[str, tuple[str, ...]] = {}
        self.opened: set[int] = set()  # session assignments handed to their callers
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ models
    def register_model(self, info: ModelInfo) -> None:
        if not info.variants:
            raise ModelNotFoundError(f"model {info.name!r} has no runnable variant")
        self.models[info.name] = info

    # ----------------------------------------------------------------- workers
    def add_launching(self, worker_id: str, browser: str, now: float) -> None:
        self.workers[worker_id] = WorkerRecord(
            worker_id, browser, WorkerState.LAUNCHING, idle_since=now
        )

    def worker_ready(
        self,
        worker_id: str,
        browser: str,
        caps: WorkerCaps,
        now: float,
        *,
        slots: int = 1,
        session_slots: int = 4,
    ) -> None:
        """A worker said hello (``worker_id`` may be new, or a LAUNCHING placeholder)."""
        rec = self.workers.get(worker_id)
        if rec is None:
            rec = self.workers[worker_id] = WorkerRecord(worker_id, browser, WorkerState.LAUNCHING)
        rec.state = transition(rec.state, WorkerEvent.LAUNCHED)
        rec.browser, rec.caps, rec.slots, rec.idle_since = browser, caps, slots, now
        self.last_ready_at = now
        rec.session_slots = session_slots
        self._launch_failed.pop(browser, None)

    def rename_worker(self, old: str, new: str) -> None:
        """A placeholder id becomes the transport's id once launched."""
        rec = self.workers.pop(old)
        rec.id = new
        self.workers[new] = rec

    def launch_failed(self, worker_id: str, now: float) -> None:
        rec = self.workers.pop(worker_id, None)
        if rec is not None:
            transition(rec.state, WorkerEvent.LOST)
            self._launch_failed[rec.browser] = now + self.scaling.launch_backoff
            self.counters["launch_failed"] += 1

    def drain(self, worker_id: str) -> bool:
        """Retire once idle; True when it is idle already (close it now)."""
        rec = self.workers[worker_id]
        rec.state = transition(rec.state, WorkerEvent.DRAIN)
        return not rec.running

    def worker_closed(self, worker_id: str) -> None:
        rec = self.workers.pop(worker_id, None)
        if rec is not None:
            transition(rec.state, WorkerEvent.CLOSED)

    def worker_lost(self, worker_id: str, now: float) -> Outcome:
        """The worker is gone: its running requests are retried (front of queue) or failed."""
        out = Outcome()
        rec = self.workers.get(worker_id)
        if rec is None:
            return out
        rec.state = transition(rec.state, WorkerEvent.LOST)
        for aid in sorted(rec.running):
            out.extend(
                self.fail(aid, now, WorkerLostError(f"worker {worker_id} ({rec.browser}) was lost"))
            )
        del self.workers[worker_id]
        self.counters["worker_lost"] += 1
        return out

    # --------------------------------------------------------------- residency
    def session_opened(self, assignment_id: int) -> None:
        self.opened.add(assignment_id)

    def is_checked(self, worker_id: str, key: str) -> bool:
        rec = self.workers.get(worker_id)
        return rec is not None and key in rec.checked

    def passed_check(self, worker_id: str, key: str) -> None:
        rec = self.workers.get(worker_id)
        if rec is not None:
            rec.checked.add(key)

    def is_resident(self, worker_id: str, key: str) -> bool:
        rec = self.workers.get(worker_id)
        return rec is not None and key in rec.resident

    def page_loaded(self, worker_id: str, key: str) -> None:
        rec = self.workers.get(worker_id)
        if rec is not None:
            rec.resident.add(key)

    def page_unloaded(self, worker_id: str, key: str) -> None:
        rec = self.workers.get(worker_id)
        if rec is not None:
            rec.resident.discard(key)

    def run_started(self, worker_id: str, key: str) -> None:
        rec = self.workers.get(worker_id)
        if rec is not None:
            rec.running_keys[key] += 1

    def run_ended(self, worker_id: str, key: str) -> None:
        rec = self.workers.get(worker_id)
        if rec is not None:
            rec.running_keys[key] -= 1
            if rec.running_keys[key] <= 0:
                del rec.running_keys[key]

    def touch_bucket(self, worker_id: str, variant_key: str, key: str, cap: int) -> list[str]:
        """Mark bucket session ``key`` most recently used; the idle ones over ``cap``
        (least recently used first) that the caller should unload."""
        rec = self.workers.get(worker_id)
        if rec is None:
            return []
        lru = rec.buckets.setdefault(variant_key, OrderedDict())
        lru[key] = None
        lru.move_to_end(key)
        idle = [k for k in lru if k != key and k not in rec.running_keys]
        drop = idle[: max(0, len(lru) - cap)]
        for k in drop:
            del lru[k]
        return drop

    def buckets_of(self, worker_id: str, variant_key: str) -> list[str]:
        """Forget (and return) the bucket sessions of a variant being evicted."""
        rec = self.workers.get(worker_id)
        return list(rec.buckets.pop(variant_key, {})) if rec is not None else []

    # ---------------------------------------------------------------- requests
    @property
    def queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    @property
    def pending(self) -> int:
        return len(self._where)

    def submit(self, req: Request, now: float) -> None:
        """Admit ``req`` or raise at once (OverloadedError, ModelNotFoundError)."""
        if self.pending >= self.max_pending:
            self.counters["overloaded"] += 1
            raise OverloadedError(
                f"pool is full ({self.pending} requests pending, limit {self.max_pending}); "
                "retry later or raise max_pending",
                details={"pending": self.pending, "limit": self.max_pending},
            )
        if req.model != LEASE and req.model not in self.models:
            raise ModelNotFoundError(f"model {req.model!r} is not registered with the pool")
        if req.id in self._where:
            raise ValueError(f"request id {req.id} is already pending")
        self._seq += 1
        req.seq, req.enqueued_at = self._seq, now
        self._enqueue(req)
        self.counters["submitted"] += 1

    def _enqueue(self, req: Request) -> None:
        q = self.queues.setdefault(req.model, [])
        key = req.sort_key()
        i = len(q)
        while i > 0 and q[i - 1].sort_key() > key:  # queues are short; stable insertion
            i -= 1
        q.insert(i, req)
        self._where[req.id] = None

    def _dequeue(self, req: Request) -> None:
        q = self.queues[req.model]
        q.remove(req)
        if not q:
            del self.queues[req.model]

    def cancel(self, request_id: int) -> Request | None:
        """Remove a queued request (its slot is free at once); None if not queued."""
        if self._where.get(request_id, 0) is not None:
            return None
        for q in self.queues.values():
            for r in q:
                if r.id == request_id:
                    self._dequeue(r)
                    del self._where[request_id]
                    self.counters["cancelled"] += 1
                    return r
        return None

    def expire(self, now: float) -> list[tuple[Request, WebAccelError]]:
        """Queued requests whose deadline passed: they fail with TIMEOUT before they run."""
        gone: list[tuple[Request, WebAccelError]] = []
        for q in list(self.queues.values()):
            for r in list(q):
                if r.deadline is not None and r.deadline <= now:
                    self._dequeue(r)
                    del self._where[r.id]
                    waited = now - r.enqueued_at
                    gone.append(
                        (
                            r,
                            TimeoutError_(
                                f"request {r.id} for {r.model} waited {waited:.3f} s in the "
                                "queue and passed its deadline before a worker was free; raise "
                                "the timeout or add workers",
                                details={"attempts": r.attempts, "errors": list(r.errors)},
                            ),
                        )
                    )
        self.counters["expired"] += len(gone)
        return gone

    # ----------------------------------------------------------------- routing
    def _variants_for(self, req: Request) -> list[ModelRef | None]:
        if req.model == LEASE:
            return [None]
        info = self.models[req.model]
        if req.constraints.precision is not None:
            return list(info.variants)
        auto = info.auto_precisions or self.policy.auto_precisions
        chosen = [v for v in info.variants if v.precision in auto]
        return list(chosen or info.variants[:1])  # a model with only int8 still runs

    def _is_stream(self, req: Request) -> bool:
        """A generation stream: a session of a text-generation model."""
        return req.kind == SESSION and "text_generation" in (
            req.model_type,
            self._model_type(req),
        )

    def _streams_on(self, rec: WorkerRecord, key: str) -> int:
        """Generation streams of variant ``key`` on ``rec`` now."""
        n = 0
        for aid in rec.sessions:
            a = self.running.get(aid)
            if a is not None and a.variant is not None and a.variant.key == key:
                n += any(self._is_stream(r) for r in a.requests)
        return n

    def _model_type(self, req: Request) -> str | None:
        return req.model_type if req.model == LEASE else self.models[req.model].model_type

    def _static_reject(
        self, req: Request, rec: WorkerRecord, v: ModelRef | None
    ) -> Rejection | None:
        caps = rec.caps
        assert caps is not None
        if v is None:  # a lease: the first backend in the caller's order it serves well
            want = req.constraints
            if want.browser is not None and want.browser != rec.browser:
                return Rejection(Reason.CALLER_BROWSER, f"caller asked for {want.browser}")
            backend, skipped = best_backend(caps, want)
            if backend is None:
                return Rejection(
                    skipped[0].code if skipped else Reason.NO_BACKEND,
                    "; ".join(r.message for r in skipped) or "no backend",
                )
            return None
        return reject_reason(caps, rec.browser, v.backend, v.precision, req.constraints)

    def lease_backend(self, req: Request, worker_id: str) -> str:
        """The backend a lease on ``worker_id`` gets (the caller's first one it serves well)."""
        caps = self.workers[worker_id].caps
        assert caps is not None
        return best_backend(caps, req.constraints)[0] or "wasm"

    def _evictions(self, rec: WorkerRecord, v: ModelRef) -> tuple[str, ...] | Rejection:
        """Keys to unload (LRU first) so ``v`` fits the memory budget, or why it cannot."""
        budget = rec.caps.memory_budget_bytes if rec.caps else None
        if budget is None or v.key in rec.loaded:
            return ()
        need = v.size_bytes or 0
        used = sum(rec.loaded.values())
        if used + need <= budget:
            return ()
        pinned = {self.running[a].variant.key for a in rec.running if self.running[a].variant}  # type: ignore[union-attr]
        evict: list[str] = []
        for key, size in rec.loaded.items():
            if used + need <= budget:
                break
            if key in pinned:
                continue
            evict.append(key)
            used -= size
        if used + need > budget:
            return Rejection(
                Reason.NO_ROOM,
                f"{v.key} needs {need} bytes; budget {budget} is held by running models",
            )
        return tuple(evict)

    def _estimate(self, req: Request, rec: WorkerRecord, v: ModelRef | None) -> tuple[float, str]:
        assert rec.caps is not None
        mtype = self._model_type(req)
        if v is None:
            backend = req.constraints.backend or (
                rec.caps.backends[0] if rec.caps.backends else "wasm"
            )
            f, why = self.policy.prior_factor(mtype, rec.browser, rec.caps, backend, "fp32")
            return f, "prior " + (", ".join(why) or "preferred")
        m = self.latency.get((req.model, rec.browser, v.backend, v.precision))
        if m is not None:
            return m[0], f"measured {m[0]:.1f} ms (n={m[1]})"
        base = self.latency.best_for(req.model)
        f, why = self.policy.prior_factor(mtype, rec.browser, rec.caps, v.backend, v.precision)
        basis = f"best measured {base:.1f} ms" if base is not None else "unmeasured"
        return (base or 1.0) * f, f"prior ({basis}; " + (", ".join(why) or "preferred config") + ")"

    def _route(
        self, req: Request, workers: Iterable[WorkerRecord], now: float, *, busy_ok: bool = False
    ) -> tuple[list[Candidate], dict[str, Rejection], list[str]]:
        """Best candidate per worker; why each other worker is out; notable skipped variants.

        A worker's best candidate is the variant whose backend ranks first in
        the caller's order (all rank equal when none was given), then one
        already loaded, then the lowest estimate.
        """
        cands: list[Candidate] = []
        rejected: dict[str, Rejection] = {}
        notes: list[str] = []
        stream = self._is_stream(req)
        for rec in workers:
            if rec.caps is None or rec.state not in ACCEPTS_WORK:
                rejected[rec.id] = Rejection(Reason.NOT_READY, f"worker is {rec.state.value}")
                continue
            if not busy_ok and not rec.free_for(req.kind, self.run_depth(req.model)):
                rejected[rec.id] = Rejection(Reason.BUSY, "worker is busy")
                continue
            if rec.id in req.avoid:
                rejected[rec.id] = Rejection(Reason.AVOIDED, "the caller's job holds it already")
                continue
            best: Candidate | None = None
            why_not: list[tuple[str, Rejection]] = []
            for v in self._variants_for(req):
                r = self._static_reject(req, rec, v)
                if r is None and v is not None and self.breaker.is_open(req.model, v.backend, now):
                    r = Rejection(
                        Reason.CIRCUIT_OPEN, f"circuit open for {req.model} on {v.backend}"
                    )
                if r is None and v is not None:
                    room = self._evictions(rec, v)
                    r = room if isinstance(room, Rejection) else None
                if r is not None:
                    why_not.append((v.key if v else "lease", r))
                    continue
                est, why = self._estimate(req, rec, v)
                loaded = v is not None and v.key in rec.loaded
                c = Candidate(
                    rec.id,
                    rec.browser,
                    v,
                    loaded,
                    est,
                    len(rec.running),
                    ("loaded; " if loaded else "") + why,
                    resident=len(rec.loaded),
                    rank=req.constraints.rank(v.backend) if v is not None else 0,
                    streams=self._streams_on(rec, v.key) if v is not None and stream else 0,
                )
                if best is None or (c.rank, not c.loaded, c.est_ms) < (
                    best.rank,
                    not best.loaded,
                    best.est_ms,
                ):
                    best = c
            if best is None:
                first = why_not[0][1] if why_not else Rejection(Reason.NO_VARIANT, "no variant")
                rejected[rec.id] = Rejection(
                    first.code, "; ".join(f"{k}: {r}" for k, r in why_not) or first.message
                )
            else:
                cands.append(best)
                notes += [f"{rec.id}: {k}: {r}" for k, r in why_not if r.code in NOTABLE_REASONS]
        return cands, rejected, notes

    def _batch_for(self, head: Request, info: ModelInfo | None) -> list[Request]:
        if info is None or not info.batchable or head.batch_key is None:
            return [head]
        batch, rows = [head], head.rows
        for r in self.queues[head.model]:
            if r is head or r.batch_key != head.batch_key or r.constraints != head.constraints:
                continue
            if rows + r.rows > info.max_batch:
                continue
            batch.append(r)
            rows += r.rows
        return batch

    def _waiting_for_company(
        self, head: Request, info: ModelInfo | None, batch: Sequence[Request], now: float
    ) -> bool:
        if info is None or not info.batchable or head.batch_key is None or head.retries:
            return False
        if sum(r.rows for r in batch) >= info.max_batch:
            return False
        if len(batch) == 1 and not self._model_running(head.model):
            # A lone request while none of its model runs: nothing suggests company
            # is coming (a caller one request at a time), so waiting would only add
            # max_wait to its latency.  Under concurrent load requests queue up
            # behind running ones and the window merges them as before.
            return False
        return now < head.enqueued_at + info.max_wait

    def _model_running(self, model: str) -> bool:
        return any(
            a.kind == RUN and a.requests and a.requests[0].model == model
            for a in self.running.values()
        )

    def next_assignment(self, now: float) -> Assignment | None:
        """The next (requests, worker) to start now, or None (nothing queued, or no free worker)."""
        deepest = MAX_RUN_DEPTH if self.adaptive_depth else 0
        free = [
            w for w in self.workers.values() if w.free_for(RUN, deepest) or w.free_for(SESSION)
        ]
        if not free or not self.queues:
            return None
        scan: list[Request] = []
        for q in self.queues.values():
            scan.extend(q[: self.scan_limit])
        scan.sort(
            key=lambda r: (
                -r.priority,
                self._last_served.get(r.model, -1),
                0 if r.retries else 1,
                r.seq,
            )
        )
        no_route: set[Hashable] = set()
        for req in scan:
            if req.deadline is not None and req.deadline <= now:
                continue  # expire() will answer it
            sig = (req.model, req.constraints, req.model_type, req.batch_key, req.kind, req.avoid)
            if sig in no_route:
                continue
            cands, rejected, notes = self._route(req, free, now)
            if not cands or (req.kind == RUN and self._cheaper_to_wait(req, cands)):
                no_route.add(sig)
                continue
            info = self.models.get(req.model)
            batch = self._batch_for(req, info)
            if self._waiting_for_company(req, info, batch, now):
                no_route.add(sig)
                continue
            pick = choose(
                cands,
                self.rng,
                self.policy.tie_tolerance,
                pack=self.pack_streams and self._is_stream(req),
            )
            return self._start(req, batch, pick, rejected, notes, now)
        return None

    def _observe_overhead(self, model: str, overhead_ms: float, page_ms: float) -> None:
        old = self._overhead.get(model)
        if old is None:
            self._overhead[model] = (max(0.0, overhead_ms), page_ms)
        else:
            a = 0.2
            self._overhead[model] = (old[0] + a * (max(0.0, overhead_ms) - old[0]),
                                     old[1] + a * (page_ms - old[1]))

    def run_depth(self, model: str) -> int:
        """Runs of ``model`` one worker may have in flight (0: just its ``slots``).

        A worker idles between runs for the bridge's round trip (measured on runs
        that had the page to themselves: round trip - page time).  With ``k`` runs
        in flight the next one is already in the page when the current one ends
        once k - 1 runs cover that gap: k = 1 + ceil(overhead / page time), at most
        MAX_RUN_DEPTH.  MiniLM (20 ms in the page, ~3 ms overhead) gets 2, as
        before; a 0.05 ms MLP gets the maximum (pool-saturation benchmark).
        """
        if not self.adaptive_depth:
            return 0
        est = self._overhead.get(model)
        if est is None:
            return 0
        overhead, page = est
        return min(MAX_RUN_DEPTH, 1 + math.ceil(overhead / max(page, 0.01)))

    def _cheaper_to_wait(self, req: Request, cands: Sequence[Candidate]) -> bool:
        """Leave ``req`` queued for a busy worker that has its model loaded when the
        expected wait there is shorter than loading the model on a free worker.

        Without this, every burst copies each model onto every idle worker
        (a multi-second load to save a few tens of ms of queueing).  The wait
        grows with the model's queue, so sustained load still spreads a model
        over more workers once waiting costs more than a load.
        """
        if any(c.loaded for c in cands):
            return False
        load = self.load_cost.get(req.model)
        run = self.latency.best_for(req.model, min_samples=1)  # a rough figure is enough here
        if load is None or run is None:
            return False
        holders = [
            w
            for w in self.workers.values()
            if not w.free
            and w.state in ACCEPTS_WORK
            and any(
                v is not None and v.key in w.loaded and self._static_reject(req, w, v) is None
                for v in self._variants_for(req)
            )
        ]
        if not holders:
            return False
        queue = self.queues.get(req.model, ())
        ahead = len(queue) + max((r.backlog for r in queue), default=req.backlog)
        expected_wait = (ahead / len(holders) + 1) * run
        return load > expected_wait

    def _start(
        self,
        head: Request,
        batch: list[Request],
        pick: Candidate,
        rejected: dict[str, Rejection],
        notes: list[str],
        now: float,
    ) -> Assignment:
        rec = self.workers[pick.worker_id]
        v = pick.variant
        evict: tuple[str, ...] = ()
        if v is not None:
            e = self._evictions(rec, v)
            assert not isinstance(e, Rejection)
            evict = e
        reasons = [
            f"{rec.id} ({rec.browser}"
            + (f"/{v.backend}/{v.precision}" if v else "")
            + f"): {pick.why}"
        ]
        reasons += self._fallback_reasons(head, pick, rejected, now)
        reasons += [n for n in notes if n.startswith(pick.worker_id + ":")]
        fallback = self._backend_fallback(head, rec, v)
        reasons += [f"fallback: {r.message}" for r in fallback]
        self._aid += 1
        a = Assignment(
            self._aid,
            rec.id,
            tuple(batch),
            v,
            v is not None and v.key not in rec.loaded,
            evict,
            tuple(reasons),
            now,
            fallback,
            head.kind,
            alone=rec.runs == 0,
        )
        for r in batch:
            self._dequeue(r)
            self._where[r.id] = a.id
        for key in evict:
            rec.loaded.pop(key, None)
        if v is not None:
            rec.loaded[v.key] = v.size_bytes or 0
            rec.loaded.move_to_end(v.key)
        rec.state = transition(rec.state, WorkerEvent.ASSIGN)
        rec.running.add(a.id)
        if a.kind == SESSION:
            rec.sessions.add(a.id)
        self.running[a.id] = a
        self._tick += 1
        self._last_served[head.model] = self._tick
        self.last_decision[head.model] = a.reasons
        self.counters["assigned"] += 1
        self.counters["batched_requests"] += len(batch) if len(batch) > 1 else 0
        return a

    def _backend_fallback(
        self, req: Request, rec: WorkerRecord, v: ModelRef | None
    ) -> tuple[Rejection, ...]:
        """Why the backends ranked before the chosen one (the caller's order, else
        webgpu > webnn > wasm) were not used on the chosen worker."""
        assert rec.caps is not None
        order = req.constraints.order()
        chosen = v.backend if v is not None else self.lease_backend(req, rec.id)
        if chosen not in order:
            return ()
        precision = v.precision if v is not None else "fp32"
        out = []
        for backend in order[: order.index(chosen)]:
            r = reject_reason(
                rec.caps,
                rec.browser,
                backend,
                precision,
                dataclasses.replace(req.constraints, precision=None),
            )
            if r is None and v is not None and self.breaker.is_open(req.model, backend, 0.0):
                r = Rejection(Reason.CIRCUIT_OPEN, f"circuit open for {req.model}")
            if r is None:  # servable, but this model has no such variant, or it was slower
                has = any(x.backend == backend for x in self._variants_for(req) if x is not None)
                r = Rejection(
                    Reason.NO_VARIANT if not has else Reason.SLOWER,
                    f"{req.model} has no {backend} variant" if not has else "slower by estimate",
                )
            out.append(Rejection(r.code, f"{backend}: {r.message}"))
        return tuple(out)

    def _fallback_reasons(
        self, req: Request, pick: Candidate, rejected: dict[str, Rejection], now: float
    ) -> list[str]:
        """Say why the statically preferred browser was not taken, when it was not."""
        out: list[str] = []
        pref = self.policy.preference(self._model_type(req))
        chosen = self.workers[pick.worker_id]
        if chosen.caps is not None and not prefers(pref, chosen.browser, chosen.caps):
            prefd = [
                w
                for w in self.workers.values()
                if w.caps is not None and prefers(pref, w.browser, w.caps)
            ]
            if not prefd:
                out.append(f"fallback: no {pref} worker in the pool")
            else:
                out.append(
                    "fallback from "
                    + pref
                    + ": "
                    + "; ".join(
                        f"{w.id}: "
                        + (
                            str(rejected[w.id])
                            if w.id in rejected
                            else "busy"
                            if not w.free_for(req.kind)
                            else f"worker is {w.state.value}"
                            if w.state not in ACCEPTS_WORK
                            else "slower by estimate"
                        )
                        for w in prefd
                    )
                )
        for wid, why in rejected.items():
            if why.code in NOTABLE_REASONS:
                out.append(f"{wid}: {why}")
        return out

    # ---------------------------------------------------------------- outcomes
    def _release(self, a: Assignment, now: float) -> None:
        rec = self.workers.get(a.worker_id)
        del self.running[a.id]
        if rec is None:
            return
        rec.running.discard(a.id)
        rec.sessions.discard(a.id)
        if rec.state in TERMINAL:  # worker_lost() is failing its assignments
            return
        ev = WorkerEvent.RELEASE if rec.running else WorkerEvent.RELEASE_LAST
        rec.state = transition(rec.state, ev)
        if not rec.running:
            rec.idle_since = now

    def finish(
        self,
        assignment_id: int,
        now: float,
        *,
        ms: float | None = None,
        load_ms: float | None = None,
        page_ms: float | None = None,
    ) -> Outcome:
        """The assignment succeeded; ``ms`` (its round trip) feeds the latency table,
        ``load_ms`` (when it had to load the model first) the load-cost estimate,
        ``page_ms`` (the page's own run time) the run depth (:meth:`run_depth`)."""
        a = self.running[assignment_id]
        if load_ms is not None:
            model = a.requests[0].model
            old = self.load_cost.get(model)
            self.load_cost[model] = load_ms if old is None else 0.7 * old + 0.3 * load_ms
        self._release(a, now)
        rec = self.workers.get(a.worker_id)
        if rec is not None:
            rec.served += 1
        if a.variant is not None:
            self.breaker.success(a.requests[0].model, a.variant.backend)
            if ms is not None and rec is not None:
                key = (a.requests[0].model, rec.browser, a.variant.backend, a.variant.precision)
                self.latency.observe(key, ms)
            if ms is not None and page_ms is not None and a.alone and not a.load:
                self._observe_overhead(a.requests[0].model, ms - page_ms, page_ms)
        for r in a.requests:
            del self._where[r.id]
        self.opened.discard(assignment_id)
        self.counters["done"] += len(a.requests)
        return Outcome(done=list(a.requests))

    def fail(self, assignment_id: int, now: float, error: WebAccelError) -> Outcome:
        """The assignment failed with ``error``: retry elsewhere when that can help."""
        out = Outcome()
        a = self.running.get(assignment_id)
        if a is None:
            return out
        self._release(a, now)
        rec = self.workers.get(a.worker_id)
        if a.variant is not None and rec is not None and a.load:
            rec.loaded.pop(a.variant.key, None)  # the load may not have happened
        if (
            a.variant is not None
            and isinstance(error, _BREAKER_ERRORS)
            and self.breaker.failure(a.requests[0].model, a.variant.backend, now)
        ):
            self.counters["circuit_opened"] += 1
        retry = isinstance(error, _RETRY_ELSEWHERE) or (
            isinstance(error, TimeoutError_) and error.details.get("worker_suspect")
        )
        # An opened session belongs to its caller now: it is not replayed here
        # (a stream fails over in the pool's handle, with what it produced).
        retry = retry and assignment_id not in self.opened
        self.opened.discard(assignment_id)
        for r in a.requests:
            del self._where[r.id]
            r.errors.append(f"{error.code}: {error.message}")
            expired = r.deadline is not None and r.deadline <= now
            if retry and not expired and r.retries < self.max_retries and r.model != LEASE:
                r.retries += 1
                self._enqueue(r)
                out.retried.append(r)
                self.counters["retried"] += 1
                continue
            if retry and expired:
                err: WebAccelError = TimeoutError_(
                    f"request {r.id} passed its deadline after {r.attempts} attempt(s); last: "
                    f"{error.message}",
                    details={"attempts": r.attempts, "errors": list(r.errors)},
                )
            elif retry and r.model != LEASE:
                err = type(error)(
                    f"request {r.id} failed {r.attempts} time(s) (max_retries={self.max_retries}); "
                    f"last: {error.message}",
                    details={"attempts": r.attempts, "errors": list(r.errors)},
                )
            else:
                err = error
            out.failed.append((r, err))
            self.counters["failed"] += 1
        return out

    def assignment_of(self, request_id: int) -> int | None:
        return self._where.get(request_id)

    def is_pending(self, request_id: int) -> bool:
        return request_id in self._where

    # ------------------------------------------------------------ unservable
    def _could_serve(self, req: Request, rec: WorkerRecord) -> bool:
        if rec.caps is None:
            return True  # still launching: unknown
        return any(self._static_reject(req, rec, v) is None for v in self._variants_for(req))

    def unservable(
        self, now: float, launchable: Sequence[str]
    ) -> list[tuple[Request, WebAccelError]]:
        """Queued requests that no worker, present or launchable, could ever run: fail them now."""
        live = [
            w for w in self.workers.values() if w.state in ALIVE and w.state != WorkerState.DRAINING
        ]
        total = sum(1 for w in self.workers.values() if w.state in ALIVE)
        families_present = {w.browser for w in live}
        room = total < self.scaling.max_workers
        out: list[tuple[Request, WebAccelError]] = []
        fams = self._launchable(now, launchable)
        verdict: dict[Hashable, bool] = {}  # requests share few signatures: decide once each
        for q in list(self.queues.values()):
            for r in list(q):
                sig = (r.model, r.constraints, r.model_type)
                if sig not in verdict:
                    new_families = [
                        f
                        for f in fams
                        if f not in families_present and r.constraints.browser in (None, f)
                    ]
                    verdict[sig] = any(self._could_serve(r, w) for w in live) or bool(
                        room and new_families
                    )
                if verdict[sig]:
                    continue
                self._dequeue(r)
                del self._where[r.id]
                why = (
                    "; ".join(
                        f"{w.id}: {self._route(r, [w], now, busy_ok=True)[1].get(w.id)}"
                        for w in live
                    )
                    or "no workers"
                )
                out.append(
                    (
                        r,
                        BackendUnavailableError(
                            f"no worker can run {r.model} with {r.constraints}: {why}. "
                            "Relax browser/backend/precision or add a capable browser",
                            details={"attempts": r.attempts},
                        ),
                    )
                )
        return out

    # ----------------------------------------------------------------- scaling
    def _launchable(self, now: float, launchable: Sequence[str]) -> list[str]:
        return [f for f in launchable if self._launch_failed.get(f, -math.inf) <= now]

    def scaling_plan(
        self, now: float, launchable: Sequence[str], *, adaptive: bool = True
    ) -> ScalePlan:
        """Workers to launch (families) and to retire (ids), per :class:`ScalingPolicy`."""
        sp = self.scaling
        ok = self._launchable(now, launchable)
        alive = [w for w in self.workers.values() if w.state in ALIVE]
        serving = [w for w in alive if w.state != WorkerState.DRAINING]
        launching = [w for w in alive if w.state == WorkerState.LAUNCHING]
        room = sp.max_workers - len(alive)
        launch: list[str] = []
        why: list[str] = []
        if not ok:
            room = 0
        default = (
            self.policy.default_browser if self.policy.default_browser in ok else (ok or [""])[0]
        )
        # Floor (also replaces lost workers).
        while room > 0 and len(serving) + len(launch) < sp.min_workers:
            launch.append(default)
            room -= 1
            why.append(f"below the floor of {sp.min_workers}")
        queued = self.queued
        if queued:  # and what callers said is behind their queued requests
            queued += max(r.backlog for q in self.queues.values() for r in q)
        if adaptive and queued and room > 0:
            oldest = min((r.enqueued_at for q in self.queues.values() for r in q), default=now)
            # Time spent waiting for a worker that was still starting is no sign that
            # the workers are too few: count the wait from the newest worker's arrival.
            oldest = max(oldest, self.last_ready_at)
            capacity = len(serving) + len(launch)
            want = math.ceil(queued / sp.queue_per_worker) - capacity
            if want <= 0 and not launching and not launch and now - oldest >= sp.max_queue_wait:
                want = 1
                why.append(f"oldest request waited {now - oldest:.3f} s")
            elif want > 0:
                why.append(f"{queued} queued for {capacity} workers")
            for fam in self._families_wanted(ok, default, max(0, min(want, room))):
                launch.append(fam)
        drain: list[str] = []
        if adaptive and not queued:
            floor = sp.min_workers
            n = len(serving)
            for w in sorted(serving, key=lambda w: w.idle_since):
                if n <= floor:
                    break
                if w.state == WorkerState.READY and now - w.idle_since >= sp.idle_timeout:
                    drain.append(w.id)
                    n -= 1
                    why.append(f"{w.id} idle {now - w.idle_since:.1f} s")
        return ScalePlan(tuple(launch), tuple(drain), tuple(why))

    def _families_wanted(self, ok: Sequence[str], default: str, n: int) -> list[str]:
        """Which families to launch for the queue: the hard or preferred family of most requests."""
        if n <= 0:
            return []
        votes: Counter[str] = Counter()
        for q in self.queues.values():
            for r in q:
                fam = r.constraints.browser or self.policy.preference(self._model_type(r))
                votes[fam if fam in ok else default] += r.rows
        ranked = [f for f, _ in votes.most_common()] or [default]
        return [ranked[i % len(ranked)] for i in range(n)]

    def next_wakeup(self, now: float) -> float | None:
        """When something changes by time alone (deadline, batch window, idle retire, breaker)."""
        times: list[float] = []
        for q in self.queues.values():
            for r in q:
                if r.deadline is not None:
                    times.append(r.deadline)
            head = q[0]
            info = self.models.get(head.model)
            if info is not None and info.batchable:
                times.append(head.enqueued_at + info.max_wait)
            times.append(max(head.enqueued_at, self.last_ready_at) + self.scaling.max_queue_wait)
        for w in self.workers.values():
            if w.state == WorkerState.READY:
                times.append(w.idle_since + self.scaling.idle_timeout)
        reopen = self.breaker.reopens_at()
        if reopen is not None:
            times.append(reopen)
        times += self._launch_failed.values()
        future = [t for t in times if t > now]
        return min(future) if future else None

    # ------------------------------------------------------------- explaining
    def explain(
        self, model: str, constraints: Constraints | None = None, now: float = 0.0
    ) -> dict[str, Any]:
        """Why ``model`` would go where it goes: preference, each worker's verdict, measurements."""
        if model not in self.models:
            raise ModelNotFoundError(f"model {model!r} is not registered with the pool")
        info = self.models[model]
        probe = Request(id=-1, model=model, constraints=constraints or Constraints())
        cands, rejected, notes = self._route(probe, self.workers.values(), now, busy_ok=True)
        return {
            "model": model,
            "model_type": info.model_type,
            "preferred_browser": self.policy.preference(info.model_type),
            "variants": [f"{v.backend}/{v.precision}" for v in info.variants],
            "candidates": [
                {
                    "worker": c.worker_id,
                    "browser": c.browser,
                    "variant": f"{c.variant.backend}/{c.variant.precision}" if c.variant else None,
                    "loaded": c.loaded,
                    "est_ms": round(c.est_ms, 3),
                    "why": c.why,
                }
                for c in sorted(cands, key=lambda c: (not c.loaded, c.est_ms, c.worker_id))
            ],
            "rejected": {
                wid: {"code": r.code.value, "message": r.message} for wid, r in rejected.items()
            },
            "skipped_variants": notes,
            "measured": self.latency.snapshot(model),
            "last_decision": list(self.last_decision.get(model, ())),
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "workers": {
                w.id: {
                    "browser": w.browser,
                    "state": w.state.value,
                    "running": len(w.running) - len(w.sessions),
                    "sessions": len(w.sessions),
                    "loaded": list(w.loaded),
                    "served": w.served,
                }
                for w in self.workers.values()
            },
            "queued": {m: len(q) for m, q in self.queues.items()},
            "running": len(self.running),
            "pending": self.pending,
            "counters": dict(self.counters),
        }
