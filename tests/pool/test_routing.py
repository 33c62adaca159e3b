from __future__ import annotations

import random

from webaccel.pool.routing import (
    Candidate,
    CircuitBreaker,
    Constraints,
    LatencyTable,
    Reason,
    WorkerCaps,
    choose,
    normalize_browser,
    normalize_precision,
    reject_reason,
)
from webaccel.pool.state import PoolState

from .helpers import add_worker, caps, model, req


def test_aliases() -> None:
    assert normalize_browser("chrome") == "chromium"
    assert normalize_browser("msedge") == "edge"
    assert normalize_browser("auto") is None
    assert normalize_precision(16) == "fp16"
    assert normalize_precision("4") == "int4"


def test_caps_from_the_page_report() -> None:
    report = {
        "webgpu": {
            "available": True,
            "software": True,
            "isFallbackAdapter": True,
            "shaderF16": False,
            "features": [],
        },
        "webnn": {"available": False},
    }
    c = WorkerCaps.parse(report)
    assert c.software_webgpu and not c.shader_f16
    assert c.backends == ("wasm", "webgpu")  # a software adapter goes last
    c2 = WorkerCaps.parse({"webgpu": {"available": True, "features": ["shader-f16"]}})
    assert c2.shader_f16 and not c2.software_webgpu
    assert c2.backends == ("webgpu", "wasm")


def test_capability_filter() -> None:
    none = Constraints()
    assert reject_reason(caps("wasm"), "chromium", "webgpu", "fp32", none)
    assert reject_reason(caps("webgpu", "wasm"), "chromium", "webgpu", "fp16", none)  # no f16
    assert (
        reject_reason(caps("webgpu", "wasm", f16=True), "chromium", "webgpu", "fp16", none) is None
    )
    assert reject_reason(caps("wasm"), "chromium", "wasm", "fp16", none)
    # A software adapter is not a GPU -- not even when webgpu comes first in the
    # caller's list -- unless the caller allows it explicitly.
    sw = caps("wasm", "webgpu", software=True)
    r = reject_reason(sw, "chromium", "webgpu", "fp32", none)
    assert r is not None and r.code is Reason.SOFTWARE_ADAPTER
    first = Constraints(backends=("webgpu", "wasm"))
    assert reject_reason(sw, "chromium", "webgpu", "fp32", first) is not None
    forced = Constraints(backends=("webgpu",), allow_software=True)
    assert reject_reason(sw, "chromium", "webgpu", "fp32", forced) is None


def test_latency_table_needs_samples_and_smooths() -> None:
    t = LatencyTable(alpha=0.5, min_samples=2)
    k = ("m", "chromium", "wasm", "fp32")
    t.observe(k, 10)
    assert t.get(k) is None
    t.observe(k, 20)
    assert t.get(k) == (15.0, 2)
    assert t.best_for("m") == 15.0


def test_breaker_opens_and_half_opens() -> None:
    b = CircuitBreaker(threshold=2, cooldown=5)
    assert not b.failure("m", "webgpu", 0)
    assert b.failure("m", "webgpu", 1)
    assert b.is_open("m", "webgpu", 3)
    assert not b.is_open("m", "webgpu", 6.5)


def test_pow2_prefers_less_loaded_among_ties() -> None:
    cands = [Candidate(f"w{i}", "chromium", None, False, 10.0, load=i, why="") for i in range(5)]
    rng = random.Random(1)
    picks = {choose(cands, rng, 0.1).worker_id for _ in range(50)}
    assert "w4" not in picks  # the most loaded never wins a pair
    assert choose(cands[:2], rng, 0.1).worker_id == "w0"


def test_affinity_beats_estimate() -> None:
    a = Candidate("a", "chromium", None, True, 50.0, 0, "")
    b = Candidate("b", "chromium", None, False, 5.0, 0, "")
    assert choose([a, b], random.Random(0), 0.1) is a


def _state_with(*workers: tuple[str, str, WorkerCaps]) -> PoolState:
    s = PoolState()
    for wid, browser, c in workers:
        add_worker(s, wid, browser, c)
    return s


def test_model_type_routes_to_preferred_family() -> None:
    s = _state_with(("c", "chromium", caps("wasm")), ("f", "firefox", caps("wasm")))
    s.register_model(model("whisper", "audio"))
    s.register_model(model("vit", "vision"))
    s.submit(req("whisper"), 0)
    a = s.next_assignment(0)
    assert a is not None and a.worker_id == "f"
    s.submit(req("vit"), 0)
    b = s.next_assignment(0)
    assert b is not None and b.worker_id == "c"


def test_text_embedding_prefers_a_webnn_worker_when_one_exists() -> None:
    s = _state_with(("c", "chromium", caps("wasm")), ("e", "chromium", caps("webnn", "wasm")))
    s.register_model(model("minilm", "text_embedding", (("webnn", "fp32"), ("wasm", "fp32"))))
    s.submit(req("minilm"), 0)
    a = s.next_assignment(0)
    assert a is not None and a.worker_id == "e" and a.variant is not None
    assert a.variant.backend == "webnn"


