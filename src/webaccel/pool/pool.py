"""The async resource pool: an actor that owns :class:`~webaccel.pool.state.PoolState`.

Shape (TGI's queue, STYLE.md): the public methods are a *handle*.  They admit
a request without waiting (a full pool raises :class:`OverloadedError` at
once), post a command to the actor and await a future.  One task -- the
actor -- owns the state and is the only code that changes it; worker I/O
(load, run, unload, launch, close) runs in short tasks that post their result
back as commands.  So no lock guards the state, and a decision and its
bookkeeping never interleave with another.

Seams (both injected, so the pool needs neither a browser nor a model registry
to be tested):

* ``launcher: WorkerLauncher`` -- ``async launcher(family) -> WorkerTransport``
  (``webaccel.pool.transport``).  Families: "chromium", "firefox", ...
* ``resolver: ModelResolver`` -- ``resolver(model_name, model_type) ->
  ResolvedModel`` (sync or async; ``webaccel.pool.resolver``).  It turns a
  name into its variants (:class:`ModelRef` per backend/precision), batching
  rules and optional ``preprocess(inputs) -> {name: array}`` /
  ``postprocess(outputs, inputs) -> result``.  Called once per name, cached.

Usage::

    async with ResourcePool(max_connections=4, launcher=launch, resolver=registry) as pool:
        r = await pool.run_inference("minilm", {"input_ids": ids, "attention_mask": mask})
        rs = await pool.execute_concurrent([("minilm", a), ("vit", b)])
        async with pool.get_connection("vision", "webgpu") as lease:
            await lease.worker.run(...)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from webaccel.errors import (
    BackendUnavailableError,
    BrowserLaunchError,
    CancelledError_,
    InternalError,
    InvalidInputError,
    LoadFailedError,
    OutOfMemoryError,
    OverloadedError,
    TimeoutError_,
    WebAccelError,
    WorkerLostError,
    WrongAnswerError,
)
from webaccel.pool import commands as cmd
from webaccel.pool.batching import batch_signature
from webaccel.pool.execution import WorkerIO, _as_error
from webaccel.pool.lifecycle import WorkerState
from webaccel.pool.memory import MemoryProbe, worker_rss
from webaccel.pool.resolver import ModelResolver, ResolvedModel, StaticResolver, call_resolver
from webaccel.pool.results import InferenceResult, Lease, WorkerSession
from webaccel.pool.routing import (
    RoutingPolicy,
    WorkerCaps,
    constraints_for,
    launch_family,
    normalize_browser,
)
from webaccel.pool.state import (
    LEASE,
    SESSION,
    Assignment,
    Outcome,
    PoolState,
    Request,
    ScalingPolicy,
)
from webaccel.pool.transport import (
    LoadInfo,
    RunResult,
    StreamEvent,
    WorkerLauncher,
    WorkerTransport,
)
from webaccel.pool.verify import VerifyPolicy

log = logging.getLogger(__name__)

_OPTION_KEYS = frozenset({"precision", "output_names"})


class MetricsSink(Protocol):
    """What the pool reports to (``webaccel.metrics.store.MetricsStore`` fits)."""

    def record_inference(self, model: str, *, round_trip_ms: float, **kw: Any) -> None: ...

    def record_model_load(self, model: str, *, ms: float, **kw: Any) -> None: ...

    def record_worker(self, worker_id: str, browser: str, **kw: Any) -> None: ...

    def record_generation(self, model: str, *, task: str, **kw: Any) -> None: ...

    def record_worker_memory(self, worker_id: str, browser: str | None, **kw: Any) -> None: ...

    def record_recovery(self, seconds: float, **kw: Any) -> None: ...


@dataclass(eq=False)
class _Ticket:
    request: Request
    future: asyncio.Future[Any]
    inputs: dict[str, np.ndarray] | None
    original: Any
    model: ResolvedModel | None
    submitted_at: float
    output_names: list[str] | None = None


class _LeaseContext:
    def __init__(self, pool: ResourcePool, req: Request) -> None:
        self._pool, self._req = pool, req
        self._aid: int | None = None

    async def __aenter__(self) -> Lease:
        lease, self._aid = await self._pool._submit(self._req, None, None, None)
        return lease

    async def __aexit__(self, *exc: object) -> None:
        if self._aid is not None:
            self._pool._post(cmd.Release(self._aid))


class _SessionContext:
    """``async with pool.session(...) as s``: the session ends (and is recorded) on exit."""

    def __init__(self, pool: ResourcePool, req: Request, wait: float, record: bool) -> None:
        self._pool, self._req, self._wait, self._record = pool, req, wait, record
        self._session: WorkerSession | None = None

    async def __aenter__(self) -> WorkerSession:
        pool = self._pool
        await pool._ensure_started()
        model = await pool.resolve(self._req.model, self._req.model_type)
        self._req.model, self._req.model_type = model.name, None
        self._req.deadline = pool._clock() + self._wait
        self._session = await pool._submit(self._req, None, None, model)
        return self._session

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        s = self._session
        if s is None:
            return
        err = _as_error(exc, f"session of {s.model} on {s.worker_id}") if exc else None
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            err = CancelledError_(f"the session of {s.model} was cancelled by its caller")
        self._pool._end_session(s, err, record=self._record)


class ResourcePool(WorkerIO):
    """Many workers, many models, nothing lost.  See the module docstring."""

    def __init__(
        self,
        max_connections: int = 4,
        browser_preferences: Mapping[str, str] | None = None,
        default_browser: str = "chrome",
        adaptive_scaling: bool = True,
        connection_timeout: float = 30.0,
        max_retries: int = 3,
        *,
        launcher: WorkerLauncher | None = None,
        resolver: ModelResolver | None = None,
        min_connections: int = 1,
        max_pending: int = 1024,
        request_timeout: float = 60.0,
        load_timeout: float = 300.0,  # a 540 MB generator took 100 s to load on a busy 2-core box
        idle_timeout: float = 30.0,
        heartbeat_interval: float = 1.0,
        slots_per_worker: int = 1,
        adaptive_depth: bool = True,
        session_slots: int = 4,
        memory_budget_bytes: int | None = None,
        metrics: MetricsSink | None = None,
        launchable: Sequence[str] | None = None,
        scaling: ScalingPolicy | None = None,
        policy: RoutingPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        seed: int = 0,
        graph_capture: bool = True,
        bucket_sessions: int = 4,
        verify: str | VerifyPolicy = "sample",
        warmup_runs: int = 12,
        warmup_budget_s: float = 1.0,
        memory_interval: float = 5.0,
        memory_probe: MemoryProbe | None = worker_rss,
        pack_streams: bool = False,
    ) -> None:
        """``launcher``: ``async launcher(family) -> WorkerTransport``; by default
        local headless browsers behind a loopback server this pool owns (and,
        unless ``resolver`` is given, the model registry resolves names).
        ``graph_capture``: run models that declare shape buckets as captured
        sessions of fixed shape on JSEP WebGPU workers (see
        :mod:`webaccel.pool.buckets`), at most ``bucket_sessions`` per model
        and worker (least recently used unloaded first).  ``session_slots``:
        sessions (streams) one worker serves at once; the page decodes its
        generation streams of one model as one batch (generate.mjs), other
        sessions' steps alternate.  ``verify``: how answers are checked against a model's
        trusted reference (:mod:`webaccel.pool.verify`): "sample" (default: the
        first answer of every loaded variant, then 5% of a remote worker's),
        "all" (every answer, before it is delivered), "off", or a
        :class:`VerifyPolicy`.
        ``warmup_runs``: dummy runs (a model's ``warmup_inputs``,
        cycled) a worker makes right after loading it, before its first
        request, so V8's WASM tier-up is not paid by callers (0: none); it
        stops early after ``warmup_budget_s`` (the request that caused the
        load is waiting for it).
        ``slots_per_worker``: runs one page may have in flight (the next one waits
        in the page, so the worker never idles for a round trip); with
        ``adaptive_depth`` a model whose runs are short next to the bridge's round
        trip may have more, up to 8 (``PoolState.run_depth``).
        ``memory_probe``: ``probe(worker) -> RSS bytes | None``, what a worker takes
        on this host (default: its local browser process tree,
        :mod:`webaccel.pool.memory`; None: never measure).  The heartbeat task
        samples every worker every ``memory_interval`` seconds (0: never), and
        each model load is measured before and after (its RSS growth); both go to
        ``metrics`` (``record_worker_memory``, ``record_model_load(rss_delta_bytes=)``)
        and the latest and peak per worker show in ``stats()["memory"]``.
        ``pack_streams``: placement of generation streams (generate.mjs batches a
        page's concurrent streams of one model into one decode step).  Off (the
        default), a stream goes to the least loaded worker holding its model, so
        streams spread over the workers that hold it and each page batches its
        share; a worker that does not hold the model gets streams only once the
        holders' ``session_slots`` are full (loading SmolLM2's 540 MB on another page
        takes longer than a burst of short streams takes on one page at batch 4).  On: a stream
        joins the page already decoding the most streams of its model.  Measured
        with SmolLM2-135M fp32 on wasm, this 2-core machine, 4 greedy streams of
        32 tokens against the same prompts one at a time (``webaccel bench
        generation -o streams=4 -o workers=2 [-o pack=true]``, back to back, the
        lead's jobs beside): two workers at batch 2 each 2.74x (28.0-39.8 tokens/s,
        1-min load 5.3-3.9) and 2.82x (32.5-35.3, load 1.5-2.2); one worker at
        batch 4 2.07x (20.0-25.8, load 1.7-5.2) and 2.28x (27.8-28.1, load 2-3).
        Two single-thread pages use both cores; a batch row costs ~20 ms a step
        on top of ~73 ms, so batch 4 on one core gains less."""
        self._host: Any = None
        if launcher is None:
            from webaccel.hosting import BrowserHost  # the browser stack, only when asked for

            self._host = BrowserHost(connection_timeout=connection_timeout)
            launcher = self._host.launch
            resolver = resolver if resolver is not None else self._host.resolve
        if max_connections < 1:
            raise InvalidInputError("max_connections must be >= 1")
        default = normalize_browser(default_browser) or "chromium"
        prefs = {k: normalize_browser(v) or default for k, v in (browser_preferences or {}).items()}
        self.policy = policy or RoutingPolicy(default_browser=default)
        if browser_preferences is not None:
            self.policy.browser_preferences.update(prefs)
        self.policy.default_browser = default
        if scaling is None:
            lo = min(min_connections, max_connections) if adaptive_scaling else max_connections
            scaling = ScalingPolicy(
                min_workers=lo, max_workers=max_connections, idle_timeout=idle_timeout
            )
        self.scaling = scaling
        self.adaptive_scaling = adaptive_scaling
        self.connection_timeout = connection_timeout
        self.request_timeout = request_timeout
        self.load_timeout = load_timeout
        self.heartbeat_interval = heartbeat_interval
        self.slots_per_worker = slots_per_worker
        self.session_slots = max(1, session_slots)
        # Model bytes a worker may hold before LRU eviction, unless it reports its own.
        self.memory_budget_bytes = memory_budget_bytes
        # Models running split into pipeline stages (webaccel.sharding): what and why.
        self.sharded: dict[str, dict[str, Any]] = {}
        self._metrics = metrics
        self.max_pending = max_pending
        # "edge" is a preference for WebNN, not something we can start by that name.
        fams = (
            list(launchable)
            if launchable is not None
            else [default, *self.policy.browser_preferences.values()]
        )
        self.launchable: list[str] = list(dict.fromkeys(launch_family(f) or f for f in fams))
        self._launcher = launcher
        self._resolver: ModelResolver = resolver if resolver is not None else StaticResolver()
        self._clock = clock
        self._state = PoolState(
            max_pending=max_pending,
            max_retries=max_retries,
            policy=self.policy,
            scaling=scaling,
            seed=seed,
            adaptive_depth=adaptive_depth,
        )
        self._state.pack_streams = pack_streams
        self._workers: dict[str, WorkerTransport] = {}
        self._models: dict[str, ResolvedModel] = {}
        self._tickets: dict[int, _Ticket] = {}
        self._exec: dict[int, asyncio.Task[None]] = {}
        self._aux: set[asyncio.Task[Any]] = set()
        self._launch_tasks: set[asyncio.Task[None]] = set()
        # One load of a key per page at a time (I/O coordination; what the page
        # holds is residency, kept in the state's WorkerRecord).
        self._load_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.verify = verify if isinstance(verify, VerifyPolicy) else VerifyPolicy(mode=verify)
        self.quarantined: dict[str, dict[str, Any]] = {}  # worker id -> why, when
        self._verify_rng = random.Random(seed)
        self.graph_capture = graph_capture
        self.warmup_runs = max(0, warmup_runs)
        self.warmup_budget_s = warmup_budget_s
        # worker id -> model key -> what its warm-up took (shown by explain()).
        self.warmups: dict[str, dict[str, dict[str, Any]]] = {}
        self.bucket_sessions = max(1, bucket_sessions)
        self._inbox: deque[cmd.Command] = deque()
        self._wake: asyncio.Event | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._actor: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None
        self._admitted = 0
        self._ids = itertools.count(1)
        self._launch_ids = itertools.count(1)
        self._launch_errors: deque[str] = deque(maxlen=8)
        self._closing = False
        self._closed = False
        self.events: deque[tuple[float, str, str]] = deque(maxlen=1000)  # (t, kind, detail)
        # Recovery: a worker lost -> the next worker ready (seconds), oldest loss first;
        # each loss as (when, which worker, why).
        self._lost_at: deque[tuple[float, str, str]] = deque()
        self.recoveries: deque[float] = deque(maxlen=100)
        self.memory_interval = memory_interval
        self.memory_probe = memory_probe
        # worker id -> {"rss_bytes", "peak_rss_bytes", "samples", "at"}: its latest and
        # peak memory as measured (see webaccel.pool.memory); live workers only.
        self.memory: dict[str, dict[str, Any]] = {}
        self._unmeasured: set[str] = set()  # workers whose "not measured" is recorded

    # ================================================================ lifecycle
    async def __aenter__(self) -> ResourcePool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self, *, wait: bool = True) -> None:
        """Start the actor and launch the floor of workers; wait until one is ready."""
        if self._actor is not None:
            return
        if self._closed:
            raise BackendUnavailableError("this pool is closed; create a new one")
        if self._host is not None:
            await self._host.start()
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._actor = asyncio.create_task(self._run(), name="webaccel-pool-actor")
        self._monitor = asyncio.create_task(self._heartbeats(), name="webaccel-pool-heartbeat")
        self._post(cmd.Tick())
        if wait:
            await self._wait_ready(self.scaling.min_workers)

    async def _wait_ready(self, n: int) -> None:
        assert self._changed is not None
        if n <= 0:  # a pool with no floor launches on demand
            return
        deadline = self._clock() + self.connection_timeout
        while True:
            ready = sum(
                1
                for w in self._state.workers.values()
                if w.state in (WorkerState.READY, WorkerState.BUSY)
            )
            launching = sum(
                1 for w in self._state.workers.values() if w.state == WorkerState.LAUNCHING
            )
            if ready >= max(1, n) or (ready and not launching):
                return
            if not launching and self._launch_errors:
                raise BrowserLaunchError(
                    "no worker could be launched: " + " | ".join(self._launch_errors)
                )
            left = deadline - self._clock()
            if left <= 0:
                if ready:
                    return
                raise TimeoutError_(f"no worker was ready within {self.connection_timeout} s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def close(self, *, drain: bool = True, timeout: float = 10.0) -> None:
        """Stop admitting; let pending work finish (``drain``, up to ``timeout``), then
        cancel the rest with CANCELLED and close every worker."""
        if self._closed:
            return
        self._closing = True
        if self._actor is None:
            self._closed = True
            if self._host is not None:
                await self._host.close()
            return
        if drain and self._tickets:
            end = self._clock() + timeout
            while self._tickets and self._clock() < end:
                await asyncio.sleep(0.005)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._post(cmd.Close(done))
        await done
        self._closed = True
        if self._host is not None:
            await self._host.close()

    # ================================================================== handle
    def _post(self, command: cmd.Command) -> None:
        self._inbox.append(command)
        if self._wake is not None:
            self._wake.set()

    async def _ensure_started(self) -> None:
        if self._actor is not None and self._actor.done() and not self._closed:
            raise InternalError(
                "the pool's scheduler stopped unexpectedly; close this pool and create a new one"
            )
        if self._closing or self._closed:
            raise BackendUnavailableError("the pool is closing or closed; create a new one")
        if self._actor is None:
            await self.start(wait=False)

    async def resolve(self, model_name: str, model_type: str | None = None) -> ResolvedModel:
        m = self._models.get(model_name)
        if m is None:
            m = await call_resolver(self._resolver, model_name, model_type)
            self._models[model_name] = m
        return m

    def register_model(self, model: ResolvedModel) -> None:
        """Teach the pool a model without a resolver round trip."""
        self._models[model.name] = model

    async def run_inference(
        self,
        model_name: str,
        inputs: Any,
        model_type: str | None = None,
        platform: str | None = None,
        browser: str | None = None,
        options: Mapping[str, Any] | None = None,
        *,
        priority: int = 0,
        timeout: float | None = None,
        priority_list: Sequence[str] | None = None,
        allow_software: bool = False,
        run_timeout: float | None = None,
        backlog: int = 0,
    ) -> InferenceResult:
        """Run one request; raises OverloadedError at once when the pool is full.

        ``platform``: webgpu | webnn | wasm | auto, tried first with the other
        backends as fallbacks; ``priority_list``: the exact backend order
        instead; a software WebGPU adapter counts only with ``allow_software``
        (see :class:`~webaccel.pool.routing.Constraints`).  ``browser``: a
        family or None; ``priority``: higher first; ``timeout``: seconds until
        its deadline (default ``request_timeout``), queue wait included;
        ``run_timeout``: how long one attempt may run before its worker counts
        as hung (default ``request_timeout``; a caller that knows its run is
        long, e.g. a big batch on a software adapter, says so here).
        ``backlog``: how many more requests of the same job the caller holds
        back to submit later (paced); counted as demand when scaling and when
        deciding whether to load the model on another worker.
        """
        await self._ensure_started()
        opts = dict(options or {})
        unknown = set(opts) - _OPTION_KEYS
        if unknown:
            raise InvalidInputError(
                f"unknown option(s) {sorted(unknown)} for run_inference; allowed: "
                f"{sorted(_OPTION_KEYS)}"
            )
        model = await self.resolve(model_name, model_type)
        raw = model.preprocess(inputs) if model.preprocess is not None else inputs
        tensors = _as_tensors(raw)
        if model.batchable:
            key, rows = batch_signature(tensors, model.batch_axis)
        else:
            key, rows = None, 1
        now = self._clock()
        req = Request(
            id=next(self._ids),
            model=model.name,
            priority=priority,
            deadline=now + (timeout if timeout is not None else self.request_timeout),
            constraints=constraints_for(
                browser=browser,
                platform=platform,
                priority_list=priority_list,
                precision=opts.get("precision"),
                allow_software=allow_software,
            ),
            batch_key=key,
            rows=rows,
            run_timeout=run_timeout,
            backlog=max(0, int(backlog)),
        )
        names = opts.get("output_names") or (
            list(model.output_names) if model.output_names else None
        )
        result: InferenceResult = await self._submit(req, tensors, inputs, model, names)
        return result

    def get_connection(
        self,
        model_type: str | None,
        platform: str | None = None,
        browser: str | None = None,
        *,
        priority: int = 0,
        timeout: float | None = None,
        allow_software: bool = False,
    ) -> _LeaseContext:
        """Lease a whole worker: ``async with pool.get_connection("vision", "webgpu") as lease``.

        The worker runs nothing else until the block ends.  ``platform`` is a
        demand here (a lease is for callers that drive the page themselves).
        """
        req = Request(
            id=next(self._ids),
            model=LEASE,
            priority=priority,
            deadline=self._clock() + (timeout if timeout is not None else self.connection_timeout),
            constraints=constraints_for(
                browser=browser,
                priority_list=[platform] if platform not in (None, "", "auto") else None,
                allow_software=allow_software,
            ),
            model_type=model_type,
        )
        return _LeaseContext(self, req)

    def session(
        self,
        model_name: str,
        *,
        model_type: str | None = None,
        platform: str | None = None,
        priority_list: Sequence[str] | None = None,
        browser: str | None = None,
        precision: str | None = None,
        allow_software: bool = False,
        priority: int = 0,
        timeout: float | None = None,
        record: bool = True,
        avoid_workers: Sequence[str] = (),
    ) -> _SessionContext:
        """``async with pool.session("smollm2") as s``: one worker with the model
        loaded, held for a multi-step job (a stream, a decoder loop).

        Scheduled like any request (priority, deadline for the wait, routing,
        retries of a failed load elsewhere); it holds one of the worker's
        ``session_slots`` until the block ends, and its end is recorded in
        metrics (figures from :meth:`WorkerSession.report`) unless ``record``
        is False.  Runs inside go through the pool, so a lost worker raises
        WorkerLostError there.  ``avoid_workers``: worker ids this session must
        not be placed on (a pipeline puts each stage on its own worker).
        """
        req = Request(
            id=next(self._ids),
            model=model_name,
            priority=priority,
            deadline=None,  # set when the session is entered
            constraints=constraints_for(
                browser=browser,
                platform=platform,
                priority_list=priority_list,
                precision=precision,
                allow_software=allow_software,
            ),
            model_type=model_type,
            kind=SESSION,
            avoid=frozenset(avoid_workers),
        )
        wait = timeout if timeout is not None else self.connection_timeout
        return _SessionContext(self, req, wait, record)

    async def stream(
        self,
        model_name: str,
        inputs: Mapping[str, np.ndarray],
        *,
        options: dict[str, Any] | None = None,
        resume: Callable[[list[int]], tuple[Mapping[str, np.ndarray], dict[str, Any]]]
        | None = None,
        task: str = "text_generation",
        prompt_tokens: int = 0,
        kind: str = "generate",
        run_timeout: float = 900.0,
        on_session: Callable[[WorkerSession], None] | None = None,
        **route: Any,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Stream a loop that runs in the page (``kind="generate"``), with failover.

        Yields the page's steps and then one ``final`` event.  When the
        worker dies mid-stream and ``resume`` is given, ``resume(tokens so
        far)`` gives the inputs and options to go on with (for generation:
        prompt + those tokens, fewer tokens left) and the stream continues
        on another worker -- the caller sees one uninterrupted stream.
        ``route``: :meth:`session` keywords.  One metrics row per stream
        (tokens, time to first token, tokens/s, failovers).
        """
        feeds, opts = inputs, dict(options or {})
        tokens: list[int] = []
        failovers = 0
        t0 = self._clock()
        t_first: float | None = None
        t_last = t0
        last: WorkerSession | None = None
        final: dict[str, Any] = {}
        error: WebAccelError | None = None
        try:
            while True:
                try:
                    async with self.session(model_name, record=False, **route) as s:
                        last = s
                        if on_session is not None:
                            on_session(s)
                        steps = s.stream(feeds, kind=kind, options=opts, timeout=run_timeout)
                        async with contextlib.aclosing(steps):  # closing it cancels the page loop
                            async for ev in steps:
                                if ev.final:
                                    final = ev.data
                                    yield ev
                                    return
                                if "token" in ev.data:
                                    t_last = self._clock()
                                    t_first = t_first if t_first is not None else t_last
                                    tokens.append(int(ev.data["token"]))
                                yield ev
                    return
                except WorkerLostError as exc:
                    if resume is None or failovers >= self._state.max_retries:
                        raise
                    failovers += 1
                    self._state.counters["stream_failovers"] += 1
                    self._event(
                        "failover", f"{model_name}: after {len(tokens)} tokens: {exc.message}"
                    )
                    feeds, opts = resume(list(tokens))
        except BaseException as exc:
            error = _as_error(exc, f"stream of {model_name}")
            raise
        finally:
            decode_s = t_last - t_first if t_first is not None else 0.0
            self._metric(
                "record_generation",
                model_name,
                task=task,
                worker_id=last.worker_id if last else None,
                browser=last.browser if last else None,
                backend=last.backend if last else None,
                precision=last.precision if last else None,
                prompt_tokens=prompt_tokens,
                completion_tokens=len(tokens),
                ttft_ms=(t_first - t0) * 1000 if t_first is not None else None,
                total_ms=(self._clock() - t0) * 1000,
                tokens_per_s=(len(tokens) - 1) / decode_s
                if len(tokens) > 1 and decode_s > 0
                else None,
                queue_wait_ms=last.queue_ms if last else None,
                failovers=failovers,
                finish_reason=final.get("finish_reason")
                if error is None
                else ("cancelled" if isinstance(error, CancelledError_) else None),
                error_code=error.code
                if error is not None and not isinstance(error, CancelledError_)
                else None,
            )

    async def execute_concurrent(
        self,
        items: Sequence[tuple[Any, ...]],
        *,
        return_exceptions: bool = True,
        priority: int = 0,
        timeout: float | None = None,
    ) -> list[Any]:
        """Run ``[(model_name, inputs) | (model_name, inputs, options), ...]`` at once.

        Results come back in order; with ``return_exceptions`` a failed item is
        its :class:`WebAccelError` instead of raising the first failure.
        """

        async def one(item: tuple[Any, ...]) -> InferenceResult:
            name, inputs, *rest = item
            opts = rest[0] if rest else None
            return await self.run_inference(
                name, inputs, options=opts, priority=priority, timeout=timeout
            )

        return list(
            await asyncio.gather(*(one(i) for i in items), return_exceptions=return_exceptions)
        )

    async def _submit(
        self,
        req: Request,
        tensors: dict[str, np.ndarray] | None,
        original: Any,
        model: ResolvedModel | None,
        names: list[str] | None = None,
    ) -> Any:
        await self._ensure_started()
        # Admission is the handle's job and never waits (TGI's try_acquire).
        if self._admitted >= self.max_pending:
            if req.model != LEASE:
                self._metric(
                    "record_inference", req.model, round_trip_ms=0.0, error_code="OVERLOADED"
                )
            raise OverloadedError(
                f"pool is full ({self._admitted} requests pending, limit {self.max_pending}); "
                "retry later",
                details={"pending": self._admitted, "limit": self.max_pending},
            )
        self._admitted += 1
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._post(cmd.Submit(_Ticket(req, fut, tensors, original, model, self._clock(), names)))
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and not fut.exception():
                granted = fut.result()  # a lease or session granted as we were cancelled
                if isinstance(granted, WorkerSession):
                    self._post(cmd.Release(granted.assignment_id))
                elif req.model == LEASE:
                    self._post(cmd.Release(granted[1]))
            else:
                self._post(cmd.Cancel(req.id))
            raise

    # =============================================================== observing
    async def explain(
        self,
        model_name: str,
        *,
        platform: str | None = None,
        browser: str | None = None,
        precision: str | None = None,
        priority_list: Sequence[str] | None = None,
        allow_software: bool = False,
    ) -> dict[str, Any]:
        """Why requests for ``model_name`` go where they go (a read-only snapshot)."""
        model = await self.resolve(model_name)
        if model.name not in self._state.models:
            self._state.register_model(model.info())  # read-only for routing; same as submit does
        out = self._state.explain(
            model.name,
            constraints_for(
                browser=browser,
                platform=platform,
                priority_list=priority_list,
                precision=precision,
                allow_software=allow_software,
            ),
            self._clock(),
        )
        out["policy"] = {
            "browser_preferences": dict(self.policy.browser_preferences),
            "default_browser": self.policy.default_browser,
            "verify": dataclasses.asdict(self.verify),
        }
        out["quarantined"] = {wid: q["reason"] for wid, q in self.quarantined.items()}
        out["memory"] = self._memory_verdict(model)
        out["warmup"] = {
            "runs_on_load": self.warmup_runs if model.warmup_inputs else 0,
            "budget_s": self.warmup_budget_s,
            "why": "each worker runs the model on dummy inputs right after loading it, "
            "before its first request (V8 tiers WASM up over the first runs)"
            if self.warmup_runs and model.warmup_inputs
            else "off (warmup_runs=0)"
            if model.warmup_inputs
            else "this model declares no warm-up inputs",
            "workers": {
                wid: {k: v for k, v in keys.items() if v["model"] == model.name}
                for wid, keys in self.warmups.items()
                if any(v["model"] == model.name for v in keys.values())
            },
        }
        return out

    def _memory_verdict(self, model: ResolvedModel) -> dict[str, Any]:
        """Whether the model fits one worker's memory budget; if not, how it runs sharded."""
        budget = self.memory_budget_bytes
        sizes = [v.size_bytes for v in model.variants if v.size_bytes and v.precision == "fp32"]
        size = max(sizes) if sizes else None
        fits = budget is None or size is None or size <= budget
        out: dict[str, Any] = {"budget_bytes": budget, "model_bytes": size, "fits_one_worker": fits}
        if model.name in self.sharded:
            out["sharded"] = self.sharded[model.name]
        elif not fits:
            out["sharded"] = {
                "why": f"{size} bytes > budget {budget}: runs split into stages "
                "on several workers (webaccel.sharding)"
            }
        return out

    def stats(self) -> dict[str, Any]:
        snap = self._state.snapshot()
        snap["admitted"] = self._admitted
        snap["launch_errors"] = list(self._launch_errors)
        snap["recovery_s"] = list(self.recoveries)
        snap["memory"] = {
            wid: dict(self.memory.get(wid) or {"rss_bytes": None, "why": "not measured"})
            for wid in self._workers
        }
        snap["quarantined"] = dict(self.quarantined)
        snap["verify"] = dataclasses.asdict(self.verify)
        return snap

    def run_depth(self, model: str) -> int:
        """Runs of ``model`` one worker may have in flight: its slots, or more when
        the model's runs are short next to the bridge's round trip (adaptive_depth)."""
        return max(self.slots_per_worker, self._state.run_depth(model))

    def run_slots(self) -> int:
        """Runs the pool can have in its pages right now: ready workers x ``slots_per_worker``
        (at least one slot, so a caller pacing itself by it never stalls)."""
        ready = sum(
            1
            for w in self._state.workers.values()
            if w.state in (WorkerState.READY, WorkerState.BUSY)
        )
        return max(1, ready) * self.slots_per_worker

    @property
    def workers(self) -> dict[str, WorkerTransport]:
        return dict(self._workers)

    def adopt(self, worker: WorkerTransport) -> None:
        """Add a worker that started elsewhere (a browser that joined, a Grid session).

        It is routed to like a launched one; when it is lost it is not
        replaced by a launch of its family unless that family is launchable.
        """
        self._post(cmd.Adopt(worker))

    def worker_states(self) -> dict[str, str]:
        return {w.id: w.state.value for w in self._state.workers.values()}

    def _metric(self, method: str, *args: Any, **kwargs: Any) -> None:
        """Tell the metrics sink, if any; metrics never break serving."""
        if self._metrics is None:
            return
        try:
            getattr(self._metrics, method)(*args, **kwargs)
        except Exception:  # noqa: BLE001
            log.debug("metrics sink %s failed", method, exc_info=True)

    def _event(self, kind: str, detail: str) -> None:
        self.events.append((self._clock(), kind, detail))
        log.debug("pool %s: %s", kind, detail)

    # =================================================================== actor
    async def _run(self) -> None:
        assert self._wake is not None
        try:
            while True:
                while self._inbox:
                    command = self._inbox.popleft()
                    if isinstance(command, cmd.Close):
                        await self._shutdown(command.done)
                        return
                    self._handle(command)
                now = self._clock()
                self._step(now)
                if self._inbox:
                    continue
                self._arm_timer(now)
                self._wake.clear()
                if not self._inbox:
                    await self._wake.wait()
        except Exception as exc:  # a bug: fail everyone loudly rather than hang them
            log.exception("pool actor crashed")
            err = InternalError(f"the pool's scheduler crashed: {exc!r}")
            for t in list(self._tickets.values()):
                if not t.future.done():
                    t.future.set_exception(err)
            raise

    def _arm_timer(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wake = self._state.next_wakeup(now)
        if wake is not None:
            assert self._wake is not None
            self._timer = asyncio.get_running_loop().call_later(
                max(0.0, wake - now) + 1e-4, self._wake.set
            )

    def _handle(self, command: cmd.Command) -> None:
        now = self._clock()
        match command:
            case cmd.Submit(ticket):
                self._on_submit(ticket, now)
            case cmd.Cancel(rid):
                self._on_cancel(rid)
            case cmd.Done(aid, result, parts, load):
                self._on_done(aid, result, parts, load, now)
            case cmd.Failed(aid, err):
                self._on_failed(aid, err, now)
            case cmd.Opened(aid, load):
                self._on_opened(aid, load, now)
            case cmd.Release(aid, err):
                self._on_release(aid, err, now)
            case cmd.Launched(pid, worker):
                self._on_launched(pid, worker, now)
            case cmd.Adopt(worker):
                pid = f"adopting-{worker.id}"
                self._state.add_launching(
                    pid, normalize_browser(worker.browser) or worker.browser, now
                )
                self._on_launched(pid, worker, now)
            case cmd.LaunchFailed(pid, err):
                self._on_launch_failed(pid, err, now)
            case cmd.Lost(wid, reason):
                self._on_lost(wid, reason, now)
            case cmd.MemorySampled(samples):
                for wid, rss in samples.items():
                    self._note_memory(wid, rss, "interval", now)
            case cmd.Tick():
                pass
            case _:  # pragma: no cover - a command this actor forgot
                raise InternalError(f"unhandled pool command {command!r}")

    def _step(self, now: float) -> None:
        for req, err in self._state.expire(now):
            self._answer(req.id, err)
        if not self._closing:  # while closing, only drain what is queued
            for req, err in self._state.unservable(now, self.launchable):
                if self._launch_errors:
                    err = type(err)(
                        f"{err.message} Launch errors: {' | '.join(self._launch_errors)}",
                        details=err.details,
                    )
                self._answer(req.id, err)
            plan = self._state.scaling_plan(now, self.launchable, adaptive=self.adaptive_scaling)
            for fam in plan.launch:
                self._launch(fam, now, plan.why)
            for wid in plan.drain:
                self._event("drain", f"{wid}: {'; '.join(plan.why)}")
                if self._state.drain(wid):
                    self._retire(wid)
        while (a := self._state.next_assignment(now)) is not None:
            self._start(a)

    # ---------------------------------------------------------- commands
    def _on_submit(self, t: _Ticket, now: float) -> None:
        if t.future.done():  # cancelled before the actor saw it
            self._admitted -= 1
            return
        if self._closing:
            self._admitted -= 1
            t.future.set_exception(CancelledError_("the pool is closing"))
            return
        if t.model is not None and t.model.name not in self._state.models:
            self._state.register_model(t.model.info())
        try:
            self._state.submit(t.request, now)
        except WebAccelError as exc:
            self._admitted -= 1
            t.future.set_exception(exc)
            return
        t.submitted_at = now
        self._tickets[t.request.id] = t

    def _on_cancel(self, rid: int) -> None:
        if self._state.cancel(rid) is not None:
            self._answer(rid, CancelledError_(f"request {rid} was cancelled"))
        # A running request cannot be pulled out of its batch: its result is
        # dropped when it arrives (the ticket's future is already cancelled).

    def _answer(self, rid: int, outcome: Any) -> None:
        """Settle a request the state has already dropped: result or error."""
        t = self._tickets.pop(rid, None)
        if t is None:
            return
        self._admitted -= 1
        if isinstance(outcome, WebAccelError) and t.request.model != LEASE:
            self._metric(
                "record_inference",
                t.request.model,
                round_trip_ms=0.0,
                retries=t.request.retries,
                error_code=outcome.code,
                queue_wait_ms=(self._clock() - t.submitted_at) * 1000,
            )
        if t.future.done():
            return
        if isinstance(outcome, BaseException):
            t.future.set_exception(outcome)
        else:
            t.future.set_result(outcome)

    def _settle(self, out: Outcome) -> None:
        for req, err in out.failed:
            self._answer(req.id, err)
        if out.retried:
            self._event("retry", ", ".join(f"{r.id}(attempt {r.attempts})" for r in out.retried))

    def _settle_worker_after(self, wid: str, out: Outcome | None = None) -> None:
        if out is not None:
            self._settle(out)
        rec = self._state.workers.get(wid)
        if rec is not None and rec.state == WorkerState.DRAINING and not rec.running:
            self._retire(wid)

    def _on_done(
        self, aid: int, res: RunResult, parts: list[Any], load: LoadInfo | None, now: float
    ) -> None:
        self._exec.pop(aid, None)
        a = self._state.running.get(aid)
        if a is None:  # its worker was declared lost first: the requests were retried
            return
        self._state.finish(
            aid, now, ms=res.round_trip_ms, load_ms=load.load_ms if load is not None else None,
            page_ms=res.page_ms,
        )
        rec_browser = self._browser_of(a.worker_id)
        v = a.variant
        assert v is not None
        self._record_load(a, load)
        for req, part in zip(a.requests, parts, strict=True):
            t = self._tickets.get(req.id)
            if t is None:
                continue
            value = part
            if t.model is not None and t.model.postprocess is not None:
                try:
                    value = t.model.postprocess(part, t.original)
                except Exception as exc:
                    self._answer(
                        req.id, InternalError(f"postprocessing {req.model} output failed: {exc!r}")
                    )
                    continue
            self._metric(
                "record_inference",
                req.model,
                round_trip_ms=res.round_trip_ms,
                worker_id=a.worker_id,
                browser=rec_browser,
                backend=v.backend,
                precision=v.precision,
                batch=req.rows,  # this request's rows (items), not the requests merged
                queue_wait_ms=(a.started_at - t.submitted_at) * 1000,
                page_ms=res.page_ms,
                retries=req.retries,
            )
            self._answer(
                req.id,
                InferenceResult(
                    model=req.model,
                    outputs=value,
                    worker_id=a.worker_id,
                    browser=rec_browser,
                    backend=v.backend,
                    precision=v.precision,
                    attempts=req.attempts,
                    queue_ms=(a.started_at - t.submitted_at) * 1000,
                    run_ms=res.round_trip_ms,
                    page_ms=res.page_ms,
                    load_ms=load.load_ms if load is not None else None,
                    batch_size=len(a.requests),
                    reasons=a.reasons,
                    shape_bucket=res.shape_bucket,
                    fallback_reason=_fallback_text(a),
                    handle_ms=res.handle_ms,
                ),
            )
        self._settle_worker_after(a.worker_id)

    def _record_load(self, a: Assignment, load: LoadInfo | None) -> None:
        v = a.variant
        if load is None or v is None:
            return
        before, after = load.rss_before_bytes, load.rss_after_bytes
        if after is not None:
            self._note_memory(a.worker_id, after, "load", self._clock())
        self._metric(
            "record_model_load",
            a.requests[0].model,
            ms=load.load_ms,
            cid=v.cid,
            variant=v.key,
            precision=v.precision,
            backend=load.backend,
            worker_id=a.worker_id,
            nbytes=v.size_bytes,
            tier=load.source,
            rss_delta_bytes=after - before if before is not None and after is not None else None,
        )

    def _note_memory(self, wid: str, rss: int | None, trigger: str, now: float) -> None:
        """A worker's memory as measured (``rss`` None: it has no local process to
        measure, recorded once): kept for stats() and sent to metrics."""
        rec = self._state.workers.get(wid)
        if rec is None or wid not in self._workers:  # gone since it was measured
            return
        if rss is None:
            if wid in self._unmeasured or wid in self.memory:
                return
            self._unmeasured.add(wid)
        else:
            m = self.memory.setdefault(wid, {"rss_bytes": None, "peak_rss_bytes": 0,
                                             "samples": 0, "at": now})
            m["rss_bytes"], m["at"] = rss, now
            m["peak_rss_bytes"] = max(m["peak_rss_bytes"], rss)
            m["samples"] += 1
        self._metric(
            "record_worker_memory",
            wid,
            self._browser_of(wid),
            rss_bytes=rss,
            resident=sorted(rec.resident),
            trigger=trigger,
        )

    def _on_opened(self, aid: int, load: LoadInfo | None, now: float) -> None:
        """A session's model is in its page: give the caller the session."""
        self._exec.pop(aid, None)
        a = self._state.running.get(aid)
        if a is None:  # the worker was lost while loading: the request was retried
            return
        self._record_load(a, load)
        req = a.requests[0]
        t = self._tickets.pop(req.id, None)
        w = self._workers.get(a.worker_id)
        if t is None or t.future.done() or w is None or a.variant is None:
            if t is not None:
                self._admitted -= 1
            self._settle_worker_after(a.worker_id, self._state.finish(aid, now))
            return
        self._admitted -= 1
        self._state.session_opened(aid)
        t.future.set_result(
            WorkerSession(
                pool=self,
                assignment_id=aid,
                worker=w,
                model=req.model,
                variant=a.variant,
                reasons=a.reasons,
                fallback_reason=_fallback_text(a),
                queue_ms=(a.started_at - t.submitted_at) * 1000,
                load_info=load,
                attempts=req.attempts,
                opened_at=now,
            )
        )

    def _on_release(self, aid: int, err: WebAccelError | None, now: float) -> None:
        """A lease or a session ended (``err``: how it failed)."""
        a = self._state.running.get(aid)
        if a is None:  # its worker was lost already
            return
        lost = isinstance(err, WorkerLostError) or (
            isinstance(err, TimeoutError_) and err.details.get("worker_suspect")
        )
        if lost:
            self._on_lost(a.worker_id, err.message if err else "", now)
            return
        self._settle_worker_after(a.worker_id, self._state.finish(aid, now))

    def _end_session(self, s: WorkerSession, err: WebAccelError | None, *, record: bool) -> None:
        self._post(cmd.Release(s.assignment_id, err))
        if not record:
            return
        f = dict(s.figures)
        self._metric(
            "record_generation",
            s.model,
            task=str(f.pop("task", "session")),
            worker_id=s.worker_id,
            browser=s.browser,
            backend=s.backend,
            precision=s.precision,
            queue_wait_ms=s.queue_ms,
            error_code=err.code
            if err is not None and not isinstance(err, CancelledError_)
            else None,
            total_ms=f.pop("total_ms", s.queue_ms + (self._clock() - s.opened_at) * 1000),
            **f,
        )

    def _on_failed(self, aid: int, err: WebAccelError, now: float) -> None:
        self._exec.pop(aid, None)
        a = self._state.running.get(aid)
        if a is None:
            return
        wid = a.worker_id
        if isinstance(err, WrongAnswerError):
            self._quarantine(wid, err.message, now)
        if isinstance(err, WorkerLostError) or (
            isinstance(err, TimeoutError_) and err.details.get("worker_suspect")
        ):
            # The worker is gone or hung: everything on it is retried at once.
            self._on_lost(wid, err.message, now)
            return
        self._event("failed", f"assignment {aid} on {wid}: {err.code} {err.message}")
        if (
            a.load
            and a.variant is not None
            and isinstance(err, (LoadFailedError, BackendUnavailableError, OutOfMemoryError))
        ):
            self._metric(
                "record_model_load",
                a.requests[0].model,
                ms=0.0,
                variant=a.variant.key,
                precision=a.variant.precision,
                backend=a.variant.backend,
                worker_id=wid,
                error_code=err.code,
            )
        self._settle_worker_after(wid, self._state.fail(aid, now, err))

    def _quarantine(self, wid: str, reason: str, now: float) -> None:
        """Take a worker whose answer failed its check out of service for good: it is
        treated as lost (its requests run again elsewhere), its token is revoked
        when it has one, and the reason stays visible in stats() and explain()."""
        w = self._workers.get(wid)
        browser = self._browser_of(wid)
        self.quarantined[wid] = {"reason": reason, "at": now, "browser": browser}
        self._state.counters["quarantined"] += 1
        self._event("quarantine", f"{wid}: {reason}")
        self._metric("record_quarantine", wid, browser, reason=reason)
        revoke = getattr(w, "revoke", None)
        if callable(revoke):
            with contextlib.suppress(Exception):
                out = revoke(reason)
                if asyncio.iscoroutine(out):
                    self._spawn(out)

    def _on_lost(self, wid: str, reason: str, now: float) -> None:
        if wid not in self._state.workers:
            return
        self._event("lost", f"{wid}: {reason}")
        self._lost_at.append((now, wid, reason))
        family = self._state.workers[wid].browser
        aids = [aid for aid, a in self._state.running.items() if a.worker_id == wid]
        for aid in aids:
            task = self._exec.pop(aid, None)
            if task is not None:
                task.cancel()
        self._settle(self._state.worker_lost(wid, now))
        self._close_worker(wid)
        # Replace it at once (same family) when there is work or we fell below
        # the floor; otherwise adaptive scaling decides later.
        alive = sum(1 for w in self._state.workers.values() if w.state != WorkerState.DRAINING)
        if (
            not self._closing
            and alive < self.scaling.max_workers
            and (self._state.queued or alive < self.scaling.min_workers)
        ):
            self._launch(family, now, (f"replacing lost {wid}",))

    def _browser_of(self, wid: str) -> str:
        rec = self._state.workers.get(wid)
        return rec.browser if rec is not None else "?"

    # ---------------------------------------------------------- workers
    def _launch(self, family: str, now: float, why: Sequence[str]) -> None:
        pid = f"launching-{family}-{next(self._launch_ids)}"
        self._state.add_launching(pid, family, now)
        self._event("launch", f"{family}: {'; '.join(why)}")
        task = self._spawn(self._launch_task(pid, family))
        self._launch_tasks.add(task)
        task.add_done_callback(self._launch_tasks.discard)

    async def _launch_task(self, pid: str, family: str) -> None:
        try:
            w = await asyncio.wait_for(self._launcher(family), self.connection_timeout)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            self._post(
                cmd.LaunchFailed(
                    pid,
                    BrowserLaunchError(
                        f"{family} did not become ready within {self.connection_timeout} s"
                    ),
                )
            )
        except Exception as exc:  # noqa: BLE001 - any launcher failure is reported the same way
            err = (
                exc
                if isinstance(exc, WebAccelError)
                else BrowserLaunchError(f"launching {family} failed: {exc!r}")
            )
            self._post(cmd.LaunchFailed(pid, err))
        else:
            self._post(cmd.Launched(pid, w))

    def _on_launched(self, pid: str, w: WorkerTransport, now: float) -> None:
        if self._closing or pid not in self._state.workers or w.id in self._state.workers:
            if pid in self._state.workers:
                self._state.launch_failed(pid, now)
            self._spawn(_quiet_close(w))
            return
        caps = WorkerCaps.parse(w.capabilities)
        if caps.memory_budget_bytes is None and self.memory_budget_bytes:
            caps = dataclasses.replace(caps, memory_budget_bytes=self.memory_budget_bytes)
        self._state.rename_worker(pid, w.id)
        self._state.worker_ready(
            w.id,
            normalize_browser(w.browser) or w.browser,
            caps,
            now,
            slots=self.slots_per_worker,
            session_slots=self.session_slots,
        )
        self._state.workers[w.id].remote = bool(getattr(w, "remote", False))
        self._workers[w.id] = w
        self._event("ready", f"{w.id} ({w.browser}; {', '.join(caps.backends)})")
        gpu = w.capabilities.get("webgpu")
        self._metric(
            "record_worker",
            w.id,
            normalize_browser(w.browser) or w.browser,
            backends=caps.backends,
            adapter=gpu if isinstance(gpu, Mapping) else None,
            is_fallback=caps.software_webgpu,
            info={"launched_as": pid},
        )
        if self._lost_at:
            lost_at, lost_wid, reason = self._lost_at.popleft()
            self.recoveries.append(now - lost_at)
            self._metric(
                "record_recovery",
                now - lost_at,
                worker_id=w.id,
                lost_worker_id=lost_wid,
                browser=normalize_browser(w.browser) or w.browser,
                reason=reason,
            )
        if self._changed is not None:
            self._changed.set()

    def _on_launch_failed(self, pid: str, err: WebAccelError, now: float) -> None:
        rec = self._state.workers.get(pid)
        fam = rec.browser if rec else "?"
        self._state.launch_failed(pid, now)
        self._launch_errors.append(f"{fam}: {err.message}")
        self._event("launch_failed", f"{fam}: {err.message}")
        if self._changed is not None:
            self._changed.set()

    def _retire(self, wid: str) -> None:
        self._state.worker_closed(wid)
        self._event("closed", wid)
        self._close_worker(wid)

    def _close_worker(self, wid: str) -> None:
        w = self._workers.pop(wid, None)
        self.warmups.pop(wid, None)
        self.memory.pop(wid, None)
        self._unmeasured.discard(wid)
        for k in [k for k in self._load_locks if k[0] == wid]:
            del self._load_locks[k]
        if w is not None:
            self._spawn(_quiet_close(w))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._aux.add(task)
        task.add_done_callback(self._aux.discard)
        return task

    async def _heartbeats(self) -> None:
        # The transport keeps ``alive`` current (bridge heartbeats, process
        # exit); polling it here catches a browser that died while idle.  Every
        # ``memory_interval`` it also measures the workers' memory.
        next_sample = 0.0
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            for wid, w in list(self._workers.items()):
                try:
                    alive = w.alive
                except Exception:  # noqa: BLE001 - a broken transport is a dead one
                    alive = False
                if not alive:
                    self._post(cmd.Lost(wid, "worker reports it is no longer alive"))
            if (
                self.memory_probe is not None
                and self.memory_interval > 0
                and self._workers
                and time.monotonic() >= next_sample
            ):
                next_sample = time.monotonic() + self.memory_interval
                try:
                    await self._sample_memory(self.memory_probe)
                except Exception:  # noqa: BLE001 - liveness polling must go on
                    log.debug("memory sampling failed", exc_info=True)

    async def _sample_memory(self, probe: MemoryProbe) -> None:
        """Measure every worker in a thread (``/proc`` reads) and post what was found."""
        workers = list(self._workers.items())

        def measure() -> dict[str, int | None]:
            out: dict[str, int | None] = {}
            for wid, w in workers:
                try:
                    out[wid] = probe(w)
                except Exception:  # noqa: BLE001 - a measurement never stops the heartbeat
                    log.debug("memory probe failed for %s", wid, exc_info=True)
                    out[wid] = None
            return out

        self._post(cmd.MemorySampled(await asyncio.to_thread(measure)))

    # -------------------------------------------------------- shutdown
    async def _shutdown(self, done: asyncio.Future[None]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._monitor is not None:
            self._monitor.cancel()
        for task in list(self._exec.values()):
            task.cancel()
        for rid in list(self._tickets):
            self._answer(rid, CancelledError_("the pool was closed before this request finished"))
        for task in list(self._launch_tasks):
            task.cancel()
        ws = list(self._workers.values())
        self._workers.clear()
        await asyncio.gather(*(_quiet_close(w) for w in ws))
        # Launch tasks were cancelled above; wait for them (their launchers clean up).
        pending = [t for t in self._aux if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=self.connection_timeout)
        for t in list(self._exec.values()):
            with contextlib.suppress(BaseException):
                await t
        self._exec.clear()
        # A launch that finished just before it was cancelled posted its worker: close it.
        for command in self._inbox:
            if isinstance(command, cmd.Launched):
                await _quiet_close(command.worker)
        self._inbox.clear()
        if not done.done():
            done.set_result(None)


def _fallback_text(a: Assignment) -> str | None:
    return "; ".join(r.message for r in a.fallback) or None


async def _quiet_close(w: WorkerTransport) -> None:
    with contextlib.suppress(Exception):
        await w.close()


def _as_tensors(raw: Any) -> dict[str, np.ndarray]:
    if not isinstance(raw, Mapping):
        raise InvalidInputError(
            f"inputs must be a dict of tensor name -> array (got {type(raw).__name__}); "
            "or give the model a preprocess step in its resolver"
        )
    out: dict[str, np.ndarray] = {}
    for name, value in raw.items():
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if arr.dtype == object:
            raise InvalidInputError(f"input {name!r} is not numeric")
        out[str(name)] = arr
    if not out:
        raise InvalidInputError("no input tensors given")
    return out
