"""The seed documents' API names, on real browsers, and the native cpu last resort."""
from __future__ import annotations

import numpy as np
import pytest

from webaccel.api import ResourcePoolBridgeIntegration, create_ipfs_web_accelerator
from webaccel.engine import Engine
from webaccel.errors import BackendUnavailableError, BrowserNotFoundError, InvalidInputError

pytestmark = pytest.mark.browser


def test_integration_get_model_and_execute_concurrent():
    with ResourcePoolBridgeIntegration(max_connections=2) as integration:
        model = integration.get_model("text_embedding", "minilm",
                                      {"priority_list": ["webgpu", "wasm", "cpu"]})
        one = model(["a cat sits on the mat"])
        assert one["embeddings"].shape == (1, 384) and one["browser"] != "native"
        results = integration.execute_concurrent(
            [(model, ["first text"]), ("minilm", ["second text"]), (model, [""])])
        assert results[0]["embeddings"].shape == (1, 384)
        assert results[1]["embeddings"].shape == (1, 384)
        assert isinstance(results[2], InvalidInputError)  # a failure is returned, not raised
        with pytest.raises(InvalidInputError, match="priority_list"):
            integration.get_model(None, "minilm", {"priority_list": ["tpu"]})


def test_ipfs_web_accelerator_shape():
    acc = create_ipfs_web_accelerator(max_connections=1)
    try:
        acc.accelerate_model("minilm", "text_embedding", "wasm")
        out = acc.run_inference("minilm", ["hello"])
        assert out["backend"] == "wasm" and out["embeddings"].shape == (1, 384)
        metrics = acc.get_metrics()
        assert metrics["inferences"] == 1 and metrics["models"] == ["minilm"]
        # the recorder saw the same inference (live figures from the DuckDB store)
        assert metrics["aggregate"]["inferences"] >= 1, metrics["aggregate"]
    finally:
        acc.close()


async def test_native_cpu_is_the_last_resort_when_no_browser_launches():
    engine = Engine(max_connections=1, launch_timeout=5)

    async def no_browser(family):  # the launcher seam: every browser is missing
        raise BrowserNotFoundError(f"{family} is not installed")

    engine.pool._launcher = no_browser
    await engine.start()
    try:
        with pytest.raises(BackendUnavailableError, match="chromium is not installed"):
            await engine.accelerate("minilm", "hello")
        out = await engine.accelerate("minilm", "hello", native_fallback=True)
        assert out["browser"] == "native" and out["backend"] == "cpu"
        assert "no browser could serve" in out["fallback_reason"]
        assert np.isclose(np.linalg.norm(out["embeddings"][0]), 1.0, atol=1e-5)
    finally:
        await engine.close()
