"""The async core behind :class:`webaccel.api.WebAccelerator`, the CLI and the server.

It composes a :class:`~webaccel.hosting.BrowserHost` (server, block store,
registry resolver) and a :class:`~webaccel.pool.ResourcePool`.  Every request
goes through the pool: a single inference, a model of several graphs driven
by its family's own ``run_loop`` (Whisper) inside a pool session, and
generated streams (:mod:`webaccel.generation.runner`).  The pool decides the
backend once (``platform``/``priority_list`` are preferences; a software
WebGPU adapter counts only with ``allow_software``); the engine does the
pre- and post-processing (off the event loop) and says where and how fast a
request ran, and why a backend was or was not used.

The launcher is a seam: ``Engine(launcher=FakeLauncher())`` runs the whole
policy without a browser (tests/test_engine.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from webaccel.dtypes import describe_dtypes, to_precision
from webaccel.errors import BackendUnavailableError, BrowserLaunchError, InvalidInputError
from webaccel.hosting import BrowserHost, content_id
from webaccel.models import registry
from webaccel.models.registry import ModelSpec, Prepared
from webaccel.pool import ResourcePool
from webaccel.pool.results import InferenceResult, WorkerSession
from webaccel.pool.routing import DEFAULT_BACKEND_ORDER, WorkerCaps
from webaccel.pool.transport import ModelRef, WorkerLauncher, WorkerTransport
from webaccel.server import WebAccelServer

__all__ = ["Engine", "content_id", "parse_precision", "raw_tensors", "validate_options"]

PLATFORMS = ("auto", *DEFAULT_BACKEND_ORDER)
# The option keys of the seed API; anything else is a typo we should not ignore.
OPTION_KEYS = frozenset(
    {"precision", "mixed_precision", "optimize_for_audio", "use_ipfs", "timeout", "priority"}
)
PRECISION_BITS = {4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}
# Inputs this large that a model loop sends unchanged step after step stay in the page.
KEEP_INPUT_BYTES = 1 << 20


def parse_precision(options: dict[str, Any]) -> str | None:
    """The precision asked for (bits, a variant name or a transformers.js dtype), or None
    for "let the router choose"."""
    if options.get("mixed_precision"):
        return "mixed"
    value = options.get("precision")
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in PRECISION_BITS:
            raise InvalidInputError(f"precision {value} bits is not offered; use 4, 8, 16 or 32")
        return PRECISION_BITS[value]
    if value is None or isinstance(value, str):
        return to_precision(value)
    raise InvalidInputError(
        f"unknown precision {value!r}; use bits (4, 8, 16, 32), one of {registry.PRECISIONS} "
        f"or a transformers.js dtype ({describe_dtypes()})"
    )


def validate_options(options: dict[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = set(options) - OPTION_KEYS
    if unknown:
        raise InvalidInputError(
            f"unknown option(s) {sorted(unknown)}; accepted options are {sorted(OPTION_KEYS)}"
        )
    return options


def raw_tensors(data: dict[str, Any]) -> dict[str, np.ndarray]:
    """A dict of input name -> list/array, as the seed API accepts; ints become int64."""
    out: dict[str, np.ndarray] = {}
    for name, value in data.items():
        arr = np.asarray(value)
        if arr.dtype == object:
            raise InvalidInputError(
                f"input {name!r} is ragged or not numeric; give equal-length rows"
            )
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


# Runs in flight per browser worker: the next one is already in the page (its
# queue) when the current one finishes, so a worker never waits for a round trip.
PIPELINE_SLOTS = 2


def default_workers() -> int:
    """Browser workers when the caller does not say: one per core, at most 4.

    wasm pages run one thread each by default; on this project's 2-core
    machine one single-thread browser per core beat both fewer browsers with
    more threads and more browsers than cores (docs/FACTS.md, README "Measured here")."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


# Micro-batches of one split request in the pool at a time, per worker run slot:
# enough to keep every slot fed, few enough to queue briefly.
SPLIT_WINDOW_PER_SLOT = 2



def _fetch_recorder(metrics: Any) -> Callable[[bytes, int, float, str | None], None]:
    from webaccel.content import cid as cidmod

    def record(c: bytes, nbytes: int, ms: float, tier: str | None) -> None:
        metrics.record_fetch(cidmod.to_str(c), nbytes=nbytes, ms=ms, tier=tier)

    return record

