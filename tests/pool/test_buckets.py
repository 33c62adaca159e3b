"""Static shape buckets: the pure padding rules, and the pool running bucketed captured sessions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from webaccel.pool import ResolvedModel, ResourcePool, StaticResolver
from webaccel.pool.buckets import ShapeBuckets, powers_of_two
from webaccel.pool.fake import FakeLauncher, capabilities_for
from webaccel.pool.transport import ModelRef

DIMS = ("batch", "sequence")
BUCKETS = ShapeBuckets(
    inputs={"ids": DIMS, "mask": DIMS},
    sizes={"batch": powers_of_two(1, 8), "sequence": powers_of_two(16, 64)},
    outputs={"y": DIMS},
    pad_values={"ids": 7},
)


def tokens(batch: int, seq: int) -> dict[str, np.ndarray]:
    ids = np.arange(1, batch * seq + 1, dtype=np.int64).reshape(batch, seq)
    return {"ids": ids, "mask": np.ones_like(ids)}


def test_powers_of_two():
    assert powers_of_two(16, 100) == (16, 32, 64)
    assert powers_of_two(1, 1) == (1,)


def test_fit_pads_to_the_smallest_bucket_batch_with_real_rows_sequence_with_pad_values():
    b = BUCKETS.fit(tokens(3, 20))
    assert b is not None
    assert dict(b.shape) == {"batch": 4, "sequence": 32} and b.label == "4x32"
    assert b.rows == 3 and dict(b.actual) == {"batch": 3, "sequence": 20}
    ids, mask = b.inputs["ids"], b.inputs["mask"]
    assert ids.shape == mask.shape == (4, 32)
    assert (ids[:3, :20] == tokens(3, 20)["ids"]).all()
    assert (ids[:, 20:] == 7).all() and (mask[:, 20:] == 0).all()  # per-input pad values
    assert (ids[3, :20] == ids[0, :20]).all() and mask[3, :20].all()  # a copy of row 0


def test_exact_fit_is_unchanged_and_outputs_are_cut_back():
    f = tokens(2, 16)
    b = BUCKETS.fit(f)
    assert b is not None and b.label == "2x16"
    assert all((b.inputs[k] == f[k]).all() for k in f)
    b = BUCKETS.fit(tokens(3, 20))
    assert b is not None
    out = BUCKETS.unpad({"y": np.zeros((4, 32, 5)), "pooled": np.zeros((4, 5))}, b)
    assert out["y"].shape == (3, 20, 5)  # declared dims
    assert out["pooled"].shape == (3, 5)  # batch axis only


@pytest.mark.parametrize(
    "inputs",
    [
        tokens(9, 16),  # batch over the largest bucket
        tokens(1, 65),  # sequence over the largest bucket
        {"ids": tokens(2, 16)["ids"]},  # an input missing
        {"ids": tokens(2, 16)["ids"], "mask": tokens(2, 20)["mask"]},  # dims disagree
        {"ids": tokens(2, 16)["ids"], "mask": np.ones((2, 16, 1))},  # wrong rank
    ],
)
def test_inputs_that_do_not_fit_run_unbucketed(inputs: dict[str, np.ndarray]):
    assert BUCKETS.fit(inputs) is None


# --------------------------------------------------------------------- the pool
def double_ids(key: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"y": (inputs["ids"] * 2).astype(np.float32)}


def pool_for(build: str, **kw: Any) -> tuple[ResourcePool, FakeLauncher]:
    caps = {**capabilities_for(["webgpu", "wasm"]), "ort": {"build": build}}
    launcher = FakeLauncher(
        {"chromium": {"backends": ("webgpu", "wasm"), "capabilities": caps, "compute": double_ids}}
    )
    variant = ModelRef(key="emb/webgpu", name="emb", url="/m", backend="webgpu")
    resolver = StaticResolver(
        {"emb": ResolvedModel("emb", "text_embedding", (variant,), shape_buckets=BUCKETS)}
    )
    pool = ResourcePool(
        launcher=launcher,
        resolver=resolver,
        heartbeat_interval=0.01,
        launchable=["chromium"],
        **kw,
    )
    return pool, launcher


async def test_pool_runs_a_captured_session_per_bucket_and_returns_the_batch_own_shape():
    pool, launcher = pool_for("all")
    async with pool:
        f = tokens(3, 20)
        res = await pool.run_inference("emb", f, platform="webgpu")
        assert res.outputs["y"].shape == (3, 20)
        assert (res.outputs["y"] == f["ids"] * 2).all()
        assert res.shape_bucket == "4x32"
        w = launcher.workers[0]
        assert w.loads == ["emb/webgpu@4x32"]
        ort = w.loaded["emb/webgpu@4x32"].session_options["ort"]
        assert ort == {
            "freeDimensionOverrides": {"batch": 4, "sequence": 32},
            "enableGraphCapture": True,
        }
        assert w.calls[0].inputs["ids"].shape == (4, 32)
        await pool.run_inference("emb", tokens(4, 30), platform="webgpu")  # same bucket
        assert w.loads == ["emb/webgpu@4x32"]
        big = await pool.run_inference("emb", tokens(2, 100), platform="webgpu")  # no bucket
        assert big.outputs["y"].shape == (2, 100) and big.shape_bucket is None
        assert w.loads == ["emb/webgpu@4x32", "emb/webgpu"]


async def test_bucket_sessions_are_capped_least_recently_used_first():
    pool, launcher = pool_for("all", bucket_sessions=2)
    async with pool:
        for batch, seq in ((1, 16), (2, 16), (1, 16), (4, 16)):
            await pool.run_inference("emb", tokens(batch, seq), platform="webgpu")
        w = launcher.workers[0]
        assert w.loads == ["emb/webgpu@1x16", "emb/webgpu@2x16", "emb/webgpu@4x16"]
        assert w.unloads == ["emb/webgpu@2x16"]
        assert set(w.loaded) == {"emb/webgpu@1x16", "emb/webgpu@4x16"}


@pytest.mark.parametrize("build,capture", [("webgpu", True), ("all", False)])
async def test_no_buckets_on_the_webgpu_ep_build_or_with_capture_off(build: str, capture: bool):
    pool, launcher = pool_for(build, graph_capture=capture)
    async with pool:
        await pool.run_inference("emb", tokens(3, 20), platform="webgpu")
        w = launcher.workers[0]
        assert w.loads == ["emb/webgpu"]
        assert w.calls[0].inputs["ids"].shape == (3, 20)
