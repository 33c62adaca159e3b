"""IPFS trustless gateway (read-only) plus an authenticated CAR upload.

Specs: https://specs.ipfs.tech/http-gateways/trustless-gateway/ and
https://specs.ipfs.tech/http-gateways/path-gateway/ (the subset for files).

``GET|HEAD /ipfs/{cid}[/path]`` answers, by ``?format=`` or ``Accept``:

* ``raw`` / ``application/vnd.ipld.raw``: the one block (after path resolution);
* ``car`` / ``application/vnd.ipld.car``: a CARv1 stream, ``order=dfs; dups=n``,
  of the path's blocks then the target per ``dag-scope`` (block|entity|all);
* nothing (or ``*/*``, ``application/octet-stream``, ``text/html``): the file's
  bytes, with single-range ``Range`` (206/416); a folder gives its index.html
  or a listing;
* anything else explicit: 406.

Every response is immutable (``Cache-Control: public, max-age=29030400,
immutable``), has an ETag, ``X-Ipfs-Path``, ``X-Ipfs-Roots`` and CORS headers.
Errors go through :func:`error_response` (400 bad CID, 404 missing, 406, 429
with Retry-After, 504 timeout); messages never echo the request.

``max_concurrency`` bounds requests in flight; past it the answer is 429 at
once (shedding load beats queueing: clients retry another peer).
"""
from __future__ import annotations

import hmac
import html
import logging
import mimetypes
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webaccel.content import cid as cidmod
from webaccel.content import dag
from webaccel.content.car import CarReader, encode_header, encode_section
from webaccel.content.errors import (
    BlockNotFoundError,
    CorruptBlockError,
    DecodeError,
    FetchTimeoutError,
    InvalidCIDError,
    InvalidPathError,
    UnsupportedDagError,
    UnsupportedFormatError,
)
from webaccel.content.store import BlockStore
from webaccel.errors import BadRequestError, NotFoundError, OverloadedError, WebAccelError

log = logging.getLogger("webaccel.content.gateway")

IMMUTABLE = "public, max-age=29030400, immutable"
RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Range, User-Agent, X-Requested-With",
    "Access-Control-Expose-Headers": (
        "Content-Length, Content-Range, ETag, X-Ipfs-Path, X-Ipfs-Roots, X-Content-Type-Options"
    ),
}
UPLOAD_PATH = "/webaccel/v1/car"


# ------------------------------------------------------------------ errors


def error_response(exc: BaseException) -> Response:
    """The one translator from errors to HTTP answers."""
    status, retry = 500, None
    if isinstance(exc, InvalidCIDError):
        status = 400
    elif isinstance(exc, (InvalidPathError, BlockNotFoundError, NotFoundError)):
        status = 404
    elif isinstance(exc, UnsupportedFormatError):
        status = 406
    elif isinstance(exc, OverloadedError):
        status, retry = 429, "1"
    elif isinstance(exc, FetchTimeoutError):
        status = 504
    elif isinstance(exc, UnsupportedDagError):
        status = 501
    elif isinstance(exc, CorruptBlockError):
        status = 502
    elif isinstance(exc, (BadRequestError, DecodeError)):
        status = 400
    if isinstance(exc, WebAccelError):
        message = exc.message
    else:
        message = "internal error"
        log.exception("gateway error", exc_info=exc)
    headers = {**CORS, "Cache-Control": "no-store"}
    if retry:
        headers["Retry-After"] = retry
    return Response(f"{status}: {message}\n", status_code=status, media_type="text/plain",
                    headers=headers)


# ------------------------------------------------------------------ concurrency limit


class _Limiter:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self.rejected = 0


class _LimitedEndpoint:
    """ASGI endpoint that holds a slot until the (possibly streamed) response ends."""

    def __init__(self, handler: Callable[[Request], Awaitable[Response]],
                 limiter: _Limiter | None) -> None:
        self.handler = handler
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lim = self.limiter
        if lim is not None and lim.inflight >= lim.limit:
            lim.rejected += 1
            resp = error_response(OverloadedError(
                "gateway is at its concurrency limit; retry after a second or use another peer"))
            await resp(scope, receive, send)
            return
        if lim is not None:
            lim.inflight += 1
        try:
            request = Request(scope, receive)
            try:
                response = await self.handler(request)
            except Exception as exc:  # noqa: BLE001 - one translator for every error
                response = error_response(exc)
            await response(scope, receive, send)
        finally:
            if lim is not None:
                lim.inflight -= 1


# ------------------------------------------------------------------ negotiation


def _format(request: Request) -> str:
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt in ("raw", "car"):
            return fmt
        raise UnsupportedFormatError("format must be raw or car here")
    accept = request.headers.get("accept", "")
    if not accept:
        return "file"
    types = [t.split(";")[0].strip().lower() for t in accept.split(",")]
    if RAW in types:
        return "raw"
    if CAR in types:
        car_params = accept[accept.lower().index(CAR):].split(",")[0].lower()
        if "version=2" in car_params:
            raise UnsupportedFormatError("only CAR version 1 is served")
        return "car"
    file_ok = ("*/*", "application/*", "application/octet-stream", "text/html", "text/*", "")
    if any(t in file_ok or not t.startswith("application/vnd.ipld") for t in types):
        return "file"
    raise UnsupportedFormatError("unsupported Accept; use application/vnd.ipld.raw or .car")


