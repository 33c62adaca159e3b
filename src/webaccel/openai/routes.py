"""The ``/v1`` routes: authentication, then validation (:mod:`.validation`), then the
engine; streamed answers go out as server-sent events (:mod:`.sse`).  Every error
leaves through :func:`webaccel.errors.openai_error_response` (the one table)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route

from webaccel.errors import (
    INTERNAL_MESSAGE,
    CancelledError_,
    InternalError,
    MethodNotAllowedError,
    ModelNotFoundError,
    NotFoundError,
    UnauthorizedError,
    WebAccelError,
    openai_error_body,
    openai_error_response,
)
from webaccel.generation import GenerationResult, load_generation_model, stream_generate
from webaccel.models import registry
from webaccel.openai import validation
from webaccel.openai.schema import openapi_document
from webaccel.openai.sse import DONE, event_stream, sse
from webaccel.openai.validation import bad
from webaccel.progress import stage

if TYPE_CHECKING:
    from webaccel.engine import Engine

log = logging.getLogger(__name__)

API_KEY_ENV = "WEBACCEL_API_KEY"


class _AnyPath(Convertor[str]):
    """Starlette's ``path`` convertor is ``.*``, which stops at a newline: a path with
    ``%0A`` in it matched no /v1 route and got the server's bare 404, without the key
    check.  This one takes every character."""

    regex = r"(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anypath", _AnyPath())


def resolve_api_key(explicit: str | None = None) -> tuple[str, bool]:
    """``(key, generated)``: ``--api-key``, else $WEBACCEL_API_KEY, else a new random key."""
    key = explicit or os.environ.get(API_KEY_ENV)
    if key:
        return key, False
    return "wa-" + secrets.token_urlsafe(24), True


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
        # the sampling parameters the page's loop reports it used
        "sampling": page.get("sampling"),
    }


def _finish(result: GenerationResult | None) -> str:
    return "stop" if result is not None and result.finish_reason == "stop" else "length"


def openai_routes(
    engine: Engine,
    api_key: str,
    *,
    platform: str | None = None,
) -> list[BaseRoute]:
    """The ``/v1`` routes, for ``WebAccelServer(extra_routes=...)`` / ``add_routes``.

    ``engine`` is a started :class:`webaccel.engine.Engine` on the same event loop
    (its ``accelerate`` serves embeddings; generation uses its worker slots);
    ``api_key`` is the Bearer token clients must present (see
    :func:`resolve_api_key`).  Every request names its ``model`` (400 otherwise,
    as OpenAI and vLLM answer).  ``platform`` forces a backend.
    """
    if not api_key:
        raise ValueError("openai_routes needs a non-empty api_key (see resolve_api_key)")
    expected = api_key.encode()

    def guarded(
        handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                if auth:
                    header = request.headers.get("authorization", "")
                    presented = header[7:].strip() if header.lower().startswith("bearer ") else ""
                    if not presented or not secrets.compare_digest(presented.encode(), expected):
                        raise UnauthorizedError(
                            "missing or incorrect API key: send 'Authorization: "
                            "Bearer <key>' with the key webaccel serve printed"
                        )
                return await handler(request)
            except WebAccelError as exc:
                return openai_error_response(exc)
            except Exception:
                log.exception("%s %s failed", request.method, request.url.path)
                return openai_error_response(InternalError(INTERNAL_MESSAGE))

        return endpoint

    async def generation(request: Request, chat: bool) -> Response:
        body = await validation.json_body(request)
        validation.check_fields(
            body, validation.CHAT_FIELDS if chat else validation.COMPLETION_FIELDS
        )
        # Every field is checked before the model is looked up (and loaded): a client
        # learns what is wrong with its request whatever model it names.
        if chat:
            prompt_kw: dict[str, Any] = {"messages": validation.messages(body)}
        else:
            prompt_kw = {"prompt": validation.prompt(body)}
        validation.generation_params(body)
        stream = validation.get(body, "stream", bool, False)
        opts = validation.stream_options(body)
        validation.passive_fields(body)
        model = validation.model(body, "text_generation")
        # As vLLM: sampling fields the request leaves out come from the model's
        # own generation config (its first use builds the model: not on the loop).
        with stage(f"{model}: building and reading it (first use)", after_s=2.0):
            _, gm, _ = await asyncio.to_thread(load_generation_model, model)
        defaults = gm.sampling_defaults
        params = validation.generation_params(body, defaults)
        sources = validation.sampling_sources(body, defaults)
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
                        return openai_error_response(
                            CancelledError_("the client closed the request")
                        )
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
                    "webaccel": {**_stats(result), "sampling_source": sources},
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
                    yield sse(chunk({"role": "assistant", "content": ""}, None))
                if first is not None:
                    yield sse(chunk({"content": first.text} if chat else first.text, None))
                    async for piece in text_stream:
                        yield sse(chunk({"content": piece.text} if chat else piece.text, None))
            except WebAccelError as exc:  # after the 200: report it in-band, as OpenAI does
                yield sse(openai_error_body(exc))
                yield DONE
                return
            result = text_stream.result
            yield sse(chunk(None if chat else "", _finish(result)))
            if include_usage and result is not None:
                yield sse(
                    {
                        "id": rid,
                        "object": chunk_kind,
                        "created": created,
                        "model": model,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": result.usage,
                        "webaccel": {**_stats(result), "sampling_source": sources},
                    }
                )
            yield DONE

        return event_stream(
            events(),
            on_disconnect=lambda: log.info("client left %s; cancelling its generation", rid),
            close=text_stream.aclose,
        )

    async def chat_completions(request: Request) -> Response:
        return await generation(request, chat=True)

    async def completions(request: Request) -> Response:
        return await generation(request, chat=False)

    async def embeddings(request: Request) -> Response:
        body = await validation.json_body(request)
        validation.check_fields(body, validation.EMBEDDING_FIELDS)
        texts = validation.embedding_inputs(body)  # every field before the model, as above
        fmt = validation.get(body, "encoding_format", str, "float")
        if fmt not in ("float", "base64"):
            raise bad("encoding_format must be 'float' or 'base64'", "encoding_format")
        dims = validation.get(body, "dimensions", int)
        # Over the model's context: 400, unless the request asks to truncate (vLLM's
        # truncate_prompt_tokens); then the answer says which inputs were cut.
        truncate = validation.get(body, "truncate_prompt_tokens", int)
        validation.passive_fields(body)
        model = validation.model(body, "text_embedding")
        texts, truncated, tokens = await asyncio.to_thread(
            validation.fit_embedding_inputs, model, texts, truncate
        )
        out = await engine.accelerate(model, texts, {}, platform=platform)
        vectors = np.asarray(out["embeddings"], dtype=np.float32)
        if dims is not None and dims != vectors.shape[1]:
            raise bad(
                f"{model} makes {vectors.shape[1]}-dimensional embeddings; dimensions "
                f"cannot be {dims}",
                "dimensions",
            )
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
                    "truncated": truncated,
                    **(
                        {"warning": f"{sum(truncated)} input(s) truncated to {truncate} tokens "
                         "(truncate_prompt_tokens)"}
                        if any(truncated) else {}
                    ),
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
            raise ModelNotFoundError(
                f"the model '{request.path_params['model']}' does not exist; GET /v1/models "
                "lists them",
                details={"param": "model"},
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

    routes = [
        Route("/v1/chat/completions", guarded(chat_completions), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{model:anypath}", guarded(model_detail), methods=["GET"]),
        Route("/v1/openapi.json", guarded(openapi, auth=False), methods=["GET"]),
    ]

    async def not_found(request: Request) -> Response:
        # A known path asked with another method: 405 naming the methods it takes.
        for route in routes:
            match, _ = route.matches({**request.scope, "method": "GET", "type": "http"})
            if match != Match.NONE and route.methods:
                allow = sorted(route.methods)
                raise MethodNotAllowedError(
                    f"{request.url.path} takes {' or '.join(allow)}, not {request.method}",
                    details={"allow": allow},
                )
        raise NotFoundError(
            f"no route {request.method} {request.url.path}; GET /v1/openapi.json lists the routes"
        )

    # Any method (TRACE, QUERY...): the key first, then 404 or 405 in OpenAI's shape.
    # (Starlette turns methods=None into GET for a function endpoint: unset it after.)
    rest = Route("/v1/{rest:anypath}", guarded(not_found))
    rest.methods = None
    return [*routes, rest]


async def _disconnected(request: Request) -> bool:
    try:
        return await asyncio.wait_for(request.is_disconnected(), 0.01)
    except TimeoutError:
        return False
