"""Remote browsers that join: join URLs with revocable tokens, and the workers they become.

``webaccel serve --listen 0.0.0.0`` (an explicit opt-in) prints a join URL and
a QR code; any browser that opens it becomes a worker after the token check.

Tokens.  The server's own token (``server.token``) stays the master key for
the browsers we launch.  A :class:`TokenStore` issues *join tokens*: secrets
kept only as SHA-256 digests, each with an id to list or revoke it.  Opening
``/join?token=T`` gives the page a fresh worker id bound to that token
(``remote-<token id>-<64 random bits>``) and redirects it to the worker page.
The bridge then admits a join token only under a worker id issued for it, so
a joined browser can never take over a launched worker's id (and with it
that worker's requests and inputs), nor another joiner's; a join token opens
nothing but the bridge and model bytes (no API, metrics or dashboard).
Revoking a token refuses new connections at once and closes the live ones
with 1008 (the page stops reconnecting); the pool sees those workers lost and
retries their requests elsewhere.

What a joined worker sees: only the requests the pool routes to it (each
page's requests and replies travel on its own socket, keyed by request ids
that other sockets cannot answer) and the model bytes it is asked to load.

Browsers outside loopback need a secure context for WebGPU, WASM threads
(``crossOriginIsolated``) and the Cache API: serve them through a TLS reverse
proxy (:data:`TLS_PROXY_NOTES`).  Over plain ``http://<LAN address>`` they
still run models on single-threaded WASM.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import ipaddress
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import psutil
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from webaccel.browsers.worker import BrowserWorker
from webaccel.errors import (
    ErrorCode,
    NotFoundError,
    UnauthorizedError,
    WebAccelError,
    http_status,
    json_error_response,
)
from webaccel.http_body import bad, parse_json_object, read_body
from webaccel.server import WebAccelServer

WORKER_PREFIX = "remote-"
ADMIN_BODY_BYTES = 16 * 1024
MAX_LABEL_CHARS = 200


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


@dataclass
class JoinToken:
    id: str
    value: str = field(repr=False)  # shown once, at issue; only its digest is looked up
    label: str = ""
    created: float = field(default_factory=time.time)
    expires: float | None = None
    max_workers: int | None = None
    revoked: bool = False
    worker_ids: set[str] = field(default_factory=set)

    @property
    def usable(self) -> bool:
        return not self.revoked and (self.expires is None or time.time() < self.expires)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "label": self.label,
            "created": self.created,
            "expires": self.expires,
            "revoked": self.revoked,
            "workers": sorted(self.worker_ids),
        }


class TokenStore:
    """Join tokens for one server.  Call :meth:`attach` before the server starts."""

    def __init__(self) -> None:
        self._by_digest: dict[bytes, JoinToken] = {}
        self._by_id: dict[str, JoinToken] = {}
        self.server: WebAccelServer | None = None

    def attach(self, server: WebAccelServer) -> TokenStore:
        self.server = server
        server.token_check = self.check
        return self

    def issue(
        self, label: str = "", *, ttl_s: float | None = None, max_workers: int | None = None
    ) -> JoinToken:
        """A new join token; InvalidInputError (nothing stored) for a label that is not a
        short string, a ``ttl_s`` that is not a finite number of seconds above 0, or a
        ``max_workers`` that is not a whole number above 0."""
        if not isinstance(label, str) or len(label) > MAX_LABEL_CHARS:
            raise bad(f"label must be a string of at most {MAX_LABEL_CHARS} characters", "label")
        if ttl_s is not None and (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, (int, float))
            or not math.isfinite(ttl_s)
            or ttl_s <= 0
        ):
            raise bad("ttl_s must be a finite number of seconds above 0 (or null)", "ttl_s")
        if max_workers is not None and (
            isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1
        ):
            raise bad("max_workers must be a whole number above 0 (or null)", "max_workers")
        tok = JoinToken(
            id=secrets.token_hex(4),
            value=secrets.token_urlsafe(24),
            label=label,
            expires=None if ttl_s is None else time.time() + ttl_s,
            max_workers=max_workers,
        )
        self._by_digest[_digest(tok.value)] = tok
        self._by_id[tok.id] = tok
        return tok

    def find(self, token_or_id: str) -> JoinToken | None:
        return self._by_id.get(token_or_id) or self._by_digest.get(_digest(token_or_id))

    def valid(self, value: str) -> JoinToken | None:
        # Looked up by digest: no comparison whose time depends on the secret.
        tok = self._by_digest.get(_digest(value)) if value else None
        return tok if tok is not None and tok.usable else None

    def check(self, value: str, worker_id: str | None) -> bool:
        """The server's ``token_check``: model bytes for any valid join token, the
        bridge only under a worker id issued for this token."""
        tok = self.valid(value)
        if tok is None:
            return False
        return worker_id is None or worker_id in tok.worker_ids

    def new_worker_id(self, tok: JoinToken) -> str | None:
        if not tok.usable:
            return None
        if tok.max_workers is not None and len(tok.worker_ids) >= tok.max_workers:
            return None
        worker_id = f"{WORKER_PREFIX}{tok.id}-{secrets.token_hex(8)}"
        tok.worker_ids.add(worker_id)
        return worker_id

    def tokens(self) -> list[dict[str, Any]]:
        return [t.describe() for t in self._by_id.values()]

    async def revoke(self, token_or_id: str) -> list[str]:
        """Refuse the token from now on and close its live workers (code 1008).
        Returns the worker ids that were connected."""
        tok = self.find(token_or_id)
        if tok is None:
            return []
        tok.revoked = True
        closed: list[str] = []
        if self.server is None:
            return closed
        for worker_id in sorted(tok.worker_ids):
            conn = self.server.hub.connections.get(worker_id)
            if conn is None or not conn.open:
                continue
            closed.append(worker_id)
            conn._close("its join token was revoked")  # in-flight requests fail over now
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1008, reason="token revoked"), 2)
        return closed


# ------------------------------------------------------------------ the join page
INVALID_PAGE = (
    "<!doctype html><title>webaccel</title><p>This join link is not valid: it was "
    "revoked, it expired, or it was mistyped. Ask for a new one.</p>"
)


def join_routes(store: TokenStore, *, threads: int = 1) -> list[BaseRoute]:
    """``GET /join?token=T``: a fresh worker id for a valid token, then the worker page.

    The redirect is relative, so it works behind a reverse proxy; the page
    connects back to the host it was served from.
    """

    async def join(request: Request) -> Response:
        tok = store.valid(request.query_params.get("token", ""))
        worker_id = store.new_worker_id(tok) if tok is not None else None
        if tok is None or worker_id is None:  # a page for people, with FORBIDDEN's status
            return HTMLResponse(
                INVALID_PAGE,
                status_code=http_status(ErrorCode.FORBIDDEN),
                headers={"cache-control": "no-store"},
            )
        query = urlencode({"token": tok.value, "worker": worker_id, "threads": threads})
        return RedirectResponse(
            f"worker/worker.html?{query}",
            status_code=303,
            headers={"cache-control": "no-store", "referrer-policy": "no-referrer"},
        )

    return [Route("/join", join)]


def token_admin_routes(
    store: TokenStore, master_token: str, join_bases: Callable[[], list[str]] | None = None
) -> list[BaseRoute]:
    """Manage join tokens from another process (``webaccel tokens ...``), master token only.

    ``GET /admin/tokens`` lists (never the secrets), ``POST /admin/tokens``
    (JSON ``{label, ttl_s, max_workers}``) issues and returns the secret once (with
    ``join_urls`` at each of ``join_bases()``, the addresses browsers reach),
    ``DELETE /admin/tokens/{id}`` revokes and disconnects the token's workers.
    """

    def check_master(request: Request) -> None:
        auth = request.headers.get("authorization", "")
        presented = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not secrets.compare_digest(presented.encode(), master_token.encode()):
            raise UnauthorizedError(
                "needs the server's own token: send 'Authorization: Bearer <server token>' "
                "(a join token does not open /admin)"
            )

    async def issue(request: Request) -> Response:
        raw = await read_body(request, ADMIN_BODY_BYTES)
        body = parse_json_object(raw) if raw.strip() else {}  # no body: the defaults
        unknown = sorted(set(body) - {"label", "ttl_s", "max_workers"})
        if unknown:
            raise bad(
                f"unknown field(s) {unknown}; send JSON {{label, ttl_s, max_workers}}", unknown[0]
            )
        tok = store.issue(
            body.get("label") or "", ttl_s=body.get("ttl_s"), max_workers=body.get("max_workers")
        )
        return JSONResponse(
            {
                **tok.describe(),
                "token": tok.value,
                "join_path": f"/join?{urlencode({'token': tok.value})}",
                "join_urls": [join_url(base, tok) for base in (join_bases() if join_bases else [])],
            },
            status_code=201,
        )

    async def tokens(request: Request) -> Response:
        try:
            check_master(request)
            if request.method == "POST":
                return await issue(request)
            return JSONResponse({"tokens": store.tokens()})
        except WebAccelError as exc:
            return json_error_response(exc)

    async def revoke(request: Request) -> Response:
        try:
            check_master(request)
            token_id = request.path_params["token_id"]
            if token_id not in {t["id"] for t in store.tokens()}:
                raise NotFoundError("no such token id; GET /admin/tokens lists them")
        except WebAccelError as exc:
            return json_error_response(exc)
        closed = await store.revoke(token_id)
        return JSONResponse({"id": token_id, "revoked": True, "disconnected": closed})

    return [
        Route("/admin/tokens", tokens, methods=["GET", "POST"]),
        Route("/admin/tokens/{token_id}", revoke, methods=["DELETE"]),
    ]


def join_url(base_url: str, tok: JoinToken) -> str:
    return f"{base_url.rstrip('/')}/join?{urlencode({'token': tok.value})}"


def advertise(server: WebAccelServer, public_url: str) -> None:
    """Accept the bridge from pages served at ``public_url`` (Origin check), e.g.
    ``https://gpu.example.org`` behind a TLS proxy, or ``http://192.168.1.5:8700``."""
    parts = urlsplit(public_url)
    server.extra_origins.add(f"{parts.scheme}://{parts.netloc}")


