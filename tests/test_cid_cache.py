"""Models travel by CID and stay in the browser's storage across runs."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.browser


def test_second_run_loads_the_model_from_the_browser_cache_by_cid(tmp_path, monkeypatch):
    """Models travel by CID; a restarted browser (same profile and origin) reads no network."""
    from webaccel.api import WebAccelerator

    monkeypatch.setenv("WEBACCEL_PROFILES", str(tmp_path / "profiles"))  # start cold
    with socket.socket() as sock:  # one origin for both runs: the cache is per origin
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tiers = []
    for _ in range(2):
        with WebAccelerator(max_connections=1, metrics=tmp_path / "m.duckdb", port=port) as acc:
            out = acc.accelerate("minilm", "cached by content address", platform="wasm")
            assert out["embeddings"].shape == (1, 384)
            tiers.append(set(acc.get_metrics()["loads"]["by_tier"]))
    assert tiers == [{"network"}, {"browser-cache"}]
