"""Where the pool puts concurrent generation streams (generate.mjs batches a page's
streams of one model into one decode step).

By default streams spread over the workers holding the model (least loaded),
each page batching its share; a worker that does not hold it is used only once
the holders' session slots are full, so a first burst batches on one page.
``pack_streams`` makes a stream join the busiest page's batch instead.
ResourcePool's docstring has the measurements behind the default.
"""

from __future__ import annotations

from webaccel.pool.state import PoolState

from .helpers import add_worker, model, ref, req


def _state(
    pack: bool = False, model_type: str = "text_generation", holders: tuple[str, ...] = ("w1", "w2")
) -> PoolState:
    s = PoolState()
    s.pack_streams = pack
    s.register_model(model("gen", model_type))
    for wid in ("w1", "w2"):
        add_worker(s, wid)
        if wid in holders:
            s.workers[wid].loaded[ref("gen").key] = 0
    return s


def _place(s: PoolState, n: int) -> list[str]:
    out = []
    for _ in range(n):
        s.submit(req("gen", kind="session"), 0)
        a = s.next_assignment(0)
        assert a is not None
        out.append(a.worker_id)
    return out


def test_streams_spread_over_the_workers_holding_the_model() -> None:
    s = _state()
    assert sorted(_place(s, 4)) == ["w1", "w1", "w2", "w2"]
    assert all(a.kind == "session" for a in s.running.values())


def test_a_first_burst_batches_on_the_only_holder_until_its_slots_are_full() -> None:
    s = _state(holders=("w1",))
    assert _place(s, 4) == ["w1"] * 4  # session_slots (4) of w1
    assert _place(s, 1) == ["w2"]  # overflow: w2 loads the model


def test_pack_streams_joins_the_busiest_page_up_to_its_session_slots() -> None:
    s = _state(pack=True)
    placed = _place(s, 4)
    assert len(set(placed)) == 1
    more = _place(s, 2)  # that page is full: the next ones batch on the other
    assert more[0] == more[1] != placed[0]
    # Only generation streams pack: sessions of other models spread as before.
    s = _state(pack=True, model_type="speech_recognition")
    assert sorted(_place(s, 4)) == ["w1", "w1", "w2", "w2"]
