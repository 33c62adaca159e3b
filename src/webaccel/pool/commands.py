"""The messages the pool's handle and its I/O tasks post to the actor.

Each is a frozen dataclass (TGI sends typed commands to its queue task): the
actor matches on the type, so a new command cannot be half-handled by a
misspelled string, and mypy checks every field.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from webaccel.errors import WebAccelError
from webaccel.pool.transport import LoadInfo, RunResult, WorkerTransport

if TYPE_CHECKING:
    from webaccel.pool.pool import _Ticket


@dataclass(frozen=True)
class Submit:
    ticket: _Ticket


@dataclass(frozen=True)
class Cancel:
    request_id: int


@dataclass(frozen=True)
class Done:
    """A run assignment finished: the result, its rows per request, the load it needed."""

    assignment_id: int
    result: RunResult
    parts: list[Any]
    load: LoadInfo | None


@dataclass(frozen=True)
class Failed:
    assignment_id: int
    error: WebAccelError


@dataclass(frozen=True)
class Opened:
    """A session's model is loaded on its worker: hand the session to its caller."""

    assignment_id: int
    load: LoadInfo | None


@dataclass(frozen=True)
class Release:
    """A lease or a session ended (``error``: why, when it ended badly)."""

    assignment_id: int
    error: WebAccelError | None = None


@dataclass(frozen=True)
class Launched:
    placeholder: str
    worker: WorkerTransport


@dataclass(frozen=True)
class LaunchFailed:
    placeholder: str
    error: WebAccelError


@dataclass(frozen=True)
class Adopt:
    worker: WorkerTransport


@dataclass(frozen=True)
class Lost:
    worker_id: str
    reason: str


@dataclass(frozen=True)
class MemorySampled:
    """The heartbeat task measured the workers' memory: worker id -> RSS bytes of its
    local browser process tree (None: nothing local to measure)."""

    samples: dict[str, int | None]


@dataclass(frozen=True)
class Tick:
    """Nothing happened; just look at the clock and the queues again."""


@dataclass(frozen=True)
class Close:
    done: asyncio.Future[None]


Command = (
    Submit
    | Cancel
    | Done
    | Failed
    | Opened
    | Release
    | Launched
    | LaunchFailed
    | Adopt
    | Lost
    | MemorySampled
    | Tick
    | Close
)
