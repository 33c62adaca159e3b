"""Selenium launcher (local chromedriver): same page and bridge, real inference, no leftovers."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from webaccel.browsers import launch_worker
from webaccel.browsers.launching import processes_marked
from webaccel.errors import BackendUnavailableError
from webaccel.server import WebAccelServer

from .helpers import smoke_test

pytestmark = pytest.mark.browser
pytest.importorskip("selenium")


async def test_selenium_serves_requests_and_cleans_up() -> None:
    async with WebAccelServer() as server:
        worker = await launch_worker(server, "chromium", launcher="selenium")
        try:
            assert worker.launcher == "selenium"
            caps = worker.capabilities
            assert caps["wasm"]["crossOriginIsolated"] and "webnn" in caps
            assert worker.available_backends()[0] == "wasm"  # SwiftShader WebGPU goes last
            result = await smoke_test(worker, server)
            assert result["backend"] == "wasm" and len(result["page_ms"]) == 3
            pids = worker.pids()
            assert len(pids) >= 3  # chromedriver, Chromium, its helpers
            assert processes_marked(worker.id)
        finally:
            await worker.close()
        assert not worker.alive
        assert not processes_marked(worker.id)


async def test_selenium_firefox_says_why_not() -> None:
    async with WebAccelServer() as server:
        with pytest.raises(BackendUnavailableError, match="geckodriver"):
            await launch_worker(server, "firefox", launcher="selenium")


CHILD = textwrap.dedent("""
    import asyncio, sys, time
    from webaccel.browsers import launch_worker
    from webaccel.server import WebAccelServer

    async def main():
        server = WebAccelServer()
        await server.start()
        worker = await launch_worker(server, "chromium", launcher=sys.argv[1])
        print(worker.id, flush=True)
        await asyncio.sleep(120)

    asyncio.run(main())
""")


def run_child_and_kill(launcher: str) -> str:
    """Start a Python that launches a browser, SIGKILL it, return the worker id."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, launcher], stdout=subprocess.PIPE, text=True
    )
    try:
        worker_id = child.stdout.readline().strip()  # type: ignore[union-attr]
        assert worker_id, "child did not start a browser"
        assert processes_marked(worker_id)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=15)
    finally:
        if child.poll() is None:
            child.kill()
    return worker_id


def gone_within(worker_id: str, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not [p for p in processes_marked(worker_id) if p.status() != "zombie"]:
            return True
        time.sleep(0.2)
    return False


def test_no_selenium_browser_outlives_a_killed_python() -> None:
    worker_id = run_child_and_kill("selenium")
    assert gone_within(worker_id), [p.cmdline()[:2] for p in processes_marked(worker_id)]


def test_launcher_status_for_doctor() -> None:
    from webaccel.browsers.launching import launcher_status

    rows = {(r["launcher"], r["browser"]): r for r in launcher_status()}
    assert rows[("subprocess", "chromium")]["ok"]
    assert (
        "--enable-features=WebMachineLearningNeuralNetwork"
        in rows[("subprocess", "chromium")]["switches"]
    )
    assert rows[("selenium", "chromium")]["ok"]
    assert not rows[("playwright", "firefox")]["ok"]
    if not rows[("selenium", "firefox")]["ok"]:
        assert "geckodriver" in rows[("selenium", "firefox")]["why"]
