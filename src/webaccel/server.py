"""The single ASGI app and the in-process server that runs it.

One port serves everything: the worker page and onnxruntime-web assets
(``/worker/...``), model bytes (``/models/...``), the bridge (``/ws``) and
the one health check, ``/healthz`` (``/health``, vLLM's name, beside it);
other parts (gateway, metrics, OpenAI API) add their routes via
``extra_routes`` and their health via :meth:`WebAccelServer.add_health_check`.
Every response carries COOP/COEP so pages are ``crossOriginIsolated`` (WASM
threads need SharedArrayBuffer).

Errors from these endpoints (and any route that lets one escape) answer in
the bridge's shape, ``{"error": {"code", "message"}}``, with the status from
the one table (:func:`webaccel.errors.json_error_response`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from webaccel.bridge.credentials import (
    SUBPROTOCOL,
    CredentialError,
    CredentialStore,
    secret_from_subprotocols,
)
from webaccel.bridge.endpoint import WorkerHub
from webaccel.bridge.origin import STABLE_HOST, STABLE_ORIGIN
from webaccel.errors import (
    INTERNAL_MESSAGE,
    BackendUnavailableError,
    ForbiddenError,
    InternalError,
    InvalidInputError,
    ModelNotFoundError,
    NotFoundError,
    UnauthorizedError,
    WebAccelError,
    json_error_response,
)

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"
VENDOR_DIR = WEB_DIR / "vendor" / "ort"

# Python 3.11's mimetypes lacks these; a module script served as
# octet-stream is refused by browsers.
mimetypes.add_type("text/javascript", ".mjs")
mimetypes.add_type("application/wasm", ".wasm")

ISOLATION_HEADERS = [
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-embedder-policy", b"require-corp"),
]


class IsolationHeaders:
    """Adds COOP/COEP to every HTTP response, and CORP where a route set none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in ISOLATION_HEADERS if h[0] not in names]
                if b"cross-origin-resource-policy" not in names:
                    headers.append((b"cross-origin-resource-policy", b"same-origin"))
                if b"cache-control" not in names and scope["path"].startswith("/worker/"):
                    # Browser profiles persist (for the CID model cache): make
                    # pages revalidate our JS (ETag -> 304) so an upgraded
                    # webaccel never runs a stale runtime.
                    headers.append((b"cache-control", b"no-cache"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ModelFiles:
    """Model key -> file on disk, served at ``/models/{key}`` to token holders.

    A file may be registered lazily (``add_lazy``): it is built on the first
    request for it (e.g. a precision variant nobody has asked for yet), off
    the event loop, once even when several pages ask at the same time.
    """

    def __init__(self) -> None:
        self._files: dict[str, Path] = {}
        self._builders: dict[str, Callable[[], Path]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def add(self, key: str, path: Path) -> str:
        self._files[key] = Path(path)
        return f"/models/{key}"

    def add_lazy(self, key: str, build: Callable[[], Path]) -> str:
        self._builders[key] = build
        return f"/models/{key}"

    def get(self, key: str) -> Path | None:
        return self._files.get(key)

    async def resolve(self, key: str) -> Path | None:
        if key in self._files or key not in self._builders:
            return self._files.get(key)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if key not in self._files:
                self._files[key] = Path(await asyncio.to_thread(self._builders[key]))
        return self._files[key]


HealthCheck = Callable[[], dict[str, Any]]


def health_routes(checks: Callable[[], Sequence[HealthCheck]]) -> list[BaseRoute]:
    """``GET /healthz`` and ``GET /health``: 200 ``{"status": "ok", ...}`` with every
    check's fields merged in; 503 ``"degraded"`` (load balancers take the node out)
    when a check raises or returns a ``"problem"``, all of them joined in ``problem``.
    ``checks`` is called per request, so checks added later count."""

    async def health(request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok"}
        problems: list[str] = []
        for check in checks():
            try:
                part = dict(check())
            except Exception as exc:  # noqa: BLE001 - a failing check is the answer
                log.warning("health check failed", exc_info=exc)
                problems.append(f"{getattr(check, '__name__', 'check')} failed: {exc}")
                continue
            problem = part.pop("problem", None)
            if problem:
                problems.append(str(problem))
            body.update(part)
        if problems:
            body["status"], body["problem"] = "degraded", "; ".join(problems)
        return JSONResponse(
            body, status_code=503 if problems else 200, headers={"cache-control": "no-store"}
        )

    return [Route("/healthz", health, methods=["GET"]), Route("/health", health, methods=["GET"])]


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return json_error_response(  # the path is not echoed back
            NotFoundError("nothing is served at this path"), headers=exc.headers
        )
    return Response(
        exc.detail, status_code=exc.status_code, headers=exc.headers, media_type="text/plain"
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this answer, so the server logs the traceback once.
    return json_error_response(InternalError(INTERNAL_MESSAGE))


def _presented_token(request: Request | WebSocket) -> str:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.query_params.get("token", "")


def create_app(
    *,
    token: str,
    hub: WorkerHub,
    model_files: ModelFiles,
    allowed_origins: Callable[[], set[str]],
    extra_routes: Sequence[BaseRoute] = (),
    health: HealthCheck | None = None,
    token_check: Callable[[str, str | None], bool] | None = None,
    health_checks: Callable[[], Sequence[HealthCheck]] | None = None,
    credentials: CredentialStore | None = None,
    allowed_hosts: Callable[[], set[str]] | None = None,
) -> ASGIApp:
    """``health``: extra fields for ``/healthz`` (one check); ``health_checks``: a
    function giving every check (the server's list, read per request);
    ``credentials``: launch credentials and session secrets of launched pages;
    ``allowed_hosts``: the ``Host`` names to answer (None: any)."""
    creds = credentials if credentials is not None else CredentialStore()

    def authorized(request: Request | WebSocket, worker_id: str | None = None) -> bool:
        presented = _presented_token(request)
        if secrets.compare_digest(presented.encode(), token.encode()):
            return True
        # A launched page's session secret (Bearer) opens model bytes.
        if worker_id is None and creds.worker_of(presented) is not None:
            return True
        # Other tokens (join tokens, webaccel.browsers.remote) admit pages to the
        # bridge (only under the worker ids issued for them) and to model bytes.
        return token_check is not None and bool(presented) and token_check(presented, worker_id)

    async def bridge(ws: WebSocket) -> None:
        origin = ws.headers.get("origin")
        # Browsers always send Origin; non-browser workers (Node) may not.  A
        # foreign origin is another site's page trying to use our workers.
        if origin is not None and origin not in allowed_origins():
            log.warning("refused bridge socket from foreign origin")
            await ws.close(code=1008, reason="origin not allowed")
            return
        worker_id = ws.query_params.get("worker", "")
        if not worker_id or len(worker_id) > 128:
            await ws.close(code=1008, reason="missing worker id")
            return
        # A launched page proves itself with its session secret (webaccel.bridge.
        # credentials); such a worker id opens to nothing else, not even the master token.
        offered = list(ws.scope.get("subprotocols") or [])
        secret = secret_from_subprotocols(offered)
        if secret is not None:
            if creds.worker_of(secret) != worker_id:
                await ws.close(code=1008, reason="wrong session secret for this worker id")
                return
        elif creds.bound(worker_id):
            await ws.close(code=1008, reason="this worker id belongs to a launched page")
            return
        elif not authorized(ws, worker_id):
            await ws.close(code=1008, reason="missing or wrong token")
            return
        conn = hub.claim(worker_id, ws, same_page=secret is not None)
        if conn is None:
            log.warning("refused a second bridge socket for a live worker id")
            await ws.close(code=1008, reason="worker id already has a live connection")
            return
        try:
            await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in offered else None)
        except BaseException:
            conn._close("handshake failed")
            raise
        await hub.serve(ws, worker_id, conn=conn)

    async def redeem(request: Request) -> Response:
        """``POST /bridge/session {worker, launch}``: a launch credential, once, for
        the page's session secret (in the body: never a URL)."""
        origin = request.headers.get("origin")
        if origin is not None and origin not in allowed_origins():
            return json_error_response(ForbiddenError("origin not allowed"))
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not all(
            isinstance(body.get(k), str) for k in ("worker", "launch")
        ):
            return json_error_response(InvalidInputError('send JSON {"worker", "launch"}'))
        try:
            secret = creds.redeem(body["worker"], body["launch"], time.monotonic())
        except CredentialError as exc:
            log.warning("refused a launch credential: %s", exc.message)
            return json_error_response(ForbiddenError(exc.message))
        return JSONResponse(
            {"worker": body["worker"], "secret": secret}, headers={"cache-control": "no-store"}
        )

    async def model(request: Request) -> Response:
        try:
            if not authorized(request):
                raise UnauthorizedError(
                    "missing or wrong token: send 'Authorization: Bearer <token>' with the "
                    "server's token or a join token"
                )
            path = await model_files.resolve(request.path_params["key"])
            if path is None or not path.is_file():
                raise ModelNotFoundError("no such model file on this server")
        except WebAccelError as exc:
            if not isinstance(exc, (UnauthorizedError, ModelNotFoundError)):
                log.warning("building model file failed: %s", exc.message)
            return json_error_response(exc)
        return FileResponse(path, media_type="application/octet-stream")

    def workers() -> dict[str, Any]:
        return {"workers": len(hub.connections)}

    def checks() -> list[HealthCheck]:
        out: list[HealthCheck] = [workers]
        if health is not None:
            out.append(health)
        if health_checks is not None:
            out.extend(health_checks())
        return out

    routes: list[BaseRoute] = [
        WebSocketRoute("/ws", bridge),
        Route("/bridge/session", redeem, methods=["POST"]),
        Route("/models/{key:path}", model),
        *health_routes(checks),
        *extra_routes,
        Mount("/worker", StaticFiles(directory=WEB_DIR, html=True), name="worker"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_exception, Exception: _unhandled},
    )
    if allowed_hosts is None:
        return IsolationHeaders(app)
    return KnownHosts(IsolationHeaders(app), allowed_hosts)


def host_allowed(host_header: str | None, allowed: set[str]) -> bool:
    """Whether a ``Host`` header names this server (its name without the port)."""
    if not host_header:
        return False
    name = host_header.strip().lower()
    if name.startswith("["):  # [v6]:port
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name in allowed


class KnownHosts:
    """Answers only requests whose ``Host`` is one of this server's names.

    A page on another site can make a victim's browser resolve its own host
    name to 127.0.0.1 (DNS rebinding) and read loopback servers; such requests
    carry the attacker's host name, so they are refused (400) here.  Starlette's
    TrustedHostMiddleware takes a fixed list; the names here grow at run time
    (an advertised public URL), so the check is a callable.
    """

    def __init__(self, app: ASGIApp, allowed: Callable[[], set[str]]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not host_allowed(host, self.allowed()):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                response = json_error_response(
                    InvalidInputError(
                        "unknown Host header: this server answers to its own address only "
                        "(a name you use for it must be advertised, e.g. --public-url)"
                    )
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class WebAccelServer:
    """Runs the app under uvicorn inside the current event loop.

    ``port=0`` picks a free port; the server binds loopback unless told otherwise.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        extra_routes: Sequence[BaseRoute] = (),
        health: Callable[[], dict[str, Any]] | None = None,
        token_check: Callable[[str, str | None], bool] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token or secrets.token_urlsafe(24)
        self.hub = WorkerHub()
        # Launch credentials and session secrets of the pages we launch.
        self.credentials = CredentialStore()
        self.model_files = ModelFiles()
        self._extra_routes = list(extra_routes)
        self.health = health  # extra fields for /healthz; may be set until start()
        self.health_checks: list[HealthCheck] = []  # more, added any time
        # (token, worker id or None for model bytes) -> allowed; for tokens other
        # than self.token (webaccel.browsers.remote.TokenStore.attach sets it).
        self.token_check = token_check
        # Origins of pages served at other addresses (a public/advertised address).
        self.extra_origins: set[str] = set()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def origins(self) -> set[str]:
        out = {self.url, f"http://localhost:{self.port}", f"http://127.0.0.1:{self.port}"}
        return out | {STABLE_ORIGIN} | self.extra_origins

    def host_names(self) -> set[str]:
        """The names this server answers to: loopback, its address, the stable worker
        origin's name, advertised URLs."""
        from urllib.parse import urlsplit

        names = {"localhost", "127.0.0.1", "::1", STABLE_HOST, self.host.lower()}
        return names | {(urlsplit(o).hostname or "").lower() for o in self.extra_origins}

    @property
    def loopback_address(self) -> str:
        """``host:port`` a browser on this machine connects to."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "localhost") else self.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def worker_page_url(self, worker_id: str, *, stable_origin: bool = False, **params: Any) -> str:
        """The page URL for a browser we launch: it carries a single-use launch
        credential bound to ``worker_id`` (never the master token: argv is public).

        ``stable_origin``: address the page as ``http://webaccel.localhost`` (the
        browser maps that name to :attr:`loopback_address`), so its origin -- and with
        it the OPFS model cache -- is the same whatever port this server got.
        """
        from urllib.parse import urlencode

        launch = self.credentials.issue(worker_id, time.monotonic())
        query = urlencode({"launch": launch, "worker": worker_id, **params})
        return f"{STABLE_ORIGIN if stable_origin else self.url}/worker/worker.html?{query}"

    def add_health_check(self, check: HealthCheck) -> None:
        """Fields for ``/healthz``; a ``"problem"`` key (or an exception) makes it 503."""
        self.health_checks.append(check)

    def add_routes(self, routes: Sequence[BaseRoute]) -> None:
        if self._server is not None:
            raise RuntimeError("add routes before start()")
        self._extra_routes.extend(routes)

    async def start(self) -> None:
        if not (VENDOR_DIR / "ort.all.min.mjs").is_file():
            raise BackendUnavailableError(
                f"onnxruntime-web assets are missing from {VENDOR_DIR}; run `make setup` "
                "(it fetches onnxruntime-web from npm and copies its dist files there)"
            )
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets whose proto
        # says TCP (base_events._set_nodelay), and accepted sockets inherit ours.
        # Without it a response written in two pieces (head, body) waits for the
        # client's delayed ACK: +40 ms per request on a kept-alive connection.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        app = create_app(
            token=self.token,
            hub=self.hub,
            model_files=self.model_files,
            allowed_origins=self.origins,
            extra_routes=self._extra_routes,
            health=self.health,
            token_check=lambda t, w: self.token_check is not None and self.token_check(t, w),
            health_checks=lambda: list(self.health_checks),
            credentials=self.credentials,
            allowed_hosts=self.host_names,
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            ws="websockets-sansio",
            backlog=4096,
            ws_max_size=512 * 1024 * 1024,
            # No permessage-deflate (uvicorn offers it by default and browsers
            # accept): tensors are binary floats that barely compress, and
            # deflating them cost 32 ms per 600 KB image and 427 ms for 16 of
            # them over a Node worker here, against 2 and 12 ms without.
            ws_per_message_deflate=False,
            ws_ping_interval=None,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raises the start-up error
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 5)
        self._server = None
        self._task = None

    async def __aenter__(self) -> WebAccelServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
