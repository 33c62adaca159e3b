"""The async core behind :class:`webaccel.api.WebAccelerator`, the CLI and the server.

It owns the server and a :class:`~webaccel.pool.ResourcePool` of browser
workers, and is the pool's model resolver: a registry name becomes one
:class:`ModelRef` per (backend, precision), each served lazily at
``/models/<name>/<precision>/model.onnx`` (a variant is built the first time
a page asks for it).  A request is preprocessed here (off the event loop),
scheduled by the pool, and postprocessed here; the result says where and how
fast it ran, and why a backend was or was not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.browsers import launch_worker
from webaccel.errors import BackendUnavailableError, BrowserLaunchError, InvalidInputError
from webaccel.models import registry
from webaccel.models.registry import ModelSpec, Prepared
from webaccel.native import NativeRunner
from webaccel.platforms import PLATFORMS, choose_backend
from webaccel.pool import ResolvedModel, ResourcePool
from webaccel.pool.pool import InferenceResult
from webaccel.pool.transport import BACKENDS, ModelRef, WorkerTransport
from webaccel.server import WebAccelServer

log = logging.getLogger(__name__)

# The option keys of the seed API; anything else is a typo we should not ignore.
OPTION_KEYS = frozenset(
    {"precision", "mixed_precision", "optimize_for_audio", "use_ipfs", "timeout", "priority"}
)
PRECISION_BITS = {4: "int4", 8: "int8", 16: "fp16", 32: "fp32"}
# CIDv1, raw leaves, 1 MiB chunks: fewer, larger blocks for the page to verify.
CID_PROFILE = "unixfs-v1-2025"
# Inputs this large that a model loop sends unchanged step after step stay in the page.
KEEP_INPUT_BYTES = 1 << 20


def parse_precision(options: dict[str, Any]) -> str | None:
    """The precision asked for, or None for "let the router choose"."""
    if options.get("mixed_precision"):
        return "mixed"
    value = options.get("precision")
    if value in (None, "auto"):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in PRECISION_BITS:
            raise InvalidInputError(f"precision {value} bits is not offered; use 4, 8, 16 or 32")
        return PRECISION_BITS[value]
    if isinstance(value, str) and value.lower() in registry.PRECISIONS:
        return value.lower()
    raise InvalidInputError(
        f"unknown precision {value!r}; use bits (4, 8, 16, 32) or one of {registry.PRECISIONS}"
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


def content_id(path: Path, blocks: Any) -> str:
    """The CID of a model file, adding its blocks to ``blocks`` once.

    A sidecar ``<file>.cid.json`` remembers the CID for this size and mtime, so
    a second engine does not re-hash hundreds of MB; the root block must still
    be in the store, or the file is added again.
    """
    from webaccel.content.add import add_path

    stat = path.stat()
    sidecar = path.with_name(path.name + ".cid.json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "profile": CID_PROFILE}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(sidecar.read_text())
        if {k: known.get(k) for k in key} == key and blocks.has(known["cid"]):
            return str(known["cid"])
    cid = str(add_path(path, CID_PROFILE, store=blocks, pin=True))
    tmp = sidecar.with_suffix(".tmp")
    tmp.write_text(json.dumps({**key, "cid": cid}))
    os.replace(tmp, sidecar)
    return cid


class Engine:
    """Owns the server and the worker pool; one per accelerator or server process."""

    def __init__(
        self,
        *,
        max_connections: int = 4,
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
        preferred_port: int | None = None,
        launcher: str | None = None,
        grid_url: str | None = None,
        public_url: str | None = None,
    ) -> None:
        """``launcher``: subprocess (default) | selenium | playwright | grid (with
        ``grid_url``); ``public_url``: the server address remote browsers reach."""
        if default_platform is not None and default_platform not in PLATFORMS:
            raise InvalidInputError(
                f"unknown platform {default_platform!r}; choose one of {PLATFORMS}"
            )
        self.default_platform = default_platform
        self.threads = threads
        self.launcher = launcher
        self.grid_url = grid_url
        self.public_url = public_url
        # A Grid session on a cold JVM takes longer than a local browser.
        self.launch_timeout = max(launch_timeout, 60.0) if grid_url else launch_timeout
        self.metrics = metrics
        self.server = server or WebAccelServer(host, port, preferred_port=preferred_port)
        self.native = NativeRunner()
        # Model bytes travel by CID: the server's trustless gateway serves the
        # blocks and the page verifies each one and caches the file by CID.
        self.blocks: Any = None
        if content_addressed:
            from webaccel.content.gateway import gateway_routes
            from webaccel.content.store import BlockStore

            self.blocks = BlockStore.default()
            self.server.add_routes(gateway_routes(self.blocks, upload_token=self.server.token))
        self.pool = ResourcePool(
            max_connections=max(1, max_connections),
            browser_preferences=browser_preferences,
            default_browser=default_browser,
            adaptive_scaling=adaptive_scaling,
            connection_timeout=launch_timeout,
            max_retries=max_retries,
            launcher=self._launch,
            resolver=self._resolve,
            metrics=metrics,
        )

    async def _launch(self, family: str) -> WorkerTransport:
        return await launch_worker(
            self.server,
            family,
            launcher=self.launcher,
            grid_url=self.grid_url,
            public_url=self.public_url,
            timeout=self.launch_timeout,
            threads=self.threads,
        )

    async def start(self) -> None:
        await self.server.start()
        await self.pool.start(wait=False)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pool.close(drain=False, timeout=5)
        await self.server.stop()

    # ------------------------------------------------------------ models
    async def _resolve(self, name: str, model_type: str | None) -> ResolvedModel:
        spec = registry.get(name)
        if model_type is not None and model_type != spec.model_type:
            raise InvalidInputError(f"{name} is a {spec.model_type} model, not {model_type}")
        variants = []
        for precision in registry.PRECISIONS:
            path = spec.onnx_path(precision)
            cid = size = None
            if self.blocks is not None and path.is_file():
                # Built files go by CID; variants nobody built yet are built on
                # first request behind /models/ (quantizing here would stall).
                cid = await asyncio.to_thread(content_id, path, self.blocks)
                size = path.stat().st_size
                url = f"/ipfs/{cid}"
            else:
                url = self.server.model_files.add_lazy(
                    f"{spec.name}/{precision}/model.onnx",
                    lambda p=precision: spec.ensure_onnx(p),  # type: ignore[misc]
                )
            for backend in BACKENDS:
                variants.append(
                    ModelRef(
                        key=f"{spec.name}/{precision}/{backend}",
                        name=spec.name,
                        url=url,
                        backend=backend,
                        precision=precision,
                        cid=cid,
                        size_bytes=size,
                    )
                )
        return ResolvedModel(
            name=spec.name,
            model_type=spec.model_type,
            variants=tuple(variants),
            # Requests of equal padded shape share a run (the pool checks shapes).
            batchable=True,
            output_names=spec.output_names,
            # Without an explicit precision: fp32 everywhere (the accuracy
            # reference); lower precisions only when asked for.
            auto_precisions=("fp32",),
            shape_buckets=spec.shape_buckets,
        )

    async def any_worker(self) -> WorkerTransport:
        """A live worker (launching one if the pool has none yet)."""
        async with self.pool.get_connection(None) as lease:
            return lease.worker

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
    ) -> dict[str, Any]:
        """Run one request; ``native_fallback``: run in-process when no browser can serve."""
        t_start = time.perf_counter()
        options = validate_options(options)
        precision = parse_precision(options)
        spec = registry.get(model_name)
        if input_data is None:
            raise InvalidInputError("no input: pass input_data (or input_text)")
        if spec.build_parts is not None:
            return await self._run_parts(
                spec,
                input_data,
                options,
                precision or "fp32",
                platform=platform,
                browser=browser,
                t_start=t_start,
            )
        raw = isinstance(input_data, dict)
        if raw:
            prepared = Prepared(raw_tensors(input_data))
        else:
            prepared = await asyncio.to_thread(spec.processor().preprocess, input_data, options)
        t_pre = time.perf_counter()
        requested = platform or self.default_platform or "auto"
        try:
            target, reason = await self._platform_for(
                requested, explicit=platform is not None, precision=precision or "fp32"
            )
        except (BackendUnavailableError, BrowserLaunchError):
            if not native_fallback:
                raise
            target, reason = None, None  # the pool raises again below; then we go native
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
                platform=target,
                browser=browser or ("firefox" if options.get("optimize_for_audio") else None),
                options=pool_options,
                priority=int(options.get("priority", 0)),
                timeout=float(options["timeout"]) if "timeout" in options else None,
            )
        except (BackendUnavailableError, BrowserLaunchError) as exc:
            if not native_fallback:
                raise
            result = await self._run_native(
                spec, prepared, precision or "fp32", None if raw else spec.output_names, exc
            )
            reason = f"no browser could serve ({exc.message}); ran in native onnxruntime"
        t_run = time.perf_counter()
        if raw:
            outputs: dict[str, Any] = dict(result.outputs)
        else:
            outputs = await asyncio.to_thread(
                spec.processor().postprocess, result.outputs, prepared
            )
        t_end = time.perf_counter()
        return self._describe(
            spec,
            result,
            requested,
            reason,
            outputs,
            {
                "preprocess_ms": (t_pre - t_start) * 1000,
                "postprocess_ms": (t_end - t_run) * 1000,
                "latency_ms": (t_end - t_start) * 1000,
            },
        )

    async def _run_parts(
        self,
        spec: ModelSpec,
        data: Any,
        options: dict[str, Any],
        precision: str,
        *,
        platform: str | None,
        browser: str | None,
        t_start: float,
    ) -> dict[str, Any]:
        """A model of several graphs driven by a Python loop (Whisper: encoder once,
        then one decoder step per token with the KV cache as tensors).

        The loop runs in a thread and each step is a bridge round trip to one
        leased worker, so both graphs stay loaded in one page.
        """
        from webaccel.models import whisper

        timeout = float(options.get("timeout", 300.0))
        parts = await asyncio.to_thread(spec.ensure_parts, precision)
        requested = platform or self.default_platform or "auto"
        target, reason = await self._platform_for(
            requested, explicit=platform is not None, precision=precision
        )
        loop = asyncio.get_running_loop()
        totals = {"page_ms": 0.0, "round_trip_ms": 0.0, "runs": 0, "load_ms": 0.0}
        async with self.pool.get_connection(spec.model_type, target, browser) as lease:
            keys: dict[str, str] = {}
            for part, path in parts.items():
                cid = (
                    await asyncio.to_thread(content_id, path, self.blocks)
                    if self.blocks is not None
                    else None
                )
                url = (
                    f"/ipfs/{cid}"
                    if cid
                    else self.server.model_files.add(f"{spec.name}/{precision}/{part}.onnx", path)
                )
                ref = ModelRef(
                    key=f"{spec.name}/{precision}/{part}/{lease.backend}",
                    name=spec.name,
                    url=url,
                    backend=lease.backend,
                    precision=precision,
                    cid=cid,
                )
                totals["load_ms"] += (await lease.load_model(ref, timeout=timeout)).load_ms
                keys[part] = ref.key

            sent: dict[tuple[str, str], np.ndarray] = {}  # what the page kept, by input

            def run(part: str, feeds: Any) -> dict[str, np.ndarray]:
                # An input that is the very array sent last time for this part
                # (the loop's fixed inputs) is reused from the page, not resent.
                send, reuse, keep = {}, [], []
                for name, arr in dict(feeds).items():
                    if sent.get((part, name)) is arr:
                        reuse.append(name)
                        continue
                    send[name] = arr
                    if arr.nbytes >= KEEP_INPUT_BYTES:
                        keep.append(name)
                        sent[(part, name)] = arr  # holding it keeps its id() unique
                opts = {"reuse": reuse, "keep": keep} if reuse or keep else None
                fut = asyncio.run_coroutine_threadsafe(
                    lease.run(keys[part], send, timeout=timeout, options=opts), loop
                )
                res = fut.result()
                totals["page_ms"] += res.page_ms
                totals["round_trip_ms"] += res.round_trip_ms
                totals["runs"] += 1
                return dict(res.outputs)

            transcript = await asyncio.to_thread(whisper.transcribe, run, data)
        return {
            "model": spec.name,
            "task": spec.task,
            "text": transcript.text,
            "tokens": transcript.tokens,
            "windows": transcript.windows,
            "browser": lease.browser,
            "worker_id": lease.worker_id,
            "backend": lease.backend,
            "requested_backend": requested,
            "fallback_reason": reason if lease.backend != requested else None,
            "precision": precision,
            "page_ms": totals["page_ms"],
            "round_trip_ms": totals["round_trip_ms"],
            "bridge_runs": totals["runs"],
            "load_ms": totals["load_ms"],
            "latency_ms": (time.perf_counter() - t_start) * 1000,
        }

    async def _platform_for(
        self, requested: str, *, explicit: bool, precision: str
    ) -> tuple[str | None, str | None]:
        """The backend constraint to give the pool, and why it differs from ``requested``.

        The pool treats a backend as a hard constraint; users expect a missing
        one to fall back (webgpu -> webnn -> wasm) with the reason reported.
        A *default* platform is a preference: like ``auto`` it never lands on
        a software WebGPU adapter.
        """
        if requested not in PLATFORMS:
            raise InvalidInputError(f"unknown platform {requested!r}; choose one of {PLATFORMS}")
        workers = [w for w in self.pool.workers.values() if w.alive]
        if not workers:
            workers = [await self.any_worker()]
        choices = [
            choose_backend(requested, w.capabilities, precision=precision, explicit=explicit)
            for w in workers
        ]
        if requested == "auto":
            # The pool's own routing prefers real GPUs and skips software adapters;
            # report why this machine's best worker did not give a GPU.
            return None, next((c.reason for c in choices if c.backend != "webgpu"), None)
        if any(c.backend == requested for c in choices):
            return requested, None
        return choices[0].backend, choices[0].reason

    def _describe(
        self,
        spec: ModelSpec,
        result: InferenceResult,
        requested: str,
        reason: str | None,
        outputs: dict[str, Any],
        times: dict[str, float],
    ) -> dict[str, Any]:
        worker = self.pool.workers.get(result.worker_id)
        caps = worker.capabilities if worker is not None else {}
        gpu = caps.get("webgpu") or {}
        wanted = requested
        fell_back = result.backend != wanted
        return {
            "model": spec.name,
            "task": spec.task,
            **outputs,
            "browser": result.browser,
            "worker_id": result.worker_id,
            "user_agent": caps.get("userAgent", ""),
            "backend": result.backend,
            "requested_backend": wanted,
            "fallback_reason": (reason or "; ".join(result.reasons)) if fell_back else None,
            "reasons": list(result.reasons),
            "adapter": {k: gpu.get(k) for k in ("vendor", "architecture", "software")}
            if gpu.get("available")
            else None,
            "precision": result.precision,
            "page_ms": result.page_ms,
            "round_trip_ms": result.run_ms,
            "queue_ms": result.queue_ms,
            "load_ms": result.load_ms,
            "attempts": result.attempts,
            "batch_size": result.batch_size,
            "shape_bucket": result.shape_bucket,
            **times,
        }