def test_fallback_reason_is_recorded_when_preferred_family_is_busy() -> None:
    s = _state_with(("f", "firefox", caps("wasm")), ("c", "chromium", caps("wasm")))
    s.register_model(model("whisper", "audio"))
    s.submit(req("whisper"), 0)
    s.submit(req("whisper"), 0)
    first = s.next_assignment(0)
    second = s.next_assignment(0)
    assert first is not None and first.worker_id == "f"
    assert second is not None and second.worker_id == "c"
    assert any("fallback from firefox" in r and "busy" in r for r in second.reasons)
    assert s.explain("whisper")["last_decision"] == list(second.reasons)


def test_fp16_only_where_shader_f16() -> None:
    s = _state_with(
        ("gpu", "chromium", caps("webgpu", "wasm")),
        ("gpu16", "chromium", caps("webgpu", "wasm", f16=True)),
    )
    s.register_model(model("m", "vision", (("webgpu", "fp16"),)))
    s.submit(req("m", precision="fp16"), 0)
    s.submit(req("m", precision="fp16"), 0)
    a = s.next_assignment(0)
    assert a is not None and a.worker_id == "gpu16"
    assert s.next_assignment(0) is None  # the other has no shader-f16: it waits instead


def test_software_webgpu_is_not_chosen_automatically() -> None:
    s = _state_with(("sw", "chromium", caps("wasm", "webgpu", software=True)))
    s.register_model(model("m", "vision", (("webgpu", "fp32"), ("wasm", "fp32"))))
    s.submit(req("m"), 0)
    a = s.next_assignment(0)
    assert a is not None and a.variant is not None and a.variant.backend == "wasm"
    assert any("software" in r for r in a.reasons)
    assert [r.code for r in a.fallback][:1] == [Reason.SOFTWARE_ADAPTER]
    s.finish(a.id, 0)
    s.submit(req("m", backend="webgpu"), 0)  # demanded, not allowed: nothing can serve
    assert s.next_assignment(0) is None
    assert s.unservable(0, [])
    s.submit(req("m", backend="webgpu", allow_software=True), 0)
    b = s.next_assignment(0)
    assert b is not None and b.variant is not None and b.variant.backend == "webgpu"


def test_measured_latency_overrides_the_static_default() -> None:
    s = _state_with(("f", "firefox", caps("wasm")), ("c", "chromium", caps("wasm")))
    s.register_model(model("whisper", "audio"))
    for _ in range(5):  # firefox (the default for audio) measured slow, chromium fast
        s.latency.observe(("whisper", "firefox", "wasm", "fp32"), 100.0)
        s.latency.observe(("whisper", "chromium", "wasm", "fp32"), 10.0)
    s.submit(req("whisper"), 0)
    a = s.next_assignment(0)
    assert a is not None and a.worker_id == "c"
    assert "measured" in a.reasons[0]


def test_affinity_avoids_reloading() -> None:
    s = _state_with(("a", "chromium", caps("wasm")), ("b", "chromium", caps("wasm")))
    s.register_model(model("m"))
    s.submit(req("m"), 0)
    first = s.next_assignment(0)
    assert first is not None and first.load
    s.finish(first.id, 1)
    for _ in range(5):
        s.submit(req("m"), 2)
        a = s.next_assignment(2)
        assert a is not None and a.worker_id == first.worker_id and not a.load
        s.finish(a.id, 2)


def test_lru_eviction_under_a_memory_budget() -> None:
    s = _state_with(("w", "chromium", caps("wasm", budget=250)))
    for name in ("a", "b", "c"):
        s.register_model(model(name, size=100))
    for name in ("a", "b", "c"):
        s.submit(req(name), 0)
        x = s.next_assignment(0)
        assert x is not None
        s.finish(x.id, 0)
        if name == "c":
            assert x.evict == ("a:wasm:fp32",)
    assert list(s.workers["w"].loaded) == ["b:wasm:fp32", "c:wasm:fp32"]


def test_circuit_breaker_routes_away_from_a_failing_backend() -> None:
    from webaccel.errors import LoadFailedError

    s = PoolState(max_retries=10)
    s.breaker.threshold = 2
    add_worker(s, "g", "chromium", caps("webgpu", "wasm"))
    s.register_model(model("m", "vision", (("webgpu", "fp32"), ("wasm", "fp32"))))
    s.submit(req("m"), 0)
    for _ in range(2):
        a = s.next_assignment(0)
        assert a is not None and a.variant is not None and a.variant.backend == "webgpu"
        s.fail(a.id, 0, LoadFailedError("shader compile failed"))
    a = s.next_assignment(0)
    assert a is not None and a.variant is not None and a.variant.backend == "wasm"
    assert a.requests[0].attempts == 3
    assert any("circuit open" in r for r in a.reasons)


def test_new_models_are_placed_on_the_emptiest_free_worker() -> None:
    from webaccel.pool.state import PoolState

    from .helpers import add_worker, model, req

    s = PoolState()
    for name in ("a", "b", "c"):
        s.register_model(model(name))
    for wid in ("w1", "w2", "w3"):
        add_worker(s, wid)
    placed = []
    for name in ("a", "b", "c"):
        s.submit(req(name), 0)
        a = s.next_assignment(0)
        assert a is not None and a.load
        placed.append(a.worker_id)
        s.finish(a.id, 0)
    assert sorted(placed) == ["w1", "w2", "w3"]  # one model per worker, not two on one