def _base_headers(chain: list[bytes], root_text: str, path: str) -> dict[str, str]:
    roots = ",".join(cidmod.to_str(c) for c in chain)
    xpath = f"/ipfs/{root_text}" + (f"/{path}" if path else "")
    return {**CORS, "Cache-Control": IMMUTABLE, "X-Ipfs-Path": xpath, "X-Ipfs-Roots": roots,
            "X-Content-Type-Options": "nosniff", "Vary": "Accept"}


def _not_modified(request: Request, etag: str, headers: dict[str, str]) -> Response | None:
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers={**headers, "ETag": etag})
    return None


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None | str:
    """``(start, end_exclusive)``, None for the whole body, or "unsatisfiable"."""
    if not value:
        return None
    m = _RANGE.match(value.strip())
    if not m:  # multi-range or junk: ignoring Range is allowed (RFC 9110 14.2)
        return None
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if a == "":
        n = int(b)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(a)
    end = size if b == "" else min(size, int(b) + 1)
    if start >= size or (b != "" and int(b) < start):
        return "unsatisfiable"
    return start, end


# ------------------------------------------------------------------ handlers


class Gateway:
    def __init__(self, store: BlockStore, *, upload_token: str | None = None,
                 on_upload: Callable[[list[bytes]], Awaitable[None]] | None = None,
                 on_serve: Callable[[bytes], None] | None = None) -> None:
        self.store = store
        self.upload_token = upload_token
        self.on_upload = on_upload
        self.on_serve = on_serve  # e.g. Replicator.note_fetch (on-demand replication)

    async def options(self, request: Request) -> Response:
        return Response(status_code=204, headers={**CORS, "Access-Control-Max-Age": "86400"})

    async def ipfs(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return await self.options(request)
        root_text = request.path_params["cid"]
        root = cidmod.parse(root_text)
        path = request.path_params.get("path", "").strip("/")
        fmt = _format(request)
        # paths through plain and HAMT-sharded folders (webaccel.content.resolve);
        # proof: every block read on the way, HAMT shards included, for CARs
        resolved = await self.store.resolve(root, path) if path else None
        chain = resolved.cids if resolved is not None else [root]
        proof = resolved.proof if resolved is not None else []
        target = chain[-1]
        headers = _base_headers(chain, root_text, path)
        if fmt == "raw":
            return await self._raw(request, target, headers)
        if fmt == "car":
            response = await self._car(request, chain, headers, proof)
        else:
            response = await self._file(request, target, headers, path)
        if self.on_serve is not None and response.status_code < 300:
            self.on_serve(root)  # whole-file/DAG requests only, and only ones we can serve
        return response

    async def _raw(self, request: Request, target: bytes, headers: dict[str, str]) -> Response:
        etag = f'"{cidmod.to_str(target)}.raw"'
        nm = _not_modified(request, etag, headers)
        if nm:
            return nm
        data = await self.store.get(target)
        headers = {**headers, "ETag": etag,
                   "Content-Disposition": f'attachment; filename="{cidmod.to_str(target)}.bin"'}
        if request.method == "HEAD":
            return Response(status_code=200, media_type=RAW,
                            headers={**headers, "Content-Length": str(len(data))})
        return Response(data, media_type=RAW, headers=headers)

    async def _car(self, request: Request, chain: list[bytes], headers: dict[str, str],
                   proof: list[bytes]) -> Response:
        scope = request.query_params.get("dag-scope", "all")
        if scope not in ("block", "entity", "all"):
            raise BadRequestError("dag-scope must be block, entity or all")
        target = chain[-1]
        etag = f'"{cidmod.to_str(target)}.car.{scope}"'
        nm = _not_modified(request, etag, headers)
        if nm:
            return nm
        media = f"{CAR}; version=1; order=dfs; dups=n"
        headers = {**headers, "ETag": etag, "X-Content-Type-Options": "nosniff",
                   "Content-Disposition": f'attachment; filename="{cidmod.to_str(target)}.car"'}
        if request.method == "HEAD":
            await self.store.get(target)
            return Response(status_code=200, media_type=media, headers=headers)
        await self.store.get(target)  # fail with a real status before streaming starts

        async def body() -> AsyncIterator[bytes]:
            yield encode_header([chain[0]])
            sent: set[bytes] = set()
            for c in proof:  # the blocks that prove the path
                data = await self.store.get(c)
                sent.add(c)
                yield encode_section(c, data)
            async for c, data in self.store.walk(target, scope):
                if c not in sent:
                    sent.add(c)
                    yield encode_section(c, data)

        return StreamingResponse(body(), media_type=media, headers=headers)

    async def _file(self, request: Request, target: bytes, headers: dict[str, str],
                    path: str) -> Response:
        node = await self.store.node(target)
        if node.kind in ("directory", "hamt"):
            return await self._directory(request, target, node, headers, path)
        if node.kind != "file":
            raise UnsupportedDagError(f"cannot serve a UnixFS {node.kind} as bytes")
        etag = f'"{cidmod.to_str(target)}"'
        nm = _not_modified(request, etag, headers)
        if nm:
            return nm
        size = node.size
        name = path.rsplit("/", 1)[-1] if path else ""
        ctype = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
        headers = {**headers, "ETag": etag, "Accept-Ranges": "bytes"}
        rng = _parse_range(request.headers.get("range"), size)
        if rng == "unsatisfiable":
            return Response(status_code=416,
                            headers={**headers, "Content-Range": f"bytes */{size}"})
        status = 200
        start, end = 0, size
        if isinstance(rng, tuple):
            start, end = rng
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
        if request.method == "HEAD":
            return Response(status_code=status, media_type=ctype, headers=headers)
        return StreamingResponse(self.store.iter_file(target, start, end), status_code=status,
                                 media_type=ctype, headers=headers)

    async def _directory(self, request: Request, target: bytes, node: dag.Node,
                         headers: dict[str, str], path: str) -> Response:
        entries = dag.dir_entries(node)
        for name, c, _ in entries:
            if name == "index.html":
                return await self._file(request, c, headers, (path + "/index.html").strip("/"))
        etag = f'"DirIndex-{cidmod.to_str(target)}"'
        base = request.url.path.rstrip("/")
        rows = "".join(
            f'<li><a href="{html.escape(base)}/{html.escape(n)}">{html.escape(n)}</a> '
            f"<small>{html.escape(cidmod.to_str(c))} ({t} B)</small></li>"
            for n, c, t in entries
        )
        body = f"<!doctype html><meta charset=utf-8><title>Index</title><ul>{rows}</ul>"
        return Response(body if request.method != "HEAD" else b"", media_type="text/html",
                        headers={**headers, "ETag": etag})

    async def upload(self, request: Request) -> Response:
        """``POST /webaccel/v1/car[?pin=1]`` with ``Authorization: Bearer TOKEN``: import a CAR.

        Every block is verified before it is stored (a bad one fails the
        upload with 400 and nothing after it is kept).  Replies with the roots.
        """
        if not self.upload_token:
            return error_response(NotFoundError("uploads are disabled on this server"))
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.upload_token.encode()):
            return Response("401: a valid upload token is required\n", status_code=401,
                            media_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
        reader = CarReader()
        roots: list[bytes] = []
        n = 0
        async for piece in request.stream():
            for ev in reader.feed(piece):
                if hasattr(ev, "roots"):
                    roots = ev.roots  # type: ignore[union-attr]
                else:
                    try:
                        self.store.put(ev.cid, ev.data)  # type: ignore[union-attr]
                    except CorruptBlockError as exc:
                        raise DecodeError("CAR holds a block that does not match its CID") from exc
                    n += 1
        reader.close()
        pinned = request.query_params.get("pin") in ("1", "true")
        if pinned:
            for r in roots:
                self.store.pin(r)
        if self.on_upload is not None:
            await self.on_upload(roots)
        import json

        body = json.dumps({"roots": [cidmod.to_str(r) for r in roots], "blocks": n,
                           "pinned": pinned})
        return Response(body, media_type="application/json")


def gateway_routes(store: BlockStore, *, max_concurrency: int = 1024,
                   upload_token: str | None = None, gateway: Gateway | None = None) -> list[Route]:
    """Routes to mount on any Starlette app (the main server includes these)."""
    gw = gateway or Gateway(store, upload_token=upload_token)
    limiter = _Limiter(max_concurrency) if max_concurrency else None
    ep = _LimitedEndpoint(gw.ipfs, limiter)
    up = _LimitedEndpoint(gw.upload, limiter)
    routes = [
        Route("/ipfs/{cid}", ep, methods=["GET", "HEAD", "OPTIONS"]),
        Route("/ipfs/{cid}/{path:path}", ep, methods=["GET", "HEAD", "OPTIONS"]),
        Route(UPLOAD_PATH, up, methods=["POST"]),
    ]
    for r in routes:
        r.gateway = gw  # type: ignore[attr-defined]
        r.limiter = limiter  # type: ignore[attr-defined]
    return routes


def create_gateway_app(store: BlockStore, **kw: Any) -> Starlette:
    """A Starlette app serving only the gateway (tests, peers, ``webaccel serve`` fallback)."""
    routes = gateway_routes(store, **kw)
    app = Starlette(routes=routes)
    app.state.gateway = routes[0].gateway  # type: ignore[attr-defined]
    app.state.limiter = routes[0].limiter  # type: ignore[attr-defined]
    return app