def public_urls(port: int, *, scheme: str = "http") -> list[str]:
    """Base URLs at this host's non-loopback IPv4 addresses (for ``--listen 0.0.0.0``)."""
    out = []
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family.name != "AF_INET":
                continue
            ip = ipaddress.ip_address(addr.address)
            if not ip.is_loopback and not ip.is_link_local:
                out.append(f"{scheme}://{ip}:{port}")
    return sorted(set(out))


def terminal_qr(text: str) -> str:
    """A QR code of ``text`` drawn with block characters ("" without ``qrcode``)."""
    try:
        import qrcode
    except ImportError:
        return ""
    qr = qrcode.QRCode(border=1, error_correction=qrcode.constants.ERROR_CORRECT_L)
    qr.add_data(text)
    qr.make(fit=True)
    buf = io.StringIO()
    qr.print_ascii(out=buf, invert=True)
    return buf.getvalue()


def join_banner(url: str, *, qr: bool = True, token_id: str | None = None) -> str:
    """The join link (and its QR code) for people; ``token_id``: the token to name in
    the revoke command (``webaccel tokens`` finds a ``webaccel serve`` by its state file)."""
    lines = [
        "Open this link in any browser to add it as a worker (the link is a secret):",
        f"  {url}",
    ]
    code = terminal_qr(url) if qr else ""
    if code:
        lines += ["", code]
    elif qr:
        lines.append("  (a QR code of it needs the qr extra: pip install 'webaccel[qr]')")
    if token_id is not None:
        lines.append(f"Revoke it with: webaccel tokens revoke {token_id}   "
                     "(webaccel tokens list|create for more)")
    else:
        lines.append("Revoke with: webaccel tokens revoke <id> (for webaccel serve), "
                     "TokenStore.revoke, or DELETE /admin/tokens/<id> with the server's token")
    return "\n".join(lines)


