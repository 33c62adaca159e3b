"""``POST /api/v0/run``: what ``webaccel run`` does, on a running ``webaccel serve``.

As ``ipfs`` commands talk to a running daemon, ``webaccel run`` sends its request
here when ``$WEBACCEL_HOME/serve.json`` names a live server (:mod:`webaccel.admin`),
so the server's warm browsers and loaded models answer instead of a new browser.
The body is ``{"model", "input", "options", "platform", "browser", "local_tasks"}``
(a model whose task is in ``local_tasks`` is not run: the answer is ``{"local":
true, "task": ...}``, and the client runs it itself); ``input`` is
text, or ``{"file": base64, "suffix": ".jpg"}`` for an image or audio file (written
to a temporary file the model's processor reads, then removed).  The answer is
the result ``webaccel run --json`` prints.  The server's master key only: the
route runs any model on any input, as the CLI on that machine may.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import secrets
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

from webaccel.errors import InvalidInputError, UnauthorizedError, json_error_response

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from webaccel.engine import Engine

PATH = "/api/v0/run"
MAX_BODY_BYTES = 64 << 20  # an image or a few minutes of audio, base64


def jsonable(value: Any) -> Any:
    """Arrays and numpy scalars as plain lists and numbers (for JSON)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def run_routes(engine: Engine, master_token: str) -> list[BaseRoute]:
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from webaccel.http_body import read_json_object
    from webaccel.models import registry

    async def run(request: Request) -> Response:
        try:
            auth = request.headers.get("authorization", "")
            given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
            if not secrets.compare_digest(given.encode(), master_token.encode()):
                raise UnauthorizedError(
                    "the run route takes the server's master key (serve.json under "
                    "WEBACCEL_HOME where the server runs; `webaccel run` reads it)"
                )
            body = await read_json_object(request, MAX_BODY_BYTES)
            if not isinstance(body.get("model"), str):
                raise InvalidInputError('the body must be {"model": NAME, "input": ...}')
            options = body.get("options") or {}
            if not isinstance(options, dict):
                raise InvalidInputError("options must be an object")
            local = body.get("local_tasks") or []
            if not (isinstance(local, list) and all(isinstance(t, str) for t in local)):
                raise InvalidInputError("local_tasks must be a list of task names")
            task = registry.get(body["model"]).task
            if task in local:  # the client runs these itself (streamed generation)
                return JSONResponse({"local": True, "task": task})
            with _input(body.get("input")) as value:
                result = await engine.accelerate(
                    body["model"],
                    value,
                    options,
                    platform=_name(body, "platform"),
                    browser=_name(body, "browser"),
                )
            return JSONResponse(jsonable(result))
        except Exception as exc:  # noqa: BLE001 - the one error table answers
            return json_error_response(exc)

    return [Route(PATH, run, methods=["POST"])]


def _name(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not (isinstance(value, str) and re.fullmatch(r"[a-z0-9-]+", value)):
        raise InvalidInputError(f"{key} must be a name such as wasm or chromium")
    return value


@contextlib.contextmanager
def _input(value: Any) -> Any:
    """Text as is; a file as a temporary path, removed afterwards."""
    if isinstance(value, str):
        yield value
        return
    if not (isinstance(value, dict) and isinstance(value.get("file"), str)):
        raise InvalidInputError('input must be text or {"file": base64, "suffix": ".jpg"}')
    suffix = value.get("suffix") or ""
    if not (isinstance(suffix, str) and re.fullmatch(r"(\.[A-Za-z0-9]{1,8})?", suffix)):
        raise InvalidInputError("suffix must be a file extension such as .jpg or .wav")
    try:
        data = base64.b64decode(value["file"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(f"input.file is not base64: {exc}") from None
    fd, path = tempfile.mkstemp(prefix="webaccel-run-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
