"""Typed errors for webaccel.

Every error carries a stable ``code`` (the bridge protocol's error codes, used
in frames, metrics labels and HTTP mappings) and a message that says what to
do about it.  The tree::

    WebAccelError                         code
    ├── BadRequestError                   BAD_REQUEST
    │   ├── ProtocolError                 BAD_REQUEST   (malformed frame from a peer)
    │   └── InvalidInputError             BAD_REQUEST   (empty/oversized/wrong-shaped input)
    ├── ModelNotFoundError                MODEL_NOT_FOUND
    ├── LoadFailedError                   LOAD_FAILED
    ├── BackendUnavailableError           BACKEND_UNAVAILABLE
    │   └── BrowserNotFoundError          BACKEND_UNAVAILABLE (binary missing)
    ├── OutOfMemoryError                  OUT_OF_MEMORY
    ├── TimeoutError_                     TIMEOUT
    ├── CancelledError_                   CANCELLED
    ├── WorkerLostError                   WORKER_LOST
    │   └── BrowserLaunchError            WORKER_LOST (browser died or never said hello)
    ├── OverloadedError                   OVERLOADED   (queue full: retry later)
    ├── ContentError                      (content addressing; see webaccel.content)
    └── InternalError                     INTERNAL

Errors raised by foreign libraries are mapped into these at I/O boundaries and
chained with ``raise ... from exc``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    BAD_REQUEST = "BAD_REQUEST"
    MODEL_NOT_FOUND = "MODEL_NOT_FOUND"
    LOAD_FAILED = "LOAD_FAILED"
    BACKEND_UNAVAILABLE = "BACKEND_UNAVAILABLE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    WORKER_LOST = "WORKER_LOST"
    OVERLOADED = "OVERLOADED"
    NOT_FOUND = "NOT_FOUND"
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


class OverloadedError(WebAccelError):
    code = ErrorCode.OVERLOADED


class NotFoundError(WebAccelError):
    code = ErrorCode.NOT_FOUND


class InternalError(WebAccelError):
    code = ErrorCode.INTERNAL


_BY_CODE: dict[str, type[WebAccelError]] = {
    ErrorCode.BAD_REQUEST: BadRequestError,
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
