from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from webaccel.errors import (
    BackendUnavailableError,
    InvalidInputError,
    ModelNotFoundError,
    OverloadedError,
    TimeoutError_,
    WorkerLostError,
)
from webaccel.pool.lifecycle import WorkerState
from webaccel.pool.routing import reject_reason
from webaccel.pool.state import LEASE, PoolState, Request, ScalingPolicy

from .helpers import add_worker, caps, model, req


def test_overload_is_immediate_and_bounded() -> None:
    s = PoolState(max_pending=3)
    s.register_model(model("m"))
    for _ in range(3):
        s.submit(req("m"), 0)
    with pytest.raises(OverloadedError) as info:
        s.submit(req("m"), 0)
    assert info.value.code == "OVERLOADED"
    assert s.pending == 3


def test_unknown_model_is_refused() -> None:
    with pytest.raises(ModelNotFoundError):
        PoolState().submit(req("nope"), 0)


def test_priorities_then_fifo_within_a_model() -> None:
    s = PoolState()
    s.register_model(model("m"))
    add_worker(s, "w")
    low, high, low2 = req("m", priority=0), req("m", priority=5), req("m", priority=0)
    for r in (low, high, low2):
        s.submit(r, 0)
    order = []
    for _ in range(3):
        a = s.next_assignment(0)
        assert a is not None
        order.append(a.requests[0])
        s.finish(a.id, 0)
    assert order == [high, low, low2]


def test_fair_sharing_between_models_of_equal_priority() -> None:
    s = PoolState()
    s.register_model(model("hot"))
    s.register_model(model("cold"))
    add_worker(s, "w")
    for _ in range(10):
        s.submit(req("hot"), 0)
    s.submit(req("cold"), 0)
    served = []
    for _ in range(3):
        a = s.next_assignment(0)
        assert a is not None
        served.append(a.requests[0].model)
        s.finish(a.id, 0)
    assert "cold" in served[:2]


def test_deadlines_fail_with_timeout_before_running() -> None:
    s = PoolState()
    s.register_model(model("m"))
    r = req("m", deadline=1.0)
    s.submit(r, 0)
    assert s.next_wakeup(0) is not None and s.next_wakeup(0) <= 1.0
    add_worker(s, "w", now=2.0)
    assert s.next_assignment(2.0) is None  # never runs an expired request
    gone = s.expire(2.0)
    assert [g[0] for g in gone] == [r] and isinstance(gone[0][1], TimeoutError_)
    assert s.pending == 0


def test_lost_worker_requeues_at_front_then_fails_after_max_retries() -> None:
    s = PoolState(max_retries=2)
    s.register_model(model("m"))
    first = req("m")
    other = req("m")
    s.submit(first, 0)
    s.submit(other, 0)
    for attempt in range(3):
        add_worker(s, f"w{attempt}")
        a = s.next_assignment(0)
        assert a is not None and a.requests == (first,)  # a retry goes first
        out = s.worker_lost(f"w{attempt}", 0)
        if attempt < 2:
            assert out.retried == [first] and first.retries == attempt + 1
        else:
            assert out.failed and out.failed[0][0] is first
            err = out.failed[0][1]
            assert isinstance(err, WorkerLostError) and err.details["attempts"] == 3
    assert s.pending == 1 and s.queues["m"] == [other]


def test_cancel_frees_the_slot() -> None:
    s = PoolState(max_pending=1)
    s.register_model(model("m"))
    r = req("m")
    s.submit(r, 0)
    assert s.cancel(r.id) is r
    s.submit(req("m"), 0)  # room again
    assert s.cancel(12345) is None


def test_batching_merges_same_model_and_shape_up_to_max() -> None:
    s = PoolState()
    s.register_model(model("m", max_batch=4, max_wait=0.010))
    add_worker(s, "w")
    rs = [req("m", batch_key="k", rows=1) for _ in range(3)]
    odd = req("m", batch_key="other", rows=1)
    for r in rs:
        s.submit(r, 0)
    s.submit(odd, 0)
    # The three wait for company (3 < 4 rows); the odd shape is alone and goes.
    b = s.next_assignment(0.001)
    assert b is not None and b.requests == (odd,)
    s.finish(b.id, 0.002)
    assert s.next_assignment(0.005) is None  # still inside the window
    a = s.next_assignment(0.011)
    assert a is not None and set(a.requests) == set(rs) and a.rows == 3


