"""Checked workers: a worker that lies after it was admitted is quarantined, and with
``verify="all"`` no wrong answer reaches a client (issue 20, item 4)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from webaccel.pool import ResolvedModel, ResourcePool, StaticResolver
from webaccel.pool.fake import double_first
from webaccel.pool.verify import VerifyPolicy, disagreement

from .helpers import ref


def honest(key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return double_first(key, inputs)


def reference(tensors: dict[str, np.ndarray], precision: str) -> dict[str, np.ndarray]:
    return double_first("reference", tensors)


class Liar:
    """Honest for its first ``honest_for`` answers (so it passes admission), then wrong."""

    def __init__(self, honest_for: int) -> None:
        self.calls = 0
        self.honest_for = honest_for

    def __call__(self, key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        out = double_first(key, inputs)
        if self.calls > self.honest_for:
            out = {"y": out["y"] + np.random.default_rng(self.calls).normal(0, 5, out["y"].shape)}
        return out


def pool_with(liar: Liar, verify: str | VerifyPolicy, *, remote: bool = True) -> ResourcePool:
    """Two workers: the first one launched lies (and, by default, joined from elsewhere),
    every later one is honest."""
    from webaccel.pool import FakeWorker

    model = ResolvedModel("emb", "text_embedding", (ref("emb"),), reference=reference)
    launched: list[FakeWorker] = []

    async def launch(family: str) -> FakeWorker:
        w = FakeWorker(family, compute=liar if not launched else honest)
        w.remote = remote and not launched  # type: ignore[attr-defined]
        launched.append(w)
        return w

    return ResourcePool(
        max_connections=2,
        launcher=launch,
        resolver=StaticResolver({"emb": model}),
        adaptive_scaling=False,
        verify=verify,
        seed=7,
    )


def x(i: int) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 4), float(i), dtype=np.float32)}


async def test_a_liar_is_quarantined_within_100_requests_at_the_default_rate() -> None:
    liar = Liar(honest_for=1)  # passes its admission check, then lies
    async with pool_with(liar, "sample") as pool:
        for i in range(100):  # at 5%, a liar serving half of 100 requests is caught w.p. 92%
            await pool.run_inference("emb", x(i + 1))
            if pool.quarantined:
                break
        assert pool.quarantined, "the liar was not caught within 100 requests"
        (wid, q) = next(iter(pool.quarantined.items()))
        assert "wrongly" in q["reason"] and wid.startswith("fake-chromium")
        assert pool.stats()["counters"]["quarantined"] == 1
        assert wid in (await pool.explain("emb"))["quarantined"]
        # After the quarantine, answers are right again (the honest worker serves).
        r = await pool.run_inference("emb", x(5))
        assert np.allclose(r.outputs["y"], 10) and r.worker_id != wid


async def test_with_verify_all_no_wrong_answer_reaches_the_client() -> None:
    liar = Liar(honest_for=1)
    async with pool_with(liar, "all") as pool:
        for i in range(40):
            r = await pool.run_inference("emb", x(i + 1))
            assert np.allclose(r.outputs["y"], 2 * (i + 1)), r.worker_id
        assert pool.quarantined  # and the liar is out


async def test_admission_catches_a_worker_that_lies_from_the_start() -> None:
    liar = Liar(honest_for=0)
    async with pool_with(liar, "sample", remote=False) as pool:
        for i in range(6):
            r = await pool.run_inference("emb", x(i + 1))
            assert np.allclose(r.outputs["y"], 2 * (i + 1))
        assert len(pool.quarantined) == 1  # admission caught it, before it served anyone


def test_disagreement_rules() -> None:
    a = {"e": np.array([[1.0, 2.0, 3.0]], dtype=np.float32)}
    assert disagreement(a, a, "fp32") is None
    assert disagreement({"e": a["e"] * 1.0001}, a, "fp32") is None
    assert "cosine" in (disagreement({"e": a["e"][:, ::-1].copy()}, a, "fp32") or "")
    assert "norm ratio" in (disagreement({"e": a["e"] * 3}, a, "fp32") or "")
    assert "shape" in (disagreement({"e": a["e"][:, :2]}, a, "fp32") or "")
    assert "missing" in (disagreement({}, a, "fp32") or "")
    ids = {"t": np.array([1, 2, 3])}
    assert "differs" in (disagreement({"t": np.array([1, 2, 4])}, ids, "int4") or "")
    rng = np.random.default_rng(0)
    emb = {"e": rng.normal(size=(1, 384)).astype(np.float32)}
    noisy = {"e": emb["e"] + rng.normal(0, 0.1, size=(1, 384)).astype(np.float32)}  # cos ~0.995
    assert disagreement(noisy, emb, "int4") is None  # within int4's tolerance
    assert disagreement(noisy, emb, "fp32") is not None  # not within fp32's
    with pytest.raises(ValueError):
        VerifyPolicy(mode="most")
    p = VerifyPolicy()
    coin = random.Random(0)
    assert sum(p.check_this(True, coin) for _ in range(10000)) in range(400, 600)
    assert not any(p.check_this(False, coin) for _ in range(1000))
