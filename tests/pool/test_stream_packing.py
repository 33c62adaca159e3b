"""Generation streams join the page already decoding their model (its batch).

generate.mjs batches a page's concurrent streams of one model into one decode
step, so the pool places a stream on the worker running the most streams of
that variant (while it has a session slot) instead of spreading by load;
``pack_streams=False`` spreads them.  ResourcePool's docstring has the numbers.
"""

from __future__ import annotations

from webaccel.pool.state import PoolState

from .helpers import add_worker, model, ref, req


def _state(pack: bool = True, model_type: str = "text_generation") -> PoolState:
    s = PoolState()
    s.pack_streams = pack
    s.register_model(model("gen", model_type))
    for wid in ("w1", "w2"):
        add_worker(s, wid)
        s.workers[wid].loaded[ref("gen").key] = 0  # both hold the model
    return s


def _place(s: PoolState, n: int) -> list[str]:
    out = []
    for _ in range(n):
        s.submit(req("gen", kind="session"), 0)
        a = s.next_assignment(0)
        assert a is not None
        out.append(a.worker_id)
    return out


def test_streams_of_one_model_pack_onto_one_page_up_to_its_session_slots() -> None:
    s = _state()
    placed = _place(s, 4)
    assert len(set(placed)) == 1
    assert all(a.kind == "session" for a in s.running.values())
    # The page's session slots (4) are full: the next stream goes to the other worker,
    # and the one after joins that one's batch.
    more = _place(s, 2)
    assert more[0] == more[1] != placed[0]


def test_spread_when_packing_is_off_or_not_a_generation_model() -> None:
    for s in (_state(pack=False), _state(model_type="speech_recognition")):
        placed = _place(s, 4)
        assert sorted(placed) == ["w1", "w1", "w2", "w2"]
