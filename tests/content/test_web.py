"""The in-page loader (web/cidfetch.mjs): verified multi-gateway fetch in Node, the esbuild
bundle, and the warm-load benchmark in headless Chromium."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from webaccel.content.add import add_path
from webaccel.content.store import BlockStore
from webaccel.content.testing import peers

from .conftest import REPO, write_random

DRIVER = Path(__file__).with_name("cidfetch_node.mjs")


@pytest.fixture(scope="module")
def node_ok() -> None:
    if shutil.which("node") is None or not (REPO / "node_modules" / "@ipld" / "dag-pb").exists():
        pytest.skip("node and npm packages (npm install at repo root) are needed")


@pytest.mark.parametrize("profile", ["kubo-v0", "kubo-v1", "unixfs-v1-2025"])
def test_node_fetch_verifies_and_skips_a_lying_gateway(node_ok, tmp_path: Path,
                                                       profile: str) -> None:
    src = write_random(tmp_path / "m.onnx", 3 * 1024 * 1024 + 77, seed=8)
    root = str(add_path(src, profile, store=BlockStore(tmp_path / "s", fsync=False)))
    with peers([{"root": tmp_path / "s", "corrupt": 1.0}, {"root": tmp_path / "s"}]) as (bad, good):
        r = subprocess.run(["node", str(DRIVER), root, bad.url, good.url], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["size"] == src.stat().st_size
    assert out["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    bad_g, good_g = out["gateways"]
    assert bad_g["banned"] and bad_g["blocks"] == 0 and bad_g["bad"] == 1
    assert good_g["blocks"] == out["blocks"]


def test_node_fetch_fails_cleanly_when_nobody_has_it(node_ok, tmp_path: Path) -> None:
    BlockStore(tmp_path / "s")
    with peers([{"root": tmp_path / "s"}]) as (p,):
        r = subprocess.run(["node", str(DRIVER),
                            "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", p.url],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "no gateway returned a valid block" in r.stderr


def test_bundle_builds(node_ok, tmp_path: Path) -> None:
    from webaccel.content.webassets import build_bundle

    out = build_bundle(tmp_path)
    text = out.read_text()
    assert "fetchByCid" in text and "subtle" in text  # WebCrypto sha-256 in the browser build
    assert "from'" not in text and 'from "' not in text  # no bare imports left


@pytest.mark.browser
def test_warm_load_bench_in_chromium(node_ok) -> None:
    if not Path("/usr/lib/chromium/chromium").exists():
        pytest.skip("Chromium is not installed")
    from webaccel.bench import warm_load
    from webaccel.bench.core import BenchContext

    m = warm_load.run(BenchContext(repeat=1, options={"size_mib": 4}))
    f = m.figures
    assert f["warm_gateway_requests"] == 0 and f["cold_gateway_requests"] == f["blocks"] == 5
    assert f["cache"] in ("opfs", "cache-api")
    if f["cache"] == "opfs":  # read in one call by a worker's sync access handle
        assert f["warm_timing"]["reader"] == f["warm_same_page_timing"]["reader"] == "sync-worker"
        assert f["warm_store_open_ms"]["n"] == 1  # opened at page boot, outside warm_ms
    assert m.ratio > 1