# ------------------------------------------------------------------ joined workers
def family_from_user_agent(user_agent: str) -> str:
    if "Firefox/" in user_agent:
        return "firefox"
    if "Edg/" in user_agent:
        return "edge"
    return "chromium"


class RemoteWorker(BrowserWorker):
    """A page that joined by itself; we own no process, only its socket.

    A remote page can vanish without closing its socket (a laptop lid, a
    dropped Wi-Fi link: TCP notices only much later).  The page sends a
    heartbeat every 5 s, so silence for ``silence_s`` means it is gone.  A
    page that runs a model on its main thread cannot send heartbeats meanwhile:
    keep ``silence_s`` above the longest single run.
    """

    launcher = "join"
    silence_s = 45.0

    @property
    def alive(self) -> bool:
        if not super().alive:
            return False
        conn = self.connection
        return conn is not None and time.monotonic() - conn.last_seen < self.silence_s


class JoinedWorkers:
    """Pages that joined, handed out as workers (``async launcher(family)`` for the pool).

    A page that reconnects (same worker id) keeps serving the worker already
    handed out; a page whose worker was closed can be handed out again.
    """

    def __init__(self, server: WebAccelServer) -> None:
        self.server = server
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._handed: dict[str, RemoteWorker] = {}
        server.hub.on_connect.append(self._on_connect)

    def _on_connect(self, conn: Any) -> None:
        wid = conn.worker_id
        if not wid.startswith(WORKER_PREFIX):
            return
        held = self._handed.get(wid)
        if held is not None and not held._closed:
            return
        self._queue.put_nowait(wid)

    async def next(self, timeout: float = 30.0) -> RemoteWorker:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no browser joined in time")
            wid = await asyncio.wait_for(self._queue.get(), left)
            conn = self.server.hub.connections.get(wid)
            if conn is None or not conn.open:
                continue
            held = self._handed.get(wid)
            if held is not None and not held._closed:
                continue
            return self._hand_out(wid, conn)

    def try_next(self) -> RemoteWorker | None:
        """A joined page not handed out yet, or None (never waits)."""
        while not self._queue.empty():
            wid = self._queue.get_nowait()
            conn = self.server.hub.connections.get(wid)
            held = self._handed.get(wid)
            if conn is None or not conn.open or (held is not None and not held._closed):
                continue
            return self._hand_out(wid, conn)
        return None

    def _hand_out(self, wid: str, conn: Any) -> RemoteWorker:
        worker = RemoteWorker(
            self.server, wid, family_from_user_agent(conn.capabilities.get("userAgent", "")), None
        )
        worker.capabilities = conn.capabilities
        self._handed[wid] = worker
        return worker

    async def __call__(self, family: str) -> RemoteWorker:
        return await self.next()


