"""A session that must avoid workers (a pipeline's other stages) goes elsewhere or waits."""

from __future__ import annotations

import dataclasses

from tests.pool.helpers import add_worker, model, req

from webaccel.pool.state import PoolState


def test_a_session_avoids_the_workers_it_is_told_to():
    s = PoolState()
    s.register_model(model("m"))
    add_worker(s, "w1", slots=4)
    add_worker(s, "w2", slots=4)
    first = dataclasses.replace(req("m", kind="session"), avoid=frozenset({"w1"}))
    s.submit(first, 0.0)
    a = s.next_assignment(0.0)
    assert a is not None and a.worker_id == "w2"
    both = dataclasses.replace(req("m", kind="session"), avoid=frozenset({"w1", "w2"}))
    s.submit(both, 0.0)
    assert s.next_assignment(0.0) is None  # waits for another worker
    add_worker(s, "w3", slots=4)
    a = s.next_assignment(0.0)
    assert a is not None and a.worker_id == "w3"


def test_explain_says_why_an_avoided_worker_is_out():
    s = PoolState()
    s.register_model(model("m"))
    add_worker(s, "w1", slots=4)
    r = dataclasses.replace(req("m", kind="session"), avoid=frozenset({"w1"}))
    cands, rejected, _ = s._route(r, s.workers.values(), 0.0)
    assert not cands and rejected["w1"].code.value == "avoided"
