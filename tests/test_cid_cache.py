"""Models travel by CID and stay in the browser's storage across runs."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


def test_second_run_loads_the_model_from_the_browser_cache_by_cid(tmp_path, monkeypatch):
    """Models travel by CID; a restarted browser (same profile) reads no network, though
    its server got another port: pages live on one origin (webaccel.bridge.origin)."""
    from webaccel.api import WebAccelerator

    # Start cold, in a directory the browser user (when we are root) can enter.
    profiles = Path(tempfile.mkdtemp(prefix="webaccel-profiles-"))
    profiles.chmod(0o755)
    monkeypatch.setenv("WEBACCEL_PROFILES", str(profiles))
    tiers, ports = [], set()
    for _ in range(2):
        with WebAccelerator(max_connections=1, metrics=tmp_path / "m.duckdb") as acc:
            out = acc.accelerate("minilm", "cached by content address", platform="wasm")
            assert out["embeddings"].shape == (1, 384)
            tiers.append(set(acc.get_metrics()["loads"]["by_tier"]))
            ports.add(acc.server_url)
    assert len(ports) == 2  # a fresh port each run
    assert tiers == [{"network"}, {"browser-cache"}]
    shutil.rmtree(profiles, ignore_errors=True)