class RemoteJoin:
    """Everything ``webaccel serve --listen ADDR`` needs; build it before ``server.start()``.

    ``public_url`` is the address browsers use (a TLS proxy's ``https://...``,
    or ``http://LAN-IP:PORT``); without it the join URLs use the bound address,
    or every non-loopback address of this host when bound to 0.0.0.0.
    """

    def __init__(
        self, server: WebAccelServer, *, public_url: str | None = None, threads: int = 1
    ) -> None:
        self.server = server
        self.public_url = public_url.rstrip("/") if public_url else None
        self.tokens = TokenStore().attach(server)
        server.add_routes(join_routes(self.tokens, threads=threads))
        server.add_routes(token_admin_routes(self.tokens, server.token, self.base_urls))
        self.joined = JoinedWorkers(server)

    def base_urls(self) -> list[str]:
        """Call after start (the port may have been 0)."""
        if self.public_url:
            advertise(self.server, self.public_url)
            return [self.public_url]
        if self.server.host in ("0.0.0.0", "::", ""):
            urls = public_urls(self.server.port) or [f"http://127.0.0.1:{self.server.port}"]
        else:
            urls = [self.server.url]
        for url in urls:
            advertise(self.server, url)
        return urls

    def issue(
        self, label: str = "", *, ttl_s: float | None = None, max_workers: int | None = None
    ) -> tuple[JoinToken, list[str]]:
        tok = self.tokens.issue(label, ttl_s=ttl_s, max_workers=max_workers)
        return tok, [join_url(base, tok) for base in self.base_urls()]

    def banner(self, tok: JoinToken, urls: list[str], *, qr: bool = True) -> str:
        text = join_banner(urls[0], qr=qr)
        if len(urls) > 1:
            text += "\nAlso reachable at:\n" + "\n".join(f"  {u}" for u in urls[1:])
        return text + f"\n(token id {tok.id})"


TLS_PROXY_NOTES = """\
Running behind TLS (a reverse proxy)
------------------------------------
Browsers on other machines get WebGPU, WASM threads (crossOriginIsolated) and
the Cache API only in a secure context, i.e. over https. Keep webaccel on
loopback and put a TLS reverse proxy in front; it must pass WebSocket upgrades
on /ws and keep the COOP/COEP headers webaccel sends.

Caddy (automatic certificates):

    gpu.example.org {
        reverse_proxy 127.0.0.1:8700
    }

nginx:

    server {
        listen 443 ssl;
        server_name gpu.example.org;
        ssl_certificate     /etc/letsencrypt/live/gpu.example.org/fullchain.pem;
        ssl_certificate_key /etc/letsencrypt/live/gpu.example.org/privkey.pem;
        client_max_body_size 0;            # model bytes
        location / {
            proxy_pass http://127.0.0.1:8700;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;      # the bridge socket is long-lived
            proxy_buffering off;
        }
    }

Then run `webaccel serve --public-url https://gpu.example.org` (the join URL
and the Origin check use it) and share the printed join link. The page
connects back to the host it was loaded from (wss:// under https), so nothing
else needs configuring.
"""
