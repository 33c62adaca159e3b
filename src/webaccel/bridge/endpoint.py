"""The asyncio side of the bridge: one :class:`PageConnection` per page socket.

It only moves bytes: every message goes through the pure
:class:`~webaccel.bridge.session.BridgeSession`, and its events resolve
futures keyed by request id.  :class:`WorkerHub` maps worker ids to their
current connection, so a page that reconnects (same worker id) keeps serving,
and holds one live socket per worker id (:meth:`WorkerHub.claim`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from webaccel.bridge import frames
from webaccel.bridge.session import (
    BridgeSession,
    Failure,
    Heartbeat,
    Hello,
    Malformed,
    Reply,
    Stale,
    StreamStep,
)
from webaccel.errors import (
    CancelledError_,
    TimeoutError_,
    WebAccelError,
    WorkerLostError,
)

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 30.0


class PageConnection:
    def __init__(self, ws: WebSocket, worker_id: str) -> None:
        self.ws = ws
        self.worker_id = worker_id
        self.session = BridgeSession()
        self.capabilities: dict[str, Any] = {}
        self.loaded: tuple[str, ...] = ()
        self.last_seen = time.monotonic()
        self.protocol_errors = 0
        self.closed = asyncio.Event()
        self._futures: dict[str, asyncio.Future[frames.Frame]] = {}
        self._streams: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._send_lock = asyncio.Lock()

    @property
    def open(self) -> bool:
        return not self.closed.is_set()

    # ------------------------------------------------------------ sending
    async def _send(self, message: str | bytes) -> None:
        if self.closed.is_set():
            raise WorkerLostError(f"worker {self.worker_id}: its page is disconnected")
        try:
            async with self._send_lock:
                if isinstance(message, str):
                    await self.ws.send_text(message)
                else:
                    await self.ws.send_bytes(message)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            self._close(f"send failed: {exc}")
            raise WorkerLostError(
                f"worker {self.worker_id}: the page went away while sending"
            ) from exc

    async def _await_reply(self, request_id: str, timeout: float, what: str) -> frames.Frame:
        fut = self._futures[request_id]
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            cancel = self.session.cancel(request_id)
            if cancel is not None:
                with contextlib.suppress(WebAccelError):
                    await self._send(cancel)
            raise TimeoutError_(
                f"worker {self.worker_id} did not answer {what} within {timeout:.1f} s; "
                "the page may be hung or overloaded (raise the timeout or add workers)"
            ) from None
        except asyncio.CancelledError:
            cancel = self.session.cancel(request_id)
            if cancel is not None and self.open:
                with contextlib.suppress(Exception):
                    await self._send(cancel)
            raise
        finally:
            self._futures.pop(request_id, None)
            self._streams.pop(request_id, None)

    async def request(
        self,
        kind: str,
        *,
        model_name: str | None = None,
        data: dict[str, Any] | None = None,
        timeout: float = 60.0,
    ) -> frames.Frame:
        request_id, message = self.session.request(kind, model_name=model_name, data=data)
        self._futures[request_id] = asyncio.get_running_loop().create_future()
        await self._send(message)
        return await self._await_reply(request_id, timeout, kind)

    async def run(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        output_names: list[str] | None = None,
        timeout: float = 60.0,
        kind: str = "run",
        options: dict[str, Any] | None = None,
        on_stream: Callable[[dict[str, Any]], None] | None = None,
    ) -> frames.Frame:
        request_id, message = self.session.request_run(
            key, inputs, output_names=output_names, kind=kind, options=options
        )
        self._futures[request_id] = asyncio.get_running_loop().create_future()
        if on_stream is not None:
            self._streams[request_id] = on_stream
        await self._send(message)
        return await self._await_reply(request_id, timeout, kind)

    async def send_heartbeat(self, seq: int) -> None:
        await self._send(self.session.heartbeat(seq))

    # ------------------------------------------------------------ receiving
    def feed(self, message: str | bytes) -> Hello | Malformed | None:
        """Handle one message from the page; returns a Hello event when one arrives, and
        a Malformed one (whose answer the caller sends) for a frame that does not parse."""
        self.last_seen = time.monotonic()
        event = self.session.receive(message)
        if isinstance(event, Malformed):
            self.protocol_errors += 1
            if event.request_id is not None:
                fut = self._futures.get(event.request_id)
                if fut is not None and not fut.done():
                    fut.set_exception(event.error)
            return event
        if isinstance(event, Reply):
            fut = self._futures.get(event.request_id)
            if fut is not None and not fut.done():
                fut.set_result(event.frame)
        elif isinstance(event, Failure):
            fut = self._futures.get(event.request_id)
            if fut is not None and not fut.done():
                fut.set_exception(event.error)
        elif isinstance(event, StreamStep):
            handler = self._streams.get(event.request_id)
            if handler is not None:
                handler(event.data)
        elif isinstance(event, Hello):
            self.capabilities = event.capabilities
            self.loaded = event.loaded
            return event
        elif isinstance(event, Stale):
            log.debug("worker %s: late reply for %s dropped", self.worker_id, event.request_id)
        elif isinstance(event, Heartbeat):
            pass
        return None

    def _close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for request_id, fut in list(self._futures.items()):
            if not fut.done():
                fut.set_exception(
                    WorkerLostError(
                        f"worker {self.worker_id} disconnected ({reason}) before answering "
                        f"{request_id}; "
                        "the request can be retried on another worker"
                    )
                )
        self.session.pending.clear()

    def cancel_all(self, reason: str) -> None:
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(CancelledError_(reason))


class WorkerHub:
    """Worker id -> live page connection; launchers wait here for a page's hello."""

    def __init__(self) -> None:
        self.connections: dict[str, PageConnection] = {}  # said hello
        self._sockets: dict[str, PageConnection] = {}  # claimed, from handshake to close
        self._waiters: dict[str, list[asyncio.Future[PageConnection]]] = {}
        self.on_connect: list[Callable[[PageConnection], None]] = []
        self._closing: set[asyncio.Task[None]] = set()

    def claim(self, worker_id: str, ws: WebSocket, *, same_page: bool) -> PageConnection | None:
        """Reserve ``worker_id`` for a new socket (before the handshake is accepted).

        One live socket per worker id: while one is open, another is refused
        (None), since it would receive that worker's requests and inputs.  The
        exception is ``same_page``: the socket proved with the page's session
        secret that it comes from the page that holds the id, i.e. the page
        reconnected after its old socket dropped without the server noticing
        yet; the old socket is closed (its pending requests fail over) and the
        new one takes its place.  Synchronous, so two handshakes cannot both win.
        """
        old = self._sockets.get(worker_id)
        if old is not None and old.open:
            if not same_page:
                return None
            old._close("replaced by a reconnect of the same page")
            task = asyncio.get_running_loop().create_task(self._close_socket(old))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        conn = PageConnection(ws, worker_id)
        self._sockets[worker_id] = conn
        return conn

    @staticmethod
    async def _close_socket(conn: PageConnection) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.ws.close(code=4001, reason="replaced by a reconnect"), 2)

    def live(self, worker_id: str) -> bool:
        """Whether a socket (said hello or not) holds ``worker_id``."""
        conn = self._sockets.get(worker_id)
        return conn is not None and conn.open

    async def wait_for(self, worker_id: str, timeout: float) -> PageConnection:
        conn = self.connections.get(worker_id)
        if conn is not None and conn.open:
            return conn
        fut: asyncio.Future[PageConnection] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(worker_id, []).append(fut)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            waiters = self._waiters.get(worker_id, [])
            if fut in waiters:
                waiters.remove(fut)

    async def serve(
        self, ws: WebSocket, worker_id: str, *, conn: PageConnection | None = None
    ) -> None:
        """Pump one accepted socket until it closes.  Never raises for bad input.

        ``conn``: what :meth:`claim` returned before the handshake; without it
        the id is claimed here, and the socket closed (1008) if it is taken.
        """
        if conn is None:
            conn = self.claim(worker_id, ws, same_page=False)
            if conn is None:
                with contextlib.suppress(Exception):
                    await ws.close(code=1008, reason="worker id already has a live connection")
                return
        reason = "closed"
        try:
            while True:
                msg = await ws.receive()
                if msg["type"] == "websocket.disconnect":
                    reason = f"socket closed ({msg.get('code')})"
                    break
                payload = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
                if payload is None:
                    continue
                event = conn.feed(payload)
                if isinstance(event, Malformed):
                    # Answer and keep the socket: one bad frame must not cost the
                    # page its loaded models and in-flight requests.
                    log.warning("worker %s sent a malformed frame: %s", worker_id, event.error)
                    with contextlib.suppress(WebAccelError):
                        await conn._send(event.answer())
                elif event is not None:
                    self._register(conn)
        except WebSocketDisconnect as exc:
            reason = f"socket closed ({exc.code})"
        except Exception as exc:  # a driver bug must not take the server down
            log.exception("worker %s connection failed", worker_id)
            reason = f"internal error: {exc}"
        finally:
            conn._close(reason)
            if self.connections.get(worker_id) is conn:
                del self.connections[worker_id]
            if self._sockets.get(worker_id) is conn:
                del self._sockets[worker_id]

    def _register(self, conn: PageConnection) -> None:
        old = self.connections.get(conn.worker_id)
        if old is not None and old is not conn:
            old._close("replaced by a newer connection from the same page")
        self.connections[conn.worker_id] = conn
        for fut in self._waiters.pop(conn.worker_id, []):
            if not fut.done():
                fut.set_result(conn)
        for callback in self.on_connect:
            callback(conn)