class Engine:
    """Owns the browser host and the worker pool; one per accelerator or server process."""

    def __init__(
        self,
        *,
        max_connections: int | None = None,
        default_browser: str = "chromium",
        browser_preferences: dict[str, str] | None = None,
        adaptive_scaling: bool = True,
        default_platform: str | None = None,
        threads: int = 1,
        host: str = "127.0.0.1",
        port: int = 0,
        launch_timeout: float = 30.0,
        max_retries: int = 3,
        metrics: Any = None,
        server: WebAccelServer | None = None,
        content_addressed: bool = True,
        launcher: str | WorkerLauncher | None = None,
        grid_url: str | None = None,
        public_url: str | None = None,
        allow_software: bool = False,
        **pool_options: Any,
    ) -> None:
        """``launcher``: how workers start -- a name (subprocess (default) | selenium |
        playwright | grid with ``grid_url``) or any ``async launcher(family) ->
        WorkerTransport``; ``public_url``: the server address remote browsers reach;
        ``allow_software``: let a software WebGPU adapter count as webgpu."""
        if default_platform is not None and default_platform not in PLATFORMS:
            raise InvalidInputError(
                f"unknown platform {default_platform!r}; choose one of {PLATFORMS}"
            )
        self.default_platform = default_platform
        self.allow_software = allow_software
        self.metrics = metrics
        self.host = BrowserHost(
            host=host,
            port=port,
            server=server,
            content_addressed=content_addressed,
            launcher=launcher if isinstance(launcher, str) else None,
            grid_url=grid_url,
            public_url=public_url,
            connection_timeout=launch_timeout,
            threads=threads,
            allow_software=allow_software,
        )
        self.server = self.host.server
        self.blocks = self.host.blocks
        if self.blocks is not None and metrics is not None:
            # every block the gateway serves, with the tier that had it (memory/disk/peer)
            self.blocks.on_fetch = _fetch_recorder(metrics)
        self.native = self.host.native
        workers = max_connections if max_connections is not None else default_workers()
        pool_options.setdefault("slots_per_worker", PIPELINE_SLOTS)
        # What this engine chose and why (shown by get_metrics()["pool"]["settings"]).
        self.settings = {
            "max_workers": max(1, workers),
            "threads_per_worker": threads,
            "slots_per_worker": pool_options["slots_per_worker"],
            "why": "max_workers given by the caller"
            if max_connections is not None
            else "one single-thread browser per core (at most 4), as measured on wasm",
        }
        self.pool = ResourcePool(
            max_connections=max(1, workers),
            browser_preferences=browser_preferences,
            default_browser=default_browser,
            adaptive_scaling=adaptive_scaling,
            connection_timeout=self.host.launch_timeout,
            max_retries=max_retries,
            launcher=launcher if callable(launcher) else self.host.launch,
            resolver=self.host.resolve,
            metrics=metrics,
            **pool_options,
        )

    async def start(self) -> None:
        await self.host.start()
        await self.pool.start(wait=False)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing goes on: the server must stop regardless
            await self.pool.close(drain=False, timeout=5)
        await self.host.close()

    async def any_worker(self) -> WorkerTransport:
        """A live worker (launching one if the pool has none yet)."""
        async with self.pool.get_connection(None) as lease:
            return lease.worker

    def route(
        self,
        platform: str | None,
        priority_list: list[str] | None = None,
        allow_software: bool | None = None,
    ) -> dict[str, Any]:
        """The routing keywords for the pool: the caller's platform, else the default
        platform, as a preference (never a demand on a software adapter)."""
        requested = platform or self.default_platform or "auto"
        if requested not in PLATFORMS:
            raise InvalidInputError(f"unknown platform {requested!r}; choose one of {PLATFORMS}")
        return {
            "platform": None if priority_list else requested,
            "priority_list": priority_list,
            "allow_software": self.allow_software if allow_software is None else allow_software,
        }

    # ------------------------------------------------------------ requests
    async def _run_native(
        self,
        spec: ModelSpec,
        prepared: Prepared,
        precision: str,
        output_names: tuple[str, ...] | None,
        cause: Exception,
    ) -> InferenceResult:
        outputs, run_ms, load_ms = await asyncio.to_thread(
            self.native.run,
            spec,
            prepared.tensors,
            precision,
            list(output_names) if output_names else None,
        )
        return InferenceResult(
            model=spec.name,
            outputs=outputs,
            worker_id="native",
            browser="native",
            backend="cpu",
            precision=precision,
            attempts=1,
            queue_ms=0.0,
            run_ms=run_ms,
            page_ms=run_ms,
            load_ms=load_ms,
            batch_size=1,
            reasons=(f"native fallback: {cause}",),
            fallback_reason=f"no browser could serve ({cause}); ran in native onnxruntime",
        )

    async def accelerate(
        self,
        model_name: str,
        input_data: Any,
        options: dict[str, Any] | None = None,
        *,
        platform: str | None = None,
        model_type: str | None = None,
        browser: str | None = None,
        native_fallback: bool = False,
        priority_list: list[str] | None = None,
        allow_software: bool | None = None,
    ) -> dict[str, Any]:
        """Run one request; ``native_fallback``: run in-process when no browser can serve."""
        t_start = time.perf_counter()
        options = validate_options(options)
        precision = parse_precision(options)
        spec = registry.get(model_name)
        if input_data is None:
            raise InvalidInputError("no input: pass input_data (or input_text)")
        route = self.route(platform, priority_list, allow_software)
        browser = browser or ("firefox" if options.get("optimize_for_audio") else None)
        if spec.run_loop is not None:
            return await self._run_loop(
                spec, input_data, options, precision or "fp32", route, browser, t_start
            )
        raw = isinstance(input_data, dict)
        if (
            not raw
            and (precision or "fp32") == "fp32"
            and self.pool.memory_budget_bytes
            and await asyncio.to_thread(self._over_budget, spec)
        ):
            # Too large for one worker: run it split into stages over several.
            from webaccel.sharding.run import accelerate_split

            return await accelerate_split(
                self, spec.name, input_data, platform=platform, browser=browser
            )
        small = _small_text(input_data)
        splitter = None if raw else getattr(spec.processor(), "split", None)
        if splitter is not None:
            parts = await _on_loop_if(small, splitter, input_data, options)
            if parts:
                return await self._accelerate_parts(
                    spec, parts, options, precision, model_type, browser, route, t_start
                )
        if raw:
            prepared = Prepared(raw_tensors(input_data))
        else:
            prepared = await _on_loop_if(small, spec.processor().preprocess, input_data, options)
        t_pre = time.perf_counter()
        pool_options: dict[str, Any] = {}
        if precision is not None:
            pool_options["precision"] = precision
        if raw:
            pool_options["output_names"] = None
        try:
            result = await self.pool.run_inference(
                spec.name,
                prepared.tensors,
                model_type=model_type,
                browser=browser,
                options=pool_options,
                **_request_keywords(options, route),
            )
        except (BackendUnavailableError, BrowserLaunchError) as exc:
            if not native_fallback:
                raise
            result = await self._run_native(
                spec, prepared, precision or "fp32", None if raw else spec.output_names, exc
            )
        t_run = time.perf_counter()
        if raw:
            outputs: dict[str, Any] = dict(result.outputs)
        else:
            outputs = await _on_loop_if(
                small, spec.processor().postprocess, result.outputs, prepared
            )
        t_end = time.perf_counter()
        return self._describe(
            spec,
            result,
            route,
            outputs,
            _timings(t_start, t_pre, t_run, t_end),
        )

    def _over_budget(self, spec: ModelSpec) -> bool:
        """The model's fp32 file exceeds the pool's per-worker memory budget."""
        budget = self.pool.memory_budget_bytes
        if not budget or spec.build_parts is not None:
            return False
        return spec.ensure_onnx("fp32").stat().st_size > budget

    async def _accelerate_parts(
        self,
        spec: ModelSpec,
        parts: list[tuple[list[int], Prepared]],
        options: dict[str, Any],
        precision: str | None,
        model_type: str | None,
        browser: str | None,
        route: dict[str, Any],
        t_start: float,
    ) -> dict[str, Any]:
        """A big input as micro-batches (the processor's ``split``: sorted by length,
        padded per batch), all submitted at once so every worker gets work; the
        outputs go back in the caller's order."""
        t_pre = time.perf_counter()
        pool_options: dict[str, Any] = {} if precision is None else {"precision": precision}
        processor = spec.processor()
        # Paced, not all at once: at most SPLIT_WINDOW_PER_SLOT micro-batches per
        # run slot of the ready workers are in the pool, so each one's deadline
        # (``timeout``) counts from when it can soon run, a huge list stays within
        # the pool's admission limit, and other callers' requests get turns.
        pool = self.pool

        def submit(prepared: Prepared, backlog: int) -> asyncio.Task[InferenceResult]:
            return asyncio.ensure_future(
                pool.run_inference(
                    spec.name,
                    prepared.tensors,
                    model_type=model_type,
                    browser=browser,
                    options=pool_options,
                    backlog=backlog,
                    **_request_keywords(options, route),
                )
            )

        tasks: list[asyncio.Task[InferenceResult]] = []
        try:
            todo = iter(parts)
            pending: set[asyncio.Task[InferenceResult]] = set()
            exhausted = False
            while not exhausted or pending:
                while not exhausted and len(pending) < SPLIT_WINDOW_PER_SLOT * pool.run_slots():
                    nxt = next(todo, None)
                    if nxt is None:
                        exhausted = True
                        break
                    task = submit(nxt[1], len(parts) - len(tasks) - 1)
                    tasks.append(task)
                    pending.add(task)
                if pending:
                    done, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in done:
                        task.result()  # the first failure fails the whole request
            results = [t.result() for t in tasks]
        except BaseException:
            for t in tasks:  # one failed (or the caller gave up): the rest are not run
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        t_run = time.perf_counter()
        n = sum(len(idx) for idx, _ in parts)
        merged: dict[str, Any] = {}
        for (idx, prepared), result in zip(parts, results, strict=True):
            out = processor.postprocess(result.outputs, prepared)
            for key, value in out.items():
                if isinstance(value, np.ndarray) and value.shape[:1] == (len(idx),):
                    if key not in merged:
                        merged[key] = np.empty((n, *value.shape[1:]), dtype=value.dtype)
                    merged[key][idx] = value
                elif isinstance(value, list) and len(value) == len(idx):
                    slot = merged.setdefault(key, [None] * n)
                    for i, v in zip(idx, value, strict=True):
                        slot[i] = v
                else:
                    merged.setdefault(key, value)
        t_end = time.perf_counter()
        first = results[0]
        described = self._describe(
            spec,
            first,
            route,
            merged,
            _timings(t_start, t_pre, t_run, t_end),
        )
        described.update(
            micro_batches=len(parts),
            micro_batch_rows=[len(idx) for idx, _ in parts],
            padded_tokens=int(sum(len(idx) * p.tensors["input_ids"].shape[1] for idx, p in parts)),
            workers=sorted({r.worker_id for r in results}),
            page_ms=sum(r.page_ms or 0.0 for r in results),
            round_trip_ms=sum(r.run_ms or 0.0 for r in results),
            queue_ms=max(r.queue_ms for r in results),
            attempts=max(r.attempts for r in results),
            batch_size=n,
        )
        return described

    async def _run_loop(
        self,
        spec: ModelSpec,
        data: Any,
        options: dict[str, Any],
        precision: str,
        route: dict[str, Any],
        browser: str | None,
        t_start: float,
    ) -> dict[str, Any]:
        """A model of several graphs driven by its family's ``run_loop`` (Whisper:
        encoder once, then one decoder step per token, the KV cache as tensors),
        inside one pool session, so its graphs stay loaded in one page and the
        whole job is scheduled, recorded and visible like any request."""
        timeout = float(options.get("timeout", 300.0))
        parts = await asyncio.to_thread(spec.ensure_parts, precision)
        assert spec.run_loop is not None
        async with self.pool.session(
            spec.name,
            browser=browser,
            precision=precision,
            priority=int(options.get("priority", 0)),
            **route,
        ) as session:
            keys: dict[str, str] = {}
            load_ms = 0.0
            for part, path in parts.items():
                url, cid = await self.host.model_url(f"{spec.name}/{precision}/{part}.onnx", path)
                ref = ModelRef(
                    key=f"{spec.name}/{precision}/{part}/{session.backend}",
                    name=spec.name,
                    url=url,
                    backend=session.backend,
                    precision=precision,
                    cid=cid,
                )
                info = await session.load(ref)
                load_ms += info.load_ms if info is not None else 0.0
                keys[part] = ref.key
            step = _kept_inputs_step(session, keys, timeout)
            out = await spec.run_loop(step, data, options)
            session.report(task=spec.task, completion_tokens=len(out.get("tokens", ())))
        return {
            "model": spec.name,
            "task": spec.task,
            **out,
            "browser": session.browser,
            "worker_id": session.worker_id,
            "backend": session.backend,
            "requested_backend": route["platform"] or "auto",
            "fallback_reason": session.fallback_reason,
            "reasons": list(session.reasons),
            "precision": precision,
            "page_ms": session.page_ms,
            "round_trip_ms": session.round_trip_ms,
            "bridge_runs": session.runs,
            "load_ms": load_ms,
            "queue_ms": session.queue_ms,
            "latency_ms": (time.perf_counter() - t_start) * 1000,
        }

    def _describe(
        self,
        spec: ModelSpec,
        result: InferenceResult,
        route: dict[str, Any],
        outputs: dict[str, Any],
        times: dict[str, float],
    ) -> dict[str, Any]:
        worker = self.pool.workers.get(result.worker_id)
        caps = worker.capabilities if worker is not None else {}
        wanted = route["platform"] or (route["priority_list"] or ["auto"])[0]
        return {
            "model": spec.name,
            "task": spec.task,
            **outputs,
            "browser": result.browser,
            "worker_id": result.worker_id,
            "user_agent": caps.get("userAgent", ""),
            "backend": result.backend,
            "requested_backend": wanted,
            "fallback_reason": result.fallback_reason,
            "reasons": list(result.reasons),
            "adapter": WorkerCaps.parse(caps).adapter,
            "precision": result.precision,
            "page_ms": result.page_ms,
            "page_handle_ms": result.handle_ms,
            "round_trip_ms": result.run_ms,
            "queue_ms": result.queue_ms,
            "load_ms": result.load_ms,
            "attempts": result.attempts,
            "batch_size": result.batch_size,
            "shape_bucket": result.shape_bucket,
            **times,
        }


