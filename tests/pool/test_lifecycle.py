from __future__ import annotations

import pytest

from webaccel.errors import InternalError
from webaccel.pool.lifecycle import (
    ACCEPTS_WORK,
    ALIVE,
    TERMINAL,
    TRANSITIONS,
    IllegalTransition,
    WorkerEvent,
    WorkerState,
    transition,
)


def test_every_state_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(WorkerState)


def test_the_five_states_of_the_design_exist() -> None:
    names = {s.value for s in WorkerState}
    assert {"launching", "ready", "busy", "draining", "lost"} <= names


def test_every_target_is_a_state_and_every_event_is_used() -> None:
    used = set()
    for row in TRANSITIONS.values():
        for event, target in row.items():
            assert target in WorkerState
            used.add(event)
    assert used == set(WorkerEvent)


def test_terminal_states_are_lost_and_closed() -> None:
    assert {WorkerState.LOST, WorkerState.CLOSED} == TERMINAL


def test_every_live_state_can_be_lost() -> None:
    for state in ALIVE:
        assert transition(state, WorkerEvent.LOST) is WorkerState.LOST


def test_only_ready_and_busy_accept_work() -> None:
    assert {WorkerState.READY, WorkerState.BUSY} == ACCEPTS_WORK
    for state in WorkerState:
        assert (WorkerEvent.ASSIGN in TRANSITIONS[state]) == (state in ACCEPTS_WORK)


@pytest.mark.parametrize("state", list(WorkerState))
@pytest.mark.parametrize("event", list(WorkerEvent))
def test_illegal_transitions_raise(state: WorkerState, event: WorkerEvent) -> None:
    if event in TRANSITIONS[state]:
        assert transition(state, event) is TRANSITIONS[state][event]
    else:
        with pytest.raises(IllegalTransition) as info:
            transition(state, event)
        assert isinstance(info.value, InternalError)
        assert state.value in info.value.message


def test_a_typical_life() -> None:
    s = WorkerState.LAUNCHING
    for ev in (
        WorkerEvent.LAUNCHED,
        WorkerEvent.ASSIGN,
        WorkerEvent.ASSIGN,
        WorkerEvent.RELEASE,
        WorkerEvent.RELEASE_LAST,
        WorkerEvent.DRAIN,
        WorkerEvent.CLOSED,
    ):
        s = transition(s, ev)
    assert s is WorkerState.CLOSED