def test_a_lone_request_does_not_wait_for_company_but_one_behind_a_running_batch_does() -> None:
    s = PoolState()
    s.register_model(model("m", max_batch=4, max_wait=10.0))
    add_worker(s, "w", slots=2)
    first = req("m", batch_key="k", rows=1)
    s.submit(first, 0)
    a = s.next_assignment(0)  # nothing else of "m" runs or waits: no window
    assert a is not None and a.requests == (first,)
    second = req("m", batch_key="k", rows=1)
    s.submit(second, 0.001)
    assert s.next_assignment(0.002) is None  # "m" is running: company is likely
    b = s.next_assignment(10.002)
    assert b is not None and b.requests == (second,)


def test_full_batch_goes_at_once_and_respects_max_rows() -> None:
    s = PoolState()
    s.register_model(model("m", max_batch=4, max_wait=10.0))
    add_worker(s, "w")
    rs = [req("m", batch_key="k", rows=2) for _ in range(3)]
    for r in rs:
        s.submit(r, 0)
    a = s.next_assignment(0)
    assert a is not None and a.rows == 4 and a.requests == tuple(rs[:2])


def test_unservable_requests_fail_with_backend_unavailable() -> None:
    s = PoolState(scaling=ScalingPolicy(max_workers=2))
    s.register_model(model("m", variants=(("wasm", "fp32"),)))
    add_worker(s, "w", "chromium")
    r = req("m", browser="firefox")
    s.submit(r, 0)
    assert s.unservable(0, ["chromium", "firefox"]) == []  # firefox could be launched
    out = s.unservable(0, ["chromium"])  # no firefox to launch: fail now, not at the deadline
    assert [o[0] for o in out] == [r] and isinstance(out[0][1], BackendUnavailableError)


def test_leases_take_a_whole_worker() -> None:
    s = PoolState()
    s.register_model(model("m"))
    add_worker(s, "w", c=caps("webgpu", "wasm"))
    lease = Request(id=999, model=LEASE, model_type="vision")
    s.submit(lease, 0)
    a = s.next_assignment(0)
    assert a is not None and a.variant is None and a.worker_id == "w"
    s.submit(req("m"), 0)
    assert s.next_assignment(0) is None  # the worker is held
    s.finish(a.id, 1)
    assert s.next_assignment(1) is not None


# ----------------------------------------------------------------- scaling
def test_scale_up_on_queue_depth_and_floor() -> None:
    s = PoolState(scaling=ScalingPolicy(min_workers=1, max_workers=4, queue_per_worker=2))
    s.register_model(model("m"))
    assert s.scaling_plan(0, ["chromium"]).launch == ("chromium",)  # the floor
    add_worker(s, "w")
    for _ in range(7):
        s.submit(req("m"), 0)
    plan = s.scaling_plan(0, ["chromium"])
    assert len(plan.launch) == 3  # ceil(7/2)=4 workers wanted, 1 present


def test_scale_up_on_queue_wait() -> None:
    s = PoolState(
        scaling=ScalingPolicy(min_workers=1, max_workers=2, queue_per_worker=10, max_queue_wait=0.5)
    )
    s.register_model(model("m"))
    add_worker(s, "w")
    s.submit(req("m"), 0)
    assert s.scaling_plan(0.1, ["chromium"]).launch == ()
    assert s.scaling_plan(0.6, ["chromium"]).launch == ("chromium",)


def test_waiting_for_a_starting_worker_is_no_reason_to_start_another() -> None:
    s = PoolState(
        scaling=ScalingPolicy(min_workers=1, max_workers=2, queue_per_worker=10, max_queue_wait=0.5)
    )
    s.register_model(model("m"))
    s.submit(req("m"), 0)  # queued while the first browser starts (1.2 s here)
    s.add_launching("w", "chromium", 0)
    s.worker_ready("w", "chromium", caps("wasm"), 1.2)
    assert s.scaling_plan(1.2, ["chromium"]).launch == ()
    assert s.next_wakeup(1.2) == pytest.approx(1.7)  # the wait counts from the arrival
    assert s.scaling_plan(1.8, ["chromium"]).launch == ("chromium",)