T = TypeVar("T")
SMALL_TEXT_CHARS = 4096


def _small_text(data: Any) -> bool:
    """A few short texts: tokenizing them (tens of microseconds) costs less than the
    thread hop that keeps big inputs off the event loop (0.3-1 ms here, more under
    load; the bridge-overhead benchmark counted three per request)."""
    if isinstance(data, str):
        return len(data) <= SMALL_TEXT_CHARS
    if isinstance(data, list) and len(data) <= 64 and all(isinstance(t, str) for t in data):
        return sum(map(len, data)) <= SMALL_TEXT_CHARS
    return False


async def _on_loop_if(small: bool, fn: Callable[..., T], *args: Any) -> T:
    return fn(*args) if small else await asyncio.to_thread(fn, *args)


def _request_keywords(options: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    """The pool keywords a request's options and route give: priority, its deadline and,
    as a caller's own timeout also bounds each attempt, its run timeout."""
    timeout = float(options["timeout"]) if "timeout" in options else None
    return {
        "priority": int(options.get("priority", 0)),
        "timeout": timeout,
        "run_timeout": timeout,
        **route,
    }


def _timings(t_start: float, t_pre: float, t_run: float, t_end: float) -> dict[str, float]:
    """A request's Python-side times (perf_counter marks: start, inputs ready, run done, end)."""
    return {
        "preprocess_ms": (t_pre - t_start) * 1000,
        "postprocess_ms": (t_end - t_run) * 1000,
        "latency_ms": (t_end - t_start) * 1000,
    }


def _kept_inputs_step(session: WorkerSession, keys: dict[str, str], timeout: float) -> Any:
    """The ``step(part, feeds)`` a family's run_loop awaits, over one session.

    An input that is the very array sent last time for this part (the loop's
    fixed inputs, e.g. Whisper's encoder states) is reused from the page, not
    resent.
    """
    sent: dict[tuple[str, str], np.ndarray] = {}  # what the page kept, by input

    async def step(part: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        send: dict[str, np.ndarray] = {}
        reuse: list[str] = []
        keep: list[str] = []
        for name, arr in feeds.items():
            if sent.get((part, name)) is arr:
                reuse.append(name)
                continue
            send[name] = arr
            if arr.nbytes >= KEEP_INPUT_BYTES:
                keep.append(name)
                sent[(part, name)] = arr  # holding it keeps its id() unique
        opts = {"reuse": reuse, "keep": keep} if reuse or keep else None
        res = await session.run(keys[part], send, timeout=timeout, options=opts)
        return dict(res.outputs)

    return step
