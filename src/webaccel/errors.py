"""Typed errors for webaccel.

Every error carries a stable ``code`` (the bridge protocol's error codes, used
in frames, metrics labels and HTTP mappings) and a message that says what to
do about it.  The tree::

    WebAccelError                         code                 HTTP
    ├── BadRequestError                   BAD_REQUEST           400
    │   ├── ProtocolError                 BAD_REQUEST           400 (malformed frame from a peer)
    │   ├── InvalidInputError             BAD_REQUEST           400 (empty/wrong-shaped input)
    │   ├── MethodNotAllowedError         METHOD_NOT_ALLOWED    405 + Allow (the path takes others)
    │   ├── NotAcceptableError            NOT_ACCEPTABLE        406 (no response format fits Accept)
    │   ├── PayloadTooLargeError          PAYLOAD_TOO_LARGE     413 (body past its limit)
    │   └── RangeNotSatisfiableError      RANGE_NOT_SATISFIABLE 416
    ├── UnauthorizedError                 UNAUTHORIZED          401 (missing or wrong credential)
    ├── ForbiddenError                    FORBIDDEN             403 (credential valid, not for this)
    ├── NotFoundError                     NOT_FOUND             404
    ├── ModelNotFoundError                MODEL_NOT_FOUND       404
    ├── LoadFailedError                   LOAD_FAILED           500
    ├── BackendUnavailableError           BACKEND_UNAVAILABLE   503
    │   ├── BrowserNotFoundError          BACKEND_UNAVAILABLE   503 (binary missing)
    │   ├── MissingExtraError             BACKEND_UNAVAILABLE   503 (an optional package missing)
    │   └── ServerNotRunningError         BACKEND_UNAVAILABLE   503 (no `webaccel serve` answers)
    ├── OutOfMemoryError                  OUT_OF_MEMORY         503
    ├── TimeoutError_                     TIMEOUT               504
    ├── CancelledError_                   CANCELLED             499 (the client went away)
    ├── WorkerLostError                   WORKER_LOST           503
    │   ├── BrowserLaunchError            WORKER_LOST           503 (died or never said hello)
    │   └── WrongAnswerError              WORKER_LOST           503 (failed a check: quarantined)
    ├── OverloadedError                   OVERLOADED            429 + Retry-After (retry later)
    ├── NotImplementedError_              NOT_IMPLEMENTED       501 (valid, but not handled here)
    ├── UpstreamError                     BAD_UPSTREAM          502 (a peer sent bad data)
    ├── ContentError                      (content addressing; see webaccel.content.errors)
    └── InternalError                     INTERNAL              500

Errors raised by foreign libraries are mapped into these at I/O boundaries and
chained with ``raise ... from exc``.

HTTP.  :data:`HTTP_ERRORS` is the one table from code to HTTP status and
OpenAI error ``type``; every HTTP surface answers errors through one of the
three renderers below, which all read it (boxo's gateway ``errors.go`` has a
single translator too):

* :func:`openai_error_response`: ``{"error": {"message", "type", "param",
  "code"}}`` for ``/v1`` (OpenAI's shape; ``code`` is the lower-cased code);
* :func:`plain_error_response`: ``"<status>: <message>\n"`` as text/plain for
  the trustless gateway (IPFS gateways answer errors as text);
* :func:`json_error_response`: ``{"error": {"code", "message"}}`` for the
  bridge's own HTTP endpoints (model bytes, join tokens, metrics), the same
  pair an error frame carries.

Anything that is not a :class:`WebAccelError` renders as INTERNAL with a
message that names no detail of it (the full traceback goes to the log).
Each code has a status even where no error class raises it yet, so a code
received from a peer (``error_from_code``) still maps.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # starlette is imported where a response is made: pure modules import us
    from starlette.responses import Response

log = logging.getLogger(__name__)


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    FORBIDDEN = "FORBIDDEN"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    RANGE_NOT_SATISFIABLE = "RANGE_NOT_SATISFIABLE"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    LOAD_FAILED = "LOAD_FAILED"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    WORKER_LOST = "WORKER_LOST"
    OVERLOADED = "OVERLOADED"
    NOT_FOUND = "NOT_FOUND"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    BAD_UPSTREAM = "BAD_UPSTREAM"
    INTERNAL = "INTERNAL"


class WebAccelError(Exception):
    """Base of every webaccel error; ``code`` is stable, ``message`` is for people."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": str(self.code), "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


