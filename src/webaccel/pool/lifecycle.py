"""Worker lifecycle: every state and every allowed transition, in one table.

Rules for this file (after h11's ``_state.py``):

* The table below is the whole truth.  The pool, the bridge and the docs read
  it; nobody moves a worker between states any other way than
  :func:`transition`.
* An event that has no entry for the current state is a bug in the caller
  (the pool misused its own bookkeeping), so it raises
  :class:`IllegalTransition` instead of being ignored.
* ``LOST`` and ``CLOSED`` are terminal.  ``LOST`` means the worker went away
  on its own (browser exited, missed heartbeats, hung): its in-flight requests
  are retried elsewhere and a replacement may be launched.  ``CLOSED`` means we
  retired it on purpose after it drained: nothing to retry.

A worker is ``BUSY`` while at least one assignment (a request, a batch or a
lease) runs on it; ``release_last`` is the release of the last one.
"""

from __future__ import annotations

from enum import StrEnum

from webaccel.errors import InternalError


class WorkerState(StrEnum):
    LAUNCHING = "launching"  # launcher called, page has not said hello yet
    READY = "ready"  # idle, accepts work
    BUSY = "busy"  # runs >= 1 assignment; accepts more only while it has free slots
    DRAINING = "draining"  # finishes what it runs, accepts nothing new, then closes
    LOST = "lost"  # gone on its own (terminal)
    CLOSED = "closed"  # retired by us (terminal)


class WorkerEvent(StrEnum):
    LAUNCHED = "launched"  # hello received
    ASSIGN = "assign"  # an assignment started on it
    RELEASE = "release"  # an assignment ended, others still run
    RELEASE_LAST = "release_last"  # the last running assignment ended
    DRAIN = "drain"  # retire it once idle
    CLOSED = "closed"  # drained (or never needed) and closed
    LOST = "lost"  # browser exited / missed heartbeats / hung / launch failed


S, E = WorkerState, WorkerEvent

TRANSITIONS: dict[WorkerState, dict[WorkerEvent, WorkerState]] = {
    S.LAUNCHING: {
        E.LAUNCHED: S.READY,
        E.LOST: S.LOST,  # launch failed or browser died before hello
        E.CLOSED: S.CLOSED,  # pool closed while the browser was starting
    },
    S.READY: {
        E.ASSIGN: S.BUSY,
        E.DRAIN: S.DRAINING,
        E.LOST: S.LOST,
    },
    S.BUSY: {
        E.ASSIGN: S.BUSY,  # a worker with several slots
        E.RELEASE: S.BUSY,
        E.RELEASE_LAST: S.READY,
        E.DRAIN: S.DRAINING,
        E.LOST: S.LOST,
    },
    S.DRAINING: {
        E.RELEASE: S.DRAINING,
        E.RELEASE_LAST: S.DRAINING,  # the pool then closes it: CLOSED
        E.CLOSED: S.CLOSED,
        E.LOST: S.LOST,
    },
    S.LOST: {},
    S.CLOSED: {},
}

# Derived views, so callers never re-spell these sets.
ACCEPTS_WORK = frozenset({S.READY, S.BUSY})  # may receive a new assignment (slots permitting)
ALIVE = frozenset({S.LAUNCHING, S.READY, S.BUSY, S.DRAINING})  # counts toward pool size
TERMINAL = frozenset(s for s, row in TRANSITIONS.items() if not row)

del S, E


class IllegalTransition(InternalError):
    """The pool asked for a transition the table does not allow (a bug, not a peer fault)."""


def transition(state: WorkerState, event: WorkerEvent) -> WorkerState:
    """The state after ``event`` in ``state``; raises :class:`IllegalTransition` if not allowed."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        allowed = ", ".join(TRANSITIONS.get(state, {})) or "none (terminal)"
        raise IllegalTransition(
            f"worker in state {state.value!r} cannot take event {event.value!r}; "
            f"allowed: {allowed}",
            details={"state": state.value, "event": event.value},
        ) from None
