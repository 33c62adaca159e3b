"""The dashboard renders live data in a real headless Chromium (screenshot + DOM)."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette

from webaccel.metrics.http import metrics_routes
from webaccel.metrics.store import MetricsStore

CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", shutil.which("chromium") or "")
                 if p and os.access(p, os.X_OK)), None)
FLAGS = ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--window-size=1280,900"]

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")]


class _Server:
    def __init__(self, app: Starlette) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()),
                                       daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


def _chromium(tmp: Path, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / f"profile-{time.monotonic_ns()}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}",  # type: ignore[list-item]
                           "--virtual-time-budget=3500", *extra, url],
                          capture_output=True, text=True, timeout=60)


def test_dashboard_shows_workers_queues_and_latency(db_path: Path, tmp_path: Path) -> None:
    store = MetricsStore(db_path)
    served = {"n": 0}

    def snapshot() -> dict[str, Any]:
        served["n"] += 1
        # Live: each poll records one more inference, so the page must keep redrawing.
        store.record_inference("minilm", round_trip_ms=10.0 + served["n"], worker_id="w-alpha",
                               backend="wasm", batch=1)
        return {"workers": [
                    {"id": "w-alpha", "browser": "chromium", "state": "busy",
                     "backends": ["wasm"], "models": ["minilm"], "inflight": 3},
                    {"id": "w-beta", "browser": "firefox", "state": "ready",
                     "backends": ["wasm"], "models": [], "inflight": 0}],
                "queues": {"minilm": 7, "whisper-tiny": 2}}

    for i in range(30):
        store.record_inference("minilm", round_trip_ms=5.0 + (i % 10) * 3, worker_id="w-alpha",
                               backend="wasm", batch=1)
    store.record_inference("minilm", round_trip_ms=60.0, backend="webgpu",
                           error_code="WORKER_LOST")
    store.record_generation("smollm2", task="text_generation", worker_id="w-alpha",
                            backend="wasm", prompt_tokens=11, completion_tokens=4321,
                            ttft_ms=123.0, total_ms=9000.0, finish_reason="length")
    app = Starlette(routes=metrics_routes(store, snapshot))
    shot = Path(os.environ.get("WEBACCEL_TEST_SHOT_DIR", tmp_path)) / "dashboard.png"
    with _Server(app) as srv:
        url = f"http://127.0.0.1:{srv.port}/dashboard"
        dom = _chromium(tmp_path, url, "--dump-dom")
        polls_after_dom = served["n"]
        pic = _chromium(tmp_path, url, f"--screenshot={shot}")
    store.close()
    html = dom.stdout
    assert 'data-worker="w-alpha"' in html and 'data-worker="w-beta"' in html, dom.stderr[-2000:]
    assert 'data-queue="minilm"' in html and 'data-queue="whisper-tiny"' in html
    assert 'data-model="minilm"' in html
    gen = html.split('data-generation="smollm2"')[1].split("</tr>")[0]
    assert "text_generation" in gen and "4321" in gen and "123.0" in gen, gen
    assert 'data-model="smollm2"' not in html  # a generation is not an inference
    status = html.split('id="status"')[1].split("</span>")[0]
    assert "live" in status and "disconnected" not in status, status
    assert polls_after_dom >= 2  # the page kept polling (a live view, not one fetch)
    updates = int(html.split('data-updates="')[1].split('"')[0])
    assert updates >= 2
    assert shot.exists(), pic.stderr[-2000:]
    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 900)
    # The latency chart (top right panel at this width) drew its points: count pixels of
    # the first series colour and of the error colour there.
    px = img.load()
    blue = red = 0
    for x in range(img.width // 2, img.width):
        for y in range(60, 340):
            r, g, b = px[x, y]
            if abs(r - 0x5a) < 20 and abs(g - 0xa9) < 20 and abs(b - 0xe6) < 20:
                blue += 1
            if abs(r - 0xef) < 20 and abs(g - 0x5b) < 25 and abs(b - 0x5b) < 25:
                red += 1
    assert blue > 40, blue
    assert red > 2, red