def test_scale_down_when_idle_never_below_floor() -> None:
    s = PoolState(scaling=ScalingPolicy(min_workers=1, max_workers=4, idle_timeout=5))
    for w in ("a", "b", "c"):
        add_worker(s, w, now=0)
    assert s.scaling_plan(1, ["chromium"]).drain == ()
    plan = s.scaling_plan(10, ["chromium"])
    assert len(plan.drain) == 2
    for w in plan.drain:
        assert s.drain(w)  # idle: close at once
        s.worker_closed(w)
    assert [w.state for w in s.workers.values()] == [WorkerState.READY]


def test_launch_family_follows_the_queue_and_backs_off_failures() -> None:
    s = PoolState(
        scaling=ScalingPolicy(min_workers=0, max_workers=2, queue_per_worker=1, launch_backoff=5)
    )
    s.register_model(model("whisper", "audio"))
    s.submit(req("whisper"), 0)
    plan = s.scaling_plan(0, ["chromium", "firefox"])
    assert plan.launch == ("firefox",)
    s.add_launching("L1", "firefox", 0)
    s.launch_failed("L1", 0)
    assert s.scaling_plan(1, ["chromium", "firefox"]).launch == ("chromium",)


def test_invalid_input_type_is_bad_request() -> None:
    assert issubclass(InvalidInputError, ValueError)


