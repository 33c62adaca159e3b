"""A worker: one browser page over the bridge, as a :class:`WorkerTransport`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np

from webaccel import paths
from webaccel.bridge import frames
from webaccel.bridge.endpoint import PageConnection
from webaccel.bridge.origin import STABLE_ORIGIN
from webaccel.browsers import launchers
from webaccel.browsers.chromium import chromium_flags, find_chromium, sandbox_plan
from webaccel.browsers.launching import tool_version, wait_for_hello
from webaccel.browsers.process import BrowserProcess, ProfileLease, hand_over, unreachable_dir
from webaccel.errors import BrowserLaunchError, ProtocolError, WorkerLostError
from webaccel.pool.routing import WorkerCaps
from webaccel.pool.transport import LoadInfo, ModelRef, RunResult, StreamEvent
from webaccel.server import WebAccelServer


def backends_from_capabilities(caps: dict[str, Any]) -> list[str]:
    """Backends a page offers, best first; a software WebGPU adapter goes last."""
    return list(WorkerCaps.parse(caps).backends)


class BrowserWorker:
    """Implements :class:`webaccel.pool.transport.WorkerTransport` for a page we launched."""

    def __init__(
        self,
        server: WebAccelServer,
        worker_id: str,
        browser: str,
        process: BrowserProcess | None,
        *,
        page_origin: str | None = None,
    ) -> None:
        """``page_origin``: the origin the page was opened under when it is not the
        server's own address (:mod:`webaccel.bridge.origin`)."""
        self.server = server
        self.page_origin = page_origin
        self.id = worker_id
        self.browser = browser
        self.process = process
        self.capabilities: dict[str, Any] = {}
        self.launch_ms = 0.0
        self._closed = False

    @property
    def connection(self) -> PageConnection | None:
        return self.server.hub.connections.get(self.id)

    @property
    def alive(self) -> bool:
        if self._closed:
            return False
        if self.process is not None and self.process.returncode is not None:
            return False
        conn = self.connection
        return conn is not None and conn.open

    def available_backends(self) -> list[str]:
        return backends_from_capabilities(self.capabilities)

    def _conn(self) -> PageConnection:
        conn = self.connection
        if conn is None or not conn.open or not self.alive:
            raise WorkerLostError(
                f"worker {self.id} ({self.browser}) is gone; retry on another worker"
            )
        return conn

    async def load_model(self, model: ModelRef, *, timeout: float = 120.0) -> LoadInfo:
        url = model.url
        if self.page_origin and url.startswith(self.server.url + "/"):
            url = self.page_origin + url[len(self.server.url) :]  # same origin as the page
        data = {
            "key": model.key,
            "url": url,
            "backend": model.backend,
            "cid": model.cid,
            "session_options": model.session_options,
        }
        reply = await self._conn().request(
            "load_model", model_name=model.key, data=data, timeout=timeout
        )
        d = reply.data
        return LoadInfo(
            key=model.key,
            backend=str(d.get("backend", model.backend)),
            load_ms=float(d.get("load_ms", 0.0)),
            input_names=tuple(d.get("inputs", ())),
            output_names=tuple(d.get("outputs", ())),
            # The page says "cache" for its CID store; the metrics tier is "browser-cache".
            source={"cache": "browser-cache"}.get(
                str(d.get("source")), str(d.get("source", "network"))
            ),
            decode_step=d.get("decode_step"),
        )

    async def run(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        output_names: list[str] | None = None,
        timeout: float = 60.0,
        options: dict[str, Any] | None = None,
    ) -> RunResult:
        """``options``: ``{"keep": [names]}`` keeps those inputs in the page for later
        runs of ``key``; ``{"reuse": [names]}`` uses the kept ones instead of sending."""
        start = time.perf_counter()
        reply = await self._conn().run(
            key, inputs, output_names=output_names, timeout=timeout, options=options
        )
        round_trip = (time.perf_counter() - start) * 1000
        if not isinstance(reply, frames.TensorFrame):
            raise ProtocolError(f"worker {self.id} answered a run with a {reply.type} text frame")
        return RunResult(
            outputs=reply.tensors,
            page_ms=float(reply.data.get("page_ms", 0.0)),
            round_trip_ms=round_trip,
            handle_ms=_float_or_none(reply.data.get("handle_ms")),
        )

    async def stream(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        kind: str = "generate",
        options: dict[str, Any] | None = None,
        timeout: float = 900.0,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The page's ``stream`` frames as they arrive, then its closing reply.

        Leaving early (``aclose()``, ``break``) cancels the request, and
        :class:`PageConnection` tells the page to stop its loop.
        """
        steps: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        reply = asyncio.ensure_future(
            self._conn().run(
                key,
                inputs,
                kind=kind,
                options=options,
                timeout=timeout,
                on_stream=steps.put_nowait,
            )
        )
        getter: asyncio.Future[dict[str, Any]] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(steps.get())
                await asyncio.wait({getter, reply}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield StreamEvent(getter.result())
                    continue
                getter.cancel()
                while not steps.empty():  # steps that arrived with the reply
                    yield StreamEvent(steps.get_nowait())
                yield StreamEvent(dict(reply.result().data), final=True)  # raises the page's error
                return
        finally:
            if getter is not None and not getter.done():
                getter.cancel()
            if not reply.done():
                reply.cancel()  # PageConnection sends the page a cancel for this request
                with contextlib.suppress(BaseException):
                    await reply

    async def unload(self, key: str) -> None:
        await self._conn().request("unload", model_name=key, timeout=30)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Its session secret dies with it: nothing can reconnect as this worker.
        self.server.credentials.forget(self.id)
        conn = self.connection
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.ws.close()
        if self.process is not None:
            await self.process.terminate_async()


def profiles_root(home: Path | None = None) -> Path:
    """Where persistent browser profiles live (``$WEBACCEL_PROFILES`` overrides).

    ``home``: the browser user's home when browsers run as another account
    (``$WEBACCEL_HOME`` is usually under root's home, which that user cannot enter).
    """
    env = os.environ.get("WEBACCEL_PROFILES")
    if env:
        return Path(env)
    return home / "profiles" if home is not None else paths.home() / "profiles"


async def launch_chromium(
    server: WebAccelServer,
    *,
    worker_id: str | None = None,
    binary: str | None = None,
    timeout: float = 30.0,
    headless: bool = True,
    threads: int = 1,
    ort_build: str = "auto",
    extra_flags: list[str] | None = None,
    persistent_profile: bool = True,
) -> BrowserWorker:
    """Start headless Chromium on the worker page; ready once the page says hello.

    ``persistent_profile``: reuse a profile under ``$WEBACCEL_HOME/profiles`` so
    models the page cached by CID (OPFS / Cache API) survive browser restarts;
    a temporary profile otherwise (or when all persistent ones are in use).
    """
    exe = find_chromium(binary)
    plan = sandbox_plan(exe)  # as root: an unprivileged user, sandbox on where it can work
    user = plan.user
    worker_id = worker_id or f"chromium-{uuid.uuid4().hex[:8]}"
    root = profiles_root(user.home if user else None)
    if user is not None and persistent_profile:
        root.mkdir(parents=True, exist_ok=True)
        blocked = unreachable_dir(root, user)
        if blocked is not None:
            raise BrowserLaunchError(
                f"the browser profiles directory {root} is out of reach of the browser user "
                f"{user.name!r} ({blocked} is closed to it); set WEBACCEL_PROFILES to a "
                f"directory that user can enter (default: {user.home / 'profiles'})"
            )
    lease = ProfileLease.acquire("chromium", root) if persistent_profile else None
    profile = lease.path if lease else Path(tempfile.mkdtemp(prefix="webaccel-chromium-"))
    if user is not None:
        hand_over(profile, user)
    log_path = Path(tempfile.mkstemp(prefix="webaccel-chromium-", suffix=".log")[1])
    # A persistent profile's model cache is only found again under the same origin.
    stable = lease is not None
    url = server.worker_page_url(worker_id, stable_origin=stable, threads=threads, ort=ort_build)
    argv = [
        str(exe),
        *chromium_flags(
            profile,
            server_host=server.host,
            headless=headless,
            sandbox=plan.sandbox,
            stable_host_to=server.loopback_address if stable else None,
        ),
        *(extra_flags or []),
        url,
    ]
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    process = await loop.run_in_executor(
        None,
        lambda: BrowserProcess(
            argv,
            profile_dir=profile,
            log_path=log_path,
            keep_profile=lease is not None,
            on_exit=lease.release if lease else None,
            user=user,
        ),
    )
    worker = BrowserWorker(
        server, worker_id, "chromium", process, page_origin=STABLE_ORIGIN if stable else None
    )

    def exited() -> str | None:
        if process.returncode is None:
            return None
        return (
            f"it exited with code {process.returncode}. Its output ends with:\n{process.log_tail()}"
        )

    try:
        conn = await wait_for_hello(server, worker_id, timeout, what="Chromium", failed=exited)
    except BrowserLaunchError as exc:
        tail = (
            ""
            if process.returncode is not None
            else (f". Its output ends with:\n{process.log_tail()}")
        )
        await process.terminate_async()
        server.credentials.forget(worker_id)
        raise BrowserLaunchError(exc.message + tail, details={"binary": str(exe)}) from None
    except BaseException:
        await process.terminate_async()
        server.credentials.forget(worker_id)
        raise
    worker.capabilities = conn.capabilities
    worker.launch_ms = (time.perf_counter() - start) * 1000
    return worker


async def _launch(server: WebAccelServer, req: launchers.LaunchRequest) -> BrowserWorker:
    return await launch_chromium(server, **req.options)


def _status() -> dict[str, Any]:
    from webaccel.errors import WebAccelError

    try:
        chromium: str | None = str(find_chromium())
    except WebAccelError as exc:
        chromium, why = None, exc.message
    else:
        why = ""
    return {
        "launcher": "subprocess",
        "browser": "chromium",
        "ok": chromium is not None,
        "binary": chromium,
        "version": tool_version([chromium, "--version"]) if chromium else None,
        "why": why,
        "switches": chromium_flags(Path("<profile>")),
    }


launchers.register(launchers.Launcher("subprocess", "chromium", _launch, _status))


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