class BadRequestError(WebAccelError, ValueError):
    code = ErrorCode.BAD_REQUEST


class ProtocolError(BadRequestError):
    """A frame broke the bridge protocol (the peer misbehaved)."""


class InvalidInputError(BadRequestError):
    """Inputs were empty, too large, of the wrong shape or of an unknown kind."""


class MethodNotAllowedError(BadRequestError):
    """The path exists but not for this method (HTTP 405); ``details["allow"]`` lists
    the methods it takes (the ``Allow`` header)."""

    code = ErrorCode.METHOD_NOT_ALLOWED


class NotAcceptableError(BadRequestError):
    """No representation we make matches what the request accepts (HTTP 406)."""

    code = ErrorCode.NOT_ACCEPTABLE


class PayloadTooLargeError(BadRequestError):
    """A request body passed its limit; reading stopped there (HTTP 413)."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class RangeNotSatisfiableError(BadRequestError):
    """A byte range that starts past the end of the content (HTTP 416)."""

    code = ErrorCode.RANGE_NOT_SATISFIABLE


class UnauthorizedError(WebAccelError):
    """No credential, or a wrong one (HTTP 401, with ``WWW-Authenticate: Bearer``)."""

    code = ErrorCode.UNAUTHORIZED


class ForbiddenError(WebAccelError):
    """The credential is valid but does not open this (revoked, expired, used up)."""

    code = ErrorCode.FORBIDDEN


class ModelNotFoundError(WebAccelError, KeyError):
    code = ErrorCode.MODEL_NOT_FOUND

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return self.message


class LoadFailedError(WebAccelError):
    code = ErrorCode.LOAD_FAILED


class BackendUnavailableError(WebAccelError):
    code = ErrorCode.BACKEND_UNAVAILABLE


class BrowserNotFoundError(BackendUnavailableError, FileNotFoundError):
    """The browser binary is not installed where we looked."""


class MissingExtraError(BackendUnavailableError, ImportError):
    """An optional dependency (a ``webaccel[extra]``) this feature needs is not installed."""


class ServerNotRunningError(BackendUnavailableError):
    """No ``webaccel serve`` answers where a client looked (no state file, a stale one,
    or nothing listening at the URL; webaccel.admin)."""


class OutOfMemoryError(WebAccelError, MemoryError):
    code = ErrorCode.OUT_OF_MEMORY


class TimeoutError_(WebAccelError, TimeoutError):  # noqa: N801 - builtin name is taken
    code = ErrorCode.TIMEOUT


class CancelledError_(WebAccelError):  # noqa: N801
    code = ErrorCode.CANCELLED


class WorkerLostError(WebAccelError):
    code = ErrorCode.WORKER_LOST


class BrowserLaunchError(WorkerLostError):
    """The browser died at start or its page never said hello."""


class WrongAnswerError(WorkerLostError):
    """A worker's answer disagreed with a trusted one: it is quarantined (as good as
    lost) and the request runs again elsewhere."""


class OverloadedError(WebAccelError):
    code = ErrorCode.OVERLOADED


class NotFoundError(WebAccelError):
    code = ErrorCode.NOT_FOUND


class NotImplementedError_(WebAccelError):  # noqa: N801 - builtin name is taken
    """Valid input of a kind this server does not handle (e.g. HAMT directories)."""

    code = ErrorCode.NOT_IMPLEMENTED


class UpstreamError(WebAccelError):
    """A peer or upstream service answered with bad data (bytes that fail their CID)."""

    code = ErrorCode.BAD_UPSTREAM


class InternalError(WebAccelError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[str, type[WebAccelError]] = {
    ErrorCode.BAD_REQUEST: BadRequestError,
    ErrorCode.UNAUTHORIZED: UnauthorizedError,
    ErrorCode.FORBIDDEN: ForbiddenError,
    ErrorCode.METHOD_NOT_ALLOWED: MethodNotAllowedError,
    ErrorCode.NOT_ACCEPTABLE: NotAcceptableError,
    ErrorCode.PAYLOAD_TOO_LARGE: PayloadTooLargeError,
    ErrorCode.RANGE_NOT_SATISFIABLE: RangeNotSatisfiableError,
    ErrorCode.NOT_IMPLEMENTED: NotImplementedError_,
    ErrorCode.BAD_UPSTREAM: UpstreamError,
    ErrorCode.MODEL_NOT_FOUND: ModelNotFoundError,
    ErrorCode.LOAD_FAILED: LoadFailedError,
    ErrorCode.BACKEND_UNAVAILABLE: BackendUnavailableError,
    ErrorCode.OUT_OF_MEMORY: OutOfMemoryError,
    ErrorCode.TIMEOUT: TimeoutError_,
    ErrorCode.CANCELLED: CancelledError_,
    ErrorCode.WORKER_LOST: WorkerLostError,
    ErrorCode.OVERLOADED: OverloadedError,
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.INTERNAL: InternalError,
}


def error_from_code(
    code: str, message: str, details: dict[str, Any] | None = None
) -> WebAccelError:
    """Rebuild a typed error from a wire ``{code, message}`` pair (unknown codes -> INTERNAL)."""
    cls = _BY_CODE.get(code, InternalError)
    return cls(message, details=details)


# ------------------------------------------------------------------ HTTP: the one table


@dataclass(frozen=True, slots=True)
class HTTPMapping:
    """How one error code leaves over HTTP."""

    status: int
    openai_type: str
    openai_code: str | None = None  # OpenAI's ``error.code``; None: the code in lower case
    retry_after_s: int | None = None  # a default ``Retry-After`` (RFC 9110 10.2.3)


_INVALID, _SERVER = "invalid_request_error", "server_error"

HTTP_ERRORS: Mapping[ErrorCode, HTTPMapping] = {
    ErrorCode.BAD_REQUEST: HTTPMapping(400, _INVALID),
    ErrorCode.UNAUTHORIZED: HTTPMapping(401, _INVALID, "invalid_api_key"),
    ErrorCode.FORBIDDEN: HTTPMapping(403, _INVALID),
    ErrorCode.NOT_FOUND: HTTPMapping(404, _INVALID),
    ErrorCode.MODEL_NOT_FOUND: HTTPMapping(404, _INVALID),
    ErrorCode.METHOD_NOT_ALLOWED: HTTPMapping(405, _INVALID),
    ErrorCode.NOT_ACCEPTABLE: HTTPMapping(406, _INVALID),
    ErrorCode.PAYLOAD_TOO_LARGE: HTTPMapping(413, _INVALID),
    ErrorCode.RANGE_NOT_SATISFIABLE: HTTPMapping(416, _INVALID),
    ErrorCode.OVERLOADED: HTTPMapping(429, "rate_limit_error", retry_after_s=1),
    # nginx's 499: the client closed the request; nobody reads the answer.
    ErrorCode.CANCELLED: HTTPMapping(499, _INVALID),
    ErrorCode.INTERNAL: HTTPMapping(500, _SERVER),
    ErrorCode.LOAD_FAILED: HTTPMapping(500, _SERVER),
    ErrorCode.NOT_IMPLEMENTED: HTTPMapping(501, _SERVER),
    ErrorCode.BAD_UPSTREAM: HTTPMapping(502, _SERVER),
    ErrorCode.BACKEND_UNAVAILABLE: HTTPMapping(503, _SERVER, retry_after_s=5),
    ErrorCode.WORKER_LOST: HTTPMapping(503, _SERVER, retry_after_s=1),
    ErrorCode.OUT_OF_MEMORY: HTTPMapping(503, _SERVER),
    ErrorCode.TIMEOUT: HTTPMapping(504, "timeout_error"),
}

INTERNAL_MESSAGE = "internal error; the server log has the details"


def as_webaccel_error(exc: BaseException) -> WebAccelError:
    """``exc`` itself, or an INTERNAL error naming nothing of it (the log gets the traceback)."""
    if isinstance(exc, WebAccelError):
        return exc
    log.error("unexpected %s", type(exc).__name__, exc_info=exc)
    return InternalError(INTERNAL_MESSAGE)


def http_mapping(exc: BaseException | str) -> HTTPMapping:
    """The table's row for an error or a code (a foreign error or an unknown code maps
    as INTERNAL)."""
    if isinstance(exc, WebAccelError):
        code: str = exc.code
    elif isinstance(exc, str):
        code = exc
    else:
        return HTTP_ERRORS[ErrorCode.INTERNAL]
    try:
        return HTTP_ERRORS[ErrorCode(code)]
    except ValueError:
        return HTTP_ERRORS[ErrorCode.INTERNAL]


def http_status(exc: BaseException | str) -> int:
    return http_mapping(exc).status


def error_headers(exc: WebAccelError) -> dict[str, str]:
    """Headers every shape sends with this error: never cached; 401 names the scheme
    (RFC 9110 11.6.1); 405 lists the methods the path takes (``details["allow"]``,
    RFC 9110 15.5.6); 429/503 say when to come back (``details["retry_after_s"]``
    overrides the table's default)."""
    row = http_mapping(exc)
    headers = {"Cache-Control": "no-store"}
    if row.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    allow = exc.details.get("allow")
    if row.status == 405 and isinstance(allow, list | tuple):
        headers["Allow"] = ", ".join(str(m) for m in allow)
    retry = exc.details.get("retry_after_s", row.retry_after_s)
    if isinstance(retry, (int, float)) and not isinstance(retry, bool) and math.isfinite(retry):
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    return headers


def _json(obj: Any) -> bytes:
    # ASCII escapes: a message that quotes input holding a lone surrogate still renders.
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode()


def openai_error_body(exc: BaseException) -> dict[str, Any]:
    """OpenAI's error object; ``details["param"]`` names the request field at fault and
    ``details["openai_code"]`` overrides the table's ``code`` (e.g. ``invalid_value``)."""
    err = as_webaccel_error(exc)
    row = http_mapping(err)
    code = err.details.get("openai_code") or row.openai_code or str(err.code).lower()
    return {
        "error": {
            "message": err.message,
            "type": row.openai_type,
            "param": err.details.get("param"),
            "code": code,
        }
    }


def openai_error_response(exc: BaseException) -> Response:
    """``/v1``: ``{"error": {"message", "type", "param", "code"}}`` with the table's status."""
    from starlette.responses import Response

    err = as_webaccel_error(exc)
    return Response(
        _json(openai_error_body(err)),
        status_code=http_status(err),
        headers=error_headers(err),
        media_type="application/json",
    )


def json_error_response(exc: BaseException, headers: Mapping[str, str] | None = None) -> Response:
    """The bridge's HTTP endpoints: ``{"error": {"code", "message"}}``, as in error frames."""
    from starlette.responses import Response

    err = as_webaccel_error(exc)
    body = {"error": {"code": str(err.code), "message": err.message}}
    return Response(
        _json(body),
        status_code=http_status(err),
        headers={**error_headers(err), **(headers or {})},
        media_type="application/json",
    )


def plain_error_response(exc: BaseException, headers: Mapping[str, str] | None = None) -> Response:
    """The gateway's shape: ``"<status>: <message>\\n"`` as text/plain."""
    from starlette.responses import Response

    err = as_webaccel_error(exc)
    status = http_status(err)
    text = f"{status}: {err.message}\n".encode("utf-8", "backslashreplace")
    return Response(
        text,
        status_code=status,
        headers={**error_headers(err), **(headers or {})},
        media_type="text/plain",
    )
