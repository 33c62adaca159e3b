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
Every answer, errors included, is a sandboxed document
(``Content-Security-Policy: sandbox``, ``X-Content-Type-Options: nosniff``):
HTML stored under a CID cannot run script on the origin that serves ``/v1``.
``HEAD`` gives exactly GET's status and headers.  Errors go through
:func:`error_response`, whose statuses come from webaccel.errors' one table
(400 bad CID, 404 missing, 406, 413, 416, 429 with Retry-After, 504 timeout);
messages never echo the request.

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
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webaccel.content import cid as cidmod
from webaccel.content import dag
from webaccel.content.car import CarReader, encode_header, encode_section
from webaccel.content.errors import (
    CorruptBlockError,
    DecodeError,
    UnsupportedDagError,
    UnsupportedFormatError,
)
from webaccel.content.store import BlockStore
from webaccel.errors import (
    BadRequestError,
    NotFoundError,
    OverloadedError,
    RangeNotSatisfiableError,
    UnauthorizedError,
    plain_error_response,
)
from webaccel.http_body import iter_body

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
# Stored HTML must not run script on the origin that also serves /v1 and the
# bridge: every answer is a sandboxed document with an opaque origin (the path
# gateway spec's advice for gateways without subdomain isolation; Kubo's is the
# same ``sandbox`` directive), and is never content-sniffed into something else.
SANDBOX = {
    "Content-Security-Policy": "sandbox",
    "X-Content-Type-Options": "nosniff",
}
UPLOAD_PATH = "/webaccel/v1/car"
# A CAR is stored block by block as it arrives; this bounds one upload.
MAX_UPLOAD_BYTES = 4 << 30


# ------------------------------------------------------------------ errors


def error_response(exc: BaseException) -> Response:
    """The gateway's one translator: the status comes from :data:`webaccel.errors.HTTP_ERRORS`
    (400 bad CID, 404 missing, 406, 413, 416, 429 with Retry-After, 504 timeout); the body
    is text and never echoes the request."""
    return plain_error_response(exc, headers={**CORS, **SANDBOX})


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
    return {**CORS, **SANDBOX, "Cache-Control": IMMUTABLE, "X-Ipfs-Path": xpath,
            "X-Ipfs-Roots": roots, "Vary": "Accept"}


def _not_modified(request: Request, etag: str, headers: dict[str, str]) -> Response | None:
    inm = request.headers.get("if-none-match")
    if inm and (inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]):
        return Response(status_code=304, headers={**headers, "ETag": etag})
    return None


_RANGE = re.compile(r"^bytes=([0-9]*)-([0-9]*)$")


def _position(digits: str, size: int) -> int:
    """A byte position; any number past ``size`` acts alike, so one longer than
    ``size`` is never converted (a 5,000-digit number would pass Python's
    int-conversion limit)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= len(str(size)) else size + 1


def _parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end_exclusive)`` of a single ``Range`` (RFC 9110 14.1.2), or None for the
    whole body; RangeNotSatisfiableError when it starts past the end."""
    if not value:
        return None
    m = _RANGE.match(value.strip())
    if not m:  # multi-range or junk: ignoring Range is allowed (RFC 9110 14.2)
        return None
    a, b = m.groups()
    if a == "" and b == "":
        return None
    if size == 0:  # no byte of an empty body can be selected (RFC 9110 14.1.2)
        raise RangeNotSatisfiableError("the body is empty: no range can be satisfied")
    if a == "":  # a suffix: the last n bytes
        n = _position(b, size)
        if n == 0:
            raise RangeNotSatisfiableError("a suffix range of 0 bytes selects nothing")
        return max(0, size - n), size
    start = _position(a, size)
    if start >= size:
        raise RangeNotSatisfiableError(f"the range starts at or past the end ({size} bytes)")
    if b != "" and _position(b, size) < start:
        raise RangeNotSatisfiableError("the range ends before it starts")
    end = size if b == "" else min(size, _position(b, size) + 1)
    return start, end


def _head(response: Response) -> Response:
    """HEAD: exactly GET's status and headers, without the body (RFC 9110 9.3.2).  A
    streamed CAR has no Content-Length on GET, so none here either."""
    out = Response(status_code=response.status_code)
    out.raw_headers = list(response.raw_headers)
    return out


# ------------------------------------------------------------------ handlers


class Gateway:
    def __init__(self, store: BlockStore, *, upload_token: str | None = None,
                 on_upload: Callable[[list[bytes]], Awaitable[None]] | None = None,
                 on_serve: Callable[[bytes], None] | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.store = store
        self.max_upload_bytes = max_upload_bytes
        self.upload_token = upload_token
        self.on_upload = on_upload
        self.on_serve = on_serve  # e.g. Replicator.note_fetch (on-demand replication)

    async def options(self, request: Request) -> Response:
        return Response(status_code=204, headers={**CORS, "Access-Control-Max-Age": "86400"})

    async def ipfs(self, request: Request) -> Response:
        if request.method == "OPTIONS":
            return await self.options(request)
        response = await self._get(request)
        if request.method == "HEAD":
            if isinstance(response, StreamingResponse):
                await response.body_iterator.aclose()  # type: ignore[attr-defined]
            return _head(response)
        return response

    async def _get(self, request: Request) -> Response:
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
        headers = {**headers, "ETag": etag,
                   "Content-Disposition": f'attachment; filename="{cidmod.to_str(target)}.car"'}
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

        # Streamed, so no Content-Length (the size is known only once it is sent).
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
        try:
            rng = _parse_range(request.headers.get("range"), size)
        except RangeNotSatisfiableError as exc:
            response = error_response(exc)
            response.headers["Content-Range"] = f"bytes */{size}"  # RFC 9110 15.5.17
            return response
        status = 200
        start, end = 0, size
        if rng is not None:
            start, end = rng
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        headers["Content-Length"] = str(end - start)
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
        return Response(body, media_type="text/html", headers={**headers, "ETag": etag})

    async def upload(self, request: Request) -> Response:
        """``POST /webaccel/v1/car[?pin=1]`` with ``Authorization: Bearer TOKEN``: import a CAR.

        Every block is verified before it is stored (a bad one fails the
        upload with 400 and nothing after it is kept).  A body past
        ``max_upload_bytes`` is cut off there with 413 (blocks stored before
        it stay, unpinned, for garbage collection).  Replies with the roots.
        """
        if not self.upload_token:
            raise NotFoundError("uploads are disabled on this server")
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), self.upload_token.encode()):
            raise UnauthorizedError(
                "a valid upload token is required: send 'Authorization: Bearer <token>'")
        reader = CarReader()
        roots: list[bytes] = []
        n = 0
        async for piece in iter_body(request, self.max_upload_bytes):
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
        return JSONResponse({"roots": [cidmod.to_str(r) for r in roots], "blocks": n,
                             "pinned": pinned})


def gateway_routes(store: BlockStore, *, max_concurrency: int = 1024,
                   upload_token: str | None = None, gateway: Gateway | None = None,
                   max_upload_bytes: int = MAX_UPLOAD_BYTES) -> list[Route]:
    """Routes to mount on any Starlette app (the main server includes these)."""
    gw = gateway or Gateway(store, upload_token=upload_token, max_upload_bytes=max_upload_bytes)
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
