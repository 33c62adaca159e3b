"""Request bodies read under a limit and parsed strictly, for every route that reads one.

A body is counted as it arrives and reading stops at the first chunk that
passes the limit (a chunked upload declares no length), so a client cannot
make the server hold more than ``limit`` plus one chunk; a declared
``Content-Length`` past the limit is refused before anything is read.  The
route then answers 413 (:class:`webaccel.errors.PayloadTooLargeError`) and
the server closes the connection rather than drain the rest.

JSON bodies (:func:`read_json_object`) must be one object (RFC 8259: no
``NaN``/``Infinity``), nested at most :data:`MAX_JSON_DEPTH` deep (``json``
raises RecursionError on a deep enough body), and every string in them, keys
included, must encode as UTF-8: JSON's ``\\ud800`` escape decodes to a lone
surrogate that no tokenizer or response renderer can use.  Failures are
:class:`webaccel.errors.InvalidInputError` (400), ``details["param"]`` naming
where (``messages[0].content``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from webaccel.errors import BadRequestError, InvalidInputError, PayloadTooLargeError

MAX_JSON_DEPTH = 32


def bad(message: str, param: str | None = None, code: str | None = None) -> InvalidInputError:
    """A 400 naming the field at fault (``param``, as OpenAI's errors do)."""
    details: dict[str, Any] = {}
    if param is not None:
        details = {"param": param, "openai_code": code or "invalid_value"}
    elif code is not None:
        details = {"openai_code": code}
    return InvalidInputError(message, details=details)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the request body is larger than {limit} bytes; send less in one request"
    )


async def iter_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; PayloadTooLargeError once ``limit`` is passed."""
    declared = request.headers.get("content-length")
    if declared is not None:
        declared = declared.strip()
        if not (declared.isascii() and declared.isdigit()):
            raise BadRequestError("Content-Length must be a number of bytes")
        declared = declared.lstrip("0") or "0"
        if len(declared) > len(str(limit)) or int(declared) > limit:
            raise _too_large(limit)
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise _too_large(limit)
        yield chunk


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, at most ``limit`` bytes (PayloadTooLargeError past it)."""
    return b"".join([chunk async for chunk in iter_body(request, limit)])


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (RFC 8259 has no NaN or Infinity)")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json_value(body: Any) -> None:
    """Depth and Unicode checks over a parsed body, without recursion."""
    stack: list[tuple[str, Any, int]] = [("", body, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise bad(f"the request body nests deeper than {MAX_JSON_DEPTH} levels; flatten it")
        if isinstance(value, str):
            if not _is_text(value):
                raise bad(
                    f"{path} holds text that is not valid Unicode (a lone surrogate such "
                    "as \\ud800); send UTF-8 text",
                    path,
                )
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _is_text(key):
                    raise bad(
                        f"a key in {path or 'the body'} is not valid Unicode (a lone "
                        "surrogate); send UTF-8 text",
                        path or None,
                    )
                stack.append((f"{path}.{key}" if path else key, item, depth + 1))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """One strict JSON object (see the module docstring) or a 400 saying what is wrong."""
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise bad(
            f"the request body nests deeper than {MAX_JSON_DEPTH} levels; flatten it"
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, NaN
        raise bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    check_json_value(body)
    return body


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The request's body, read under ``limit``, as one strict JSON object."""
    return parse_json_object(await read_body(request, limit))