# ------------------------------------------------------ property: invariants
MODELS = {
    "a": model("a", "audio", (("wasm", "fp32"),)),
    "v": model("v", "vision", (("webgpu", "fp32"), ("wasm", "fp32"))),
    "h": model("h", "vision", (("webgpu", "fp16"),)),
}
WORKER_KINDS = [
    ("chromium", caps("webgpu", "wasm")),
    ("chromium", caps("webgpu", "wasm", f16=True)),
    ("chromium", caps("wasm", "webgpu", software=True)),
    ("firefox", caps("wasm")),
]


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = PoolState(max_pending=12, max_retries=2, seed=1)
        for m in MODELS.values():
            self.s.register_model(m)
        self.now = 0.0
        self.submitted: set[int] = set()
        self.finished: dict[int, str] = {}  # id -> how (done/failed/expired/cancelled)
        self.next_id = 1
        self.nworkers = 0

    def _finish(self, rid: int, how: str) -> None:
        assert rid in self.submitted
        assert rid not in self.finished, f"request {rid} answered twice"
        self.finished[rid] = how

    @rule(kind=st.integers(0, len(WORKER_KINDS) - 1))
    def add_worker(self, kind: int) -> None:
        self.nworkers += 1
        browser, c = WORKER_KINDS[kind]
        add_worker(self.s, f"w{self.nworkers}", browser, c, self.now)

    @rule(
        m=st.sampled_from(sorted(MODELS)),
        prio=st.integers(0, 3),
        browser=st.sampled_from([None, None, "chromium", "firefox"]),
        backend=st.sampled_from([None, None, "webgpu", "wasm"]),
        ttl=st.one_of(st.none(), st.floats(0.5, 5)),
    )
    def submit(
        self, m: str, prio: int, browser: str | None, backend: str | None, ttl: float | None
    ) -> None:
        r = req(
            m,
            priority=prio,
            browser=browser,
            backend=backend,
            deadline=None if ttl is None else self.now + ttl,
            rid=self.next_id,
        )
        self.next_id += 1
        before = self.s.pending
        try:
            self.s.submit(r, self.now)
        except OverloadedError:
            assert before >= self.s.max_pending
            return
        self.submitted.add(r.id)

    @rule()
    def assign(self) -> None:
        while (a := self.s.next_assignment(self.now)) is not None:
            rec = self.s.workers[a.worker_id]
            assert rec.caps is not None and a.variant is not None
            for r in a.requests:  # never an incapable worker
                assert (
                    reject_reason(
                        rec.caps, rec.browser, a.variant.backend, a.variant.precision, r.constraints
                    )
                    is None
                )
                assert r.deadline is None or r.deadline > self.now
            top = max(r.priority for r in a.requests)
            for q in self.s.queues.values():  # nothing more urgent could have used it
                for other in q:
                    if other.deadline is not None and other.deadline <= self.now:
                        continue
                    if self.s._could_serve(other, rec):
                        assert other.priority <= top, (other, a)

    @rule(data=st.data())
    @precondition(lambda self: bool(self.s.running))
    def finish(self, data: st.DataObject) -> None:
        aid = data.draw(st.sampled_from(sorted(self.s.running)))
        for r in self.s.finish(aid, self.now, ms=5.0).done:
            self._finish(r.id, "done")

    @rule(data=st.data())
    @precondition(lambda self: bool(self.s.workers))
    def lose_worker(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(self.s.workers)))
        out = self.s.worker_lost(wid, self.now)
        for r, err in out.failed:
            assert err.code in ("WORKER_LOST", "TIMEOUT")
            self._finish(r.id, "failed")

    @rule(dt=st.floats(0.01, 2))
    def tick(self, dt: float) -> None:
        self.now += dt
        for r, err in self.s.expire(self.now):
            assert isinstance(err, TimeoutError_)
            self._finish(r.id, "expired")

    @rule(data=st.data())
    @precondition(lambda self: self.s.queued > 0)
    def cancel(self, data: st.DataObject) -> None:
        ids = sorted(r.id for q in self.s.queues.values() for r in q)
        rid = data.draw(st.sampled_from(ids))
        assert self.s.cancel(rid) is not None
        self._finish(rid, "cancelled")

    @invariant()
    def nothing_lost_or_duplicated(self) -> None:
        queued = [r.id for q in self.s.queues.values() for r in q]
        running = [r.id for a in self.s.running.values() for r in a.requests]
        assert len(queued) == len(set(queued))
        assert len(running) == len(set(running))
        assert not set(queued) & set(running)
        live = set(queued) | set(running)
        assert not live & set(self.finished)
        assert live | set(self.finished) == self.submitted
        assert self.s.pending == len(live)

    @invariant()
    def capacity_bound(self) -> None:
        assert self.s.pending <= self.s.max_pending
        for w in self.s.workers.values():
            assert len(w.running) <= w.slots
            assert (w.state is WorkerState.BUSY) == bool(w.running)


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_waits_for_the_loaded_worker_when_loading_costs_more() -> None:
    """A free worker without the model does not load it (seconds) to save a short wait."""
    s = PoolState()
    s.register_model(model("m"))
    add_worker(s, "w1")
    first = req("m")
    s.submit(first, 0)
    a = s.next_assignment(0)
    assert a is not None and a.worker_id == "w1" and a.load
    s.finish(a.id, 0, ms=50.0, load_ms=5000.0)  # measured: 50 ms runs, 5 s loads
    busy = s.next_assignment(0) if s.submit(req("m"), 0) is None else None
    assert busy is not None and busy.worker_id == "w1" and not busy.load
    add_worker(s, "w2")  # idle, model not loaded
    s.submit(req("m"), 0)
    assert s.next_assignment(0) is None  # cheaper to wait ~50 ms for w1 than load 5 s on w2
    s.finish(busy.id, 0, ms=50.0)
    nxt = s.next_assignment(0)
    assert nxt is not None and nxt.worker_id == "w1"


def test_a_long_queue_spreads_the_model_to_idle_workers() -> None:
    s = PoolState()
    s.register_model(model("m"))
    add_worker(s, "w1")
    s.submit(req("m"), 0)
    a = s.next_assignment(0)
    s.finish(a.id, 0, ms=50.0, load_ms=1000.0)
    s.submit(req("m"), 0)
    busy = s.next_assignment(0)
    assert busy is not None and busy.worker_id == "w1"
    add_worker(s, "w2")
    for _ in range(40):  # 40 x 50 ms queued ahead > a 1 s load
        s.submit(req("m"), 0)
    spread = s.next_assignment(0)
    assert spread is not None and spread.worker_id == "w2" and spread.load


