"""OpenAI-compatible HTTP API over the engine's browser workers.

Routes (mounted by ``webaccel serve`` through :func:`openai_routes`):

* ``POST /v1/chat/completions`` and ``POST /v1/completions``: generation in a
  browser page; ``"stream": true`` answers with server-sent events in
  OpenAI's chunk format, ending with ``data: [DONE]``
  (``stream_options.include_usage`` adds a usage chunk before it).
* ``POST /v1/embeddings``: text embeddings (minilm) via ``Engine.accelerate``;
  ``encoding_format`` float or base64 (the official client asks for base64).
* ``GET /v1/models``: the registry's models.
* ``GET /v1/openapi.json``: an OpenAPI 3.1 document of these routes (no auth).

Every ``/v1`` route but the OpenAPI document needs ``Authorization: Bearer
<api key>``.  Errors use OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}``: 401 for a missing/wrong key, 400 for malformed or
invalid requests (with ``param`` naming the field), 404 for an unknown model,
and webaccel's error codes mapped to 429/503/504/500.  A client that
disconnects (streaming or not) cancels its generation in the page.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from webaccel.errors import ErrorCode, InvalidInputError, ModelNotFoundError, WebAccelError
from webaccel.generation import GenerationParams, GenerationResult, stream_generate
from webaccel.models import registry

if TYPE_CHECKING:
    from webaccel.engine import Engine

log = logging.getLogger(__name__)

API_KEY_ENV = "WEBACCEL_API_KEY"
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 256

_STATUS = {
    ErrorCode.BAD_REQUEST: (400, "invalid_request_error"),
    ErrorCode.MODEL_NOT_FOUND: (404, "invalid_request_error"),
    ErrorCode.NOT_FOUND: (404, "invalid_request_error"),
    ErrorCode.OVERLOADED: (429, "rate_limit_error"),
    ErrorCode.TIMEOUT: (504, "timeout_error"),
    ErrorCode.WORKER_LOST: (503, "server_error"),
    ErrorCode.BACKEND_UNAVAILABLE: (503, "server_error"),
    ErrorCode.OUT_OF_MEMORY: (503, "server_error"),
    ErrorCode.LOAD_FAILED: (500, "server_error"),
    ErrorCode.CANCELLED: (499, "server_error"),
    ErrorCode.INTERNAL: (500, "server_error"),
}


def resolve_api_key(explicit: str | None = None) -> tuple[str, bool]:
    """``(key, generated)``: ``--api-key``, else $WEBACCEL_API_KEY, else a new random key."""
    key = explicit or os.environ.get(API_KEY_ENV)
    if key:
        return key, False
    return "wa-" + secrets.token_urlsafe(24), True


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )

    def response(self) -> JSONResponse:
        return JSONResponse(
            error_body(self.message, self.type, self.param, self.code), status_code=self.status
        )


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def from_webaccel(exc: WebAccelError) -> APIError:
    status, type_ = _STATUS.get(exc.code, (500, "server_error"))
    code = "model_not_found" if exc.code == ErrorCode.MODEL_NOT_FOUND else str(exc.code).lower()
    return APIError(status, exc.message, type_=type_, code=code)


# ------------------------------------------------------------------ validation helpers


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param, code="invalid_value" if param else None)


def _get(
    body: dict[str, Any],
    name: str,
    kinds: type | tuple[type, ...],
    default: Any = None,
    *,
    required: bool = False,
) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise APIError(
                400, f"'{name}' is required", param=name, code="missing_required_parameter"
            )
        return default
    value = body[name]
    kinds_t = kinds if isinstance(kinds, tuple) else (kinds,)
    # bool is an int in Python, but not in JSON Schema.
    if isinstance(value, bool) and bool not in kinds_t:
        raise _bad(f"'{name}' must be of type {'/'.join(k.__name__ for k in kinds_t)}", name)
    if not isinstance(value, kinds_t):
        raise _bad(
            f"'{name}' must be of type {'/'.join(k.__name__ for k in kinds_t)}, "
            f"got {type(value).__name__}",
            name,
        )
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise APIError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise APIError(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise APIError(400, f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object")
    return body


def _model(body: dict[str, Any], task: str, default: str | None) -> str:
    name = _get(body, "model", str, default, required=default is None)
    try:
        spec = registry.get(name)
    except ModelNotFoundError:
        raise APIError(
            404,
            f"the model '{name}' does not exist; GET /v1/models lists them",
            param="model",
            code="model_not_found",
        ) from None
    if spec.task != task:
        raise _bad(f"the model '{name}' is a {spec.task} model, not {task}", "model")
    return spec.name


def _generation_params(body: dict[str, Any]) -> dict[str, Any]:
    n = _get(body, "n", int, 1)
    if n != 1:
        raise _bad("only n=1 is supported", "n")
    if _get(body, "logprobs", (bool, int), False):
        raise _bad("logprobs are not supported", "logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if _get(body, name, (int, float), 0) != 0:
            raise _bad(f"{name} is not supported (use repetition_penalty)", name)
    max_tokens = _get(body, "max_completion_tokens", int) or _get(body, "max_tokens", int, 256)
    if not 1 <= max_tokens <= 8192:
        raise _bad("max_tokens must be between 1 and 8192", "max_tokens")
    temperature = _get(body, "temperature", (int, float), 1.0)
    if not 0 <= temperature <= 2:
        raise _bad("temperature must be between 0 and 2", "temperature")
    top_p = _get(body, "top_p", (int, float), 1.0)
    if not 0 < top_p <= 1:
        raise _bad("top_p must be in (0, 1]", "top_p")
    stop = _get(body, "stop", (str, list), None)
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (len(stop) > 4 or not all(isinstance(s, str) and s for s in stop)):
        raise _bad("stop must be a non-empty string or a list of at most 4 of them", "stop")
    params = {
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": _get(body, "seed", int),
        "stop": tuple(stop or ()),
        "top_k": _get(body, "top_k", int, 0),
        "repetition_penalty": _get(body, "repetition_penalty", (int, float), 1.0),
    }
    try:
        GenerationParams.from_kwargs(**params)
    except InvalidInputError as exc:
        raise _bad(exc.message) from None
    return params


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = _get(body, "messages", list, required=True)
    if not messages:
        raise _bad("'messages' must contain at least one message", "messages")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise _bad(f"messages[{i}] must be an object", f"messages[{i}]")
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "developer", "tool"):
            raise _bad(
                f"messages[{i}].role must be system, user, assistant, developer or tool",
                f"messages[{i}].role",
            )
        content = msg.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise _bad(
                        f"messages[{i}].content: only text parts are supported",
                        f"messages[{i}].content",
                    )
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise _bad(f"messages[{i}].content must be a string", f"messages[{i}].content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


# ------------------------------------------------------------------ SSE


class EventStream:
    """An SSE response that stops its producer as soon as the client goes away.

    Starlette's StreamingResponse only notices a disconnect at its next write
    and then abandons (does not close) the iterator; here a listener task
    watches ``http.disconnect`` and cancels the producer at once, and the
    iterator is always closed, which cancels the generation in the page.
    """

    def __init__(self, events: AsyncIterator[bytes], on_disconnect: Callable[[], None]) -> None:
        self.events = events
        self.on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )

        async def pump() -> None:
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def listen() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        producer = asyncio.ensure_future(pump())
        listener = asyncio.ensure_future(listen())
        try:
            await asyncio.wait({producer, listener}, return_when=asyncio.FIRST_COMPLETED)
            if not producer.done():
                self.on_disconnect()
                producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await producer
        finally:
            listener.cancel()
            producer.cancel()
            with contextlib.suppress(BaseException):
                await self.events.aclose()  # type: ignore[attr-defined]


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def _stats(result: GenerationResult | None) -> dict[str, Any]:
    if result is None:
        return {}
    page = result.stats.get("page") or {}
    return {
        "backend": result.backend,
        "browser": result.browser,
        "worker_id": result.worker_id,
        "ttft_ms": result.stats.get("ttft_ms"),
        "tokens_per_s": result.stats.get("decode_tokens_per_s"),
        "page_ttft_ms": page.get("ttft_ms"),
        "page_tokens_per_s": page.get("decode_tokens_per_s"),
        "load_ms": result.stats.get("load_ms"),
        "seed": result.stats.get("seed"),
    }


def _finish(result: GenerationResult | None) -> str:
    return "stop" if result is not None and result.finish_reason == "stop" else "length"


# ------------------------------------------------------------------ routes


def openai_routes(
    engine: Engine,
    api_key: str,
    *,
    chat_model: str = "smollm2",
    embedding_model: str = "minilm",
    platform: str | None = None,
) -> list[BaseRoute]:
    """The ``/v1`` routes, for ``WebAccelServer(extra_routes=...)`` / ``add_routes``.

    ``engine`` is a started :class:`webaccel.engine.Engine` on the same event loop
    (its ``accelerate`` serves embeddings; generation uses its worker slots);
    ``api_key`` is the Bearer token clients must present (see
    :func:`resolve_api_key`).  ``chat_model``/``embedding_model`` apply when a
    request names no model.  ``platform`` forces a backend for generation.
    """
    if not api_key:
        raise ValueError("openai_routes needs a non-empty api_key (see resolve_api_key)")
    expected = api_key.encode()

    def guarded(
        handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if auth:
                header = request.headers.get("authorization", "")
                presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
                if not presented or not secrets.compare_digest(presented.encode(), expected):
                    return APIError(
                        401,
                        "missing or incorrect API key: send 'Authorization: "
                        "Bearer <key>' with the key webaccel serve printed",
                        code="invalid_api_key",
                    ).response()
            try:
                return await handler(request)
            except APIError as exc:
                return exc.response()
            except WebAccelError as exc:
                return from_webaccel(exc).response()
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return APIError(
                    500, "internal error; see the server log", type_="server_error"
                ).response()

        return endpoint

    async def generation(request: Request, chat: bool) -> Response:
        body = await _json_body(request)
        model = _model(body, "text_generation", chat_model)
        if chat:
            prompt_kw: dict[str, Any] = {"messages": _messages(body)}
        else:
            prompt = _get(body, "prompt", (str, list), required=True)
            if isinstance(prompt, list):
                if len(prompt) != 1 or not isinstance(prompt[0], str):
                    raise _bad(
                        "prompt must be a string (or a list of exactly one string)", "prompt"
                    )
                prompt = prompt[0]
            if not prompt:
                raise _bad("prompt must not be empty", "prompt")
            prompt_kw = {"prompt": prompt}
        params = _generation_params(body)
        stream = _get(body, "stream", bool, False)
        opts = _get(body, "stream_options", dict, {}) or {}
        include_usage = bool(opts.get("include_usage"))
        created = int(time.time())
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        text_stream = stream_generate(engine, model, platform=platform, **prompt_kw, **params)
        kind = "chat.completion" if chat else "text_completion"

        if not stream:
            task = asyncio.ensure_future(text_stream.collect())
            try:
                while not task.done():
                    await asyncio.wait({task}, timeout=0.25)
                    if not task.done() and await _disconnected(request):
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
                        await text_stream.aclose()
                        return Response(status_code=499)
                result = task.result()
            finally:
                if not task.done():
                    task.cancel()
            choice: dict[str, Any] = {
                "index": 0,
                "logprobs": None,
                "finish_reason": _finish(result),
            }
            if chat:
                choice["message"] = {"role": "assistant", "content": result.text, "refusal": None}
            else:
                choice["text"] = result.text
            return JSONResponse(
                {
                    "id": rid,
                    "object": kind,
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [choice],
                    "usage": result.usage,
                    "webaccel": _stats(result),
                }
            )

        chunk_kind = "chat.completion.chunk" if chat else "text_completion"
        # Start the generation before answering 200, so that bad requests the
        # engine detects (too long a prompt, unknown backend) still get a 4xx.
        try:
            first = await text_stream.__anext__()
        except StopAsyncIteration:
            first = None

        def chunk(delta: dict[str, Any] | str | None, finish: str | None) -> dict[str, Any]:
            if chat:
                ch: dict[str, Any] = {
                    "index": 0,
                    "delta": delta or {},
                    "logprobs": None,
                    "finish_reason": finish,
                }
            else:
                ch = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
            out = {
                "id": rid,
                "object": chunk_kind,
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [ch],
            }
            if include_usage:
                out["usage"] = None
            return out

        async def events() -> AsyncIterator[bytes]:
            try:
                if chat:
                    yield _sse(chunk({"role": "assistant", "content": ""}, None))
                if first is not None:
                    yield _sse(chunk({"content": first.text} if chat else first.text, None))
                    async for piece in text_stream:
                        yield _sse(chunk({"content": piece.text} if chat else piece.text, None))
            except WebAccelError as exc:  # after the 200: report it in-band, as OpenAI does
                err = from_webaccel(exc)
                yield _sse(error_body(err.message, err.type, err.param, err.code))
                yield b"data: [DONE]\n\n"
                return
            result = text_stream.result
            yield _sse(chunk(None if chat else "", _finish(result)))
            if include_usage and result is not None:
                yield _sse(
                    {
                        "id": rid,
                        "object": chunk_kind,
                        "created": created,
                        "model": model,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": result.usage,
                        "webaccel": _stats(result),
                    }
                )
            yield b"data: [DONE]\n\n"

        return EventStream(
            events(),
            on_disconnect=lambda: log.info("client left %s; cancelling its generation", rid),
        )  # type: ignore[return-value]

    async def chat_completions(request: Request) -> Response:
        return await generation(request, chat=True)

    async def completions(request: Request) -> Response:
        return await generation(request, chat=False)

    async def embeddings(request: Request) -> Response:
        body = await _json_body(request)
        model = _model(body, "text_embedding", embedding_model)
        data = _get(body, "input", (str, list), required=True)
        texts = [data] if isinstance(data, str) else data
        if not texts or not all(isinstance(t, str) for t in texts):
            raise _bad(
                "input must be a non-empty string or a list of strings (token arrays are "
                "not supported)",
                "input",
            )
        if len(texts) > MAX_EMBEDDING_INPUTS:
            raise _bad(f"at most {MAX_EMBEDDING_INPUTS} inputs per request", "input")
        if any(not t.strip() for t in texts):
            raise _bad("input strings must not be empty", "input")
        fmt = _get(body, "encoding_format", str, "float")
        if fmt not in ("float", "base64"):
            raise _bad("encoding_format must be 'float' or 'base64'", "encoding_format")
        out = await engine.accelerate(model, list(texts), {}, platform=platform)
        vectors = np.asarray(out["embeddings"], dtype=np.float32)
        dims = _get(body, "dimensions", int)
        if dims is not None and dims != vectors.shape[1]:
            raise _bad(
                f"{model} makes {vectors.shape[1]}-dimensional embeddings; dimensions "
                f"cannot be {dims}",
                "dimensions",
            )
        tokens = _count_embedding_tokens(model, texts)
        items = []
        for i, vec in enumerate(vectors):
            emb: Any = (
                base64.b64encode(vec.astype("<f4").tobytes()).decode()
                if fmt == "base64"
                else vec.tolist()
            )
            items.append({"object": "embedding", "index": i, "embedding": emb})
        return JSONResponse(
            {
                "object": "list",
                "data": items,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "webaccel": {
                    "backend": out.get("backend"),
                    "browser": out.get("browser"),
                    "latency_ms": out.get("latency_ms"),
                },
            }
        )

    async def models(request: Request) -> Response:
        data = [
            {
                "id": spec.name,
                "object": "model",
                "created": 0,
                "owned_by": "webaccel",
                "task": spec.task,
                "description": spec.description,
            }
            for spec in registry.all_models()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def model_detail(request: Request) -> Response:
        try:
            spec = registry.get(request.path_params["model"])
        except ModelNotFoundError:
            raise APIError(
                404,
                f"the model '{request.path_params['model']}' does not exist",
                param="model",
                code="model_not_found",
            ) from None
        return JSONResponse(
            {
                "id": spec.name,
                "object": "model",
                "created": 0,
                "owned_by": "webaccel",
                "task": spec.task,
            }
        )

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def not_found(request: Request) -> Response:
        raise APIError(404, f"no route {request.method} {request.url.path}", code="not_found")

    return [
        Route("/v1/chat/completions", guarded(chat_completions), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{model:path}", guarded(model_detail), methods=["GET"]),
        Route("/v1/openapi.json", guarded(openapi, auth=False), methods=["GET"]),
        Route("/v1/{rest:path}", guarded(not_found), methods=["GET", "POST", "PUT", "DELETE"]),
    ]


async def _disconnected(request: Request) -> bool:
    try:
        return await asyncio.wait_for(request.is_disconnected(), 0.01)
    except TimeoutError:
        return False


def _count_embedding_tokens(model: str, texts: list[str]) -> int:
    if model != "minilm":
        return 0
    from webaccel.models import text as text_models

    # The shared tokenizer pads a batch to its longest text: count real tokens only.
    return sum(sum(e.attention_mask) for e in text_models._tokenizer().encode_batch(list(texts)))


# ------------------------------------------------------------------ OpenAPI


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for the routes above (request fields webaccel accepts, error shape)."""
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }
    sampling = {
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 8192, "default": 256},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 8192},
        "temperature": {
            "type": "number",
            "minimum": 0,
            "maximum": 2,
            "default": 1,
            "description": "0 = greedy",
        },
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "top_k": {
            "type": "integer",
            "minimum": 0,
            "default": 0,
            "description": "webaccel extension",
        },
        "repetition_penalty": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 10,
            "default": 1,
            "description": "webaccel extension",
        },
        "seed": {"type": "integer"},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        },
        "n": {"type": "integer", "enum": [1]},
        "stream": {"type": "boolean", "default": False},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    }
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool"],
            },
            "content": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                        },
                    },
                ]
            },
        },
    }

    def op(summary: str, schema: dict[str, Any] | None, sse: bool = False) -> dict[str, Any]:
        content = {"application/json": {"schema": {"type": "object"}}}
        if sse:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        out: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "OK", "content": content},
                **{
                    code: {"description": desc, "content": {"application/json": {"schema": error}}}
                    for code, desc in (
                        ("400", "invalid request"),
                        ("401", "missing or wrong API key"),
                        ("404", "unknown model"),
                        ("503", "no worker available"),
                    )
                },
            },
        }
        if schema is not None:
            out["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        return out

    return {
        "openapi": "3.1.0",
        "info": {"title": "webaccel OpenAI-compatible API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/chat/completions": {
                "post": op(
                    "Chat completion generated in a browser page",
                    {
                        "type": "object",
                        "required": ["messages"],
                        "properties": {
                            "model": {"type": "string", "default": "smollm2"},
                            "messages": {"type": "array", "minItems": 1, "items": message},
                            **sampling,
                        },
                    },
                    sse=True,
                )
            },
            "/v1/completions": {
                "post": op(
                    "Text completion generated in a browser page",
                    {
                        "type": "object",
                        "required": ["prompt"],
                        "properties": {
                            "model": {"type": "string", "default": "smollm2"},
                            "prompt": {"type": "string"},
                            **sampling,
                        },
                    },
                    sse=True,
                )
            },
            "/v1/embeddings": {
                "post": op(
                    "Text embeddings (minilm)",
                    {
                        "type": "object",
                        "required": ["input"],
                        "properties": {
                            "model": {"type": "string", "default": "minilm"},
                            "input": {
                                "oneOf": [
                                    {"type": "string"},
                                    {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "maxItems": MAX_EMBEDDING_INPUTS,
                                    },
                                ]
                            },
                            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                            "dimensions": {"type": "integer"},
                        },
                    },
                )
            },
            "/v1/models": {"get": op("List models", None)},
            "/v1/models/{model}": {"get": op("One model", None)},
        },
    }