def test_a_callers_backlog_spreads_the_model_like_a_long_queue() -> None:
    """One queued micro-batch of a long paced list: its backlog (what the caller holds
    back) is demand too, so an idle worker loads the model instead of idling."""
    s = PoolState()
    s.register_model(model("m"))
    add_worker(s, "w1")
    s.submit(req("m"), 0)
    a = s.next_assignment(0)
    s.finish(a.id, 0, ms=50.0, load_ms=1000.0)
    s.submit(req("m"), 0)
    busy = s.next_assignment(0)
    assert busy is not None and busy.worker_id == "w1"
    add_worker(s, "w2")
    s.submit(req("m"), 0)
    assert s.next_assignment(0) is None  # one 50 ms request ahead: wait for w1
    s.submit(_with_backlog(req("m"), 40), 0)
    spread = s.next_assignment(0)
    assert spread is not None and spread.worker_id == "w2" and spread.load


def _with_backlog(r: Request, n: int) -> Request:
    r.backlog = n
    return r


def test_scaling_counts_a_callers_backlog_as_demand() -> None:
    s = PoolState(scaling=ScalingPolicy(min_workers=1, max_workers=4))
    s.register_model(model("m"))
    add_worker(s, "w1")
    s.submit(req("m"), 0)
    s.next_assignment(0)
    s.submit(req("m"), 0)
    quiet = s.scaling_plan(0.0, ["chromium"])
    s.submit(_with_backlog(req("m"), 60), 0)
    busy = s.scaling_plan(0.0, ["chromium"])
    assert len(busy.launch) > len(quiet.launch)


def test_run_depth_follows_the_measured_round_trip_and_bounds_runs_in_flight() -> None:
    from webaccel.pool.state import MAX_RUN_DEPTH

    s = PoolState(adaptive_depth=True)
    s.register_model(model("tiny"))
    s.register_model(model("big"))
    add_worker(s, "w", slots=2)
    assert s.run_depth("tiny") == 0  # nothing measured yet: the worker's slots

    def one(name: str, rt: float, page: float) -> None:
        for _ in range(2):  # the first run loads the model: not a round trip's measure
            s.submit(req(name), 0)
            a = s.next_assignment(0)
            assert a is not None and a.alone
            s.finish(a.id, 0, ms=rt, page_ms=page)

    one("big", rt=23.0, page=20.0)  # 3 ms of bridge next to 20 ms of work
    assert s.run_depth("big") == 2
    one("tiny", rt=1.5, page=0.05)  # the bridge is 30x the work
    assert s.run_depth("tiny") == MAX_RUN_DEPTH
    tiny = [req("tiny") for _ in range(MAX_RUN_DEPTH + 2)]
    for r in tiny:
        s.submit(r, 0)
    started = []
    while (a := s.next_assignment(0)) is not None:
        started.append(a)
    assert len(started) == MAX_RUN_DEPTH  # the bound holds
    assert not any(a.alone for a in started[1:])  # pipelined runs do not feed the estimate
    s.finish(started[0].id, 0, ms=50.0, page_ms=0.05)
    assert s.run_depth("tiny") == MAX_RUN_DEPTH
    big = req("big")
    s.submit(big, 0)
    assert s.next_assignment(0) is not None  # a freed slot: the queued "tiny" goes first
    assert s.next_assignment(0) is None  # "big" may have only 2 in flight; there are 8


def test_without_adaptive_depth_a_worker_holds_its_slots() -> None:
    s = PoolState()
    s.register_model(model("tiny"))
    add_worker(s, "w", slots=2)
    for _ in range(2):
        s.submit(req("tiny"), 0)
        a = s.next_assignment(0)
        assert a is not None
        s.finish(a.id, 0, ms=1.5, page_ms=0.05)
    for _ in range(4):
        s.submit(req("tiny"), 0)
    assert s.next_assignment(0) is not None and s.next_assignment(0) is not None
    assert s.next_assignment(0) is None
