"""The Playwright launcher (system Chromium, never `playwright install`)."""

from __future__ import annotations

import pytest

from webaccel.browsers import launch_worker
from webaccel.browsers.launching import processes_marked
from webaccel.errors import BackendUnavailableError
from webaccel.server import WebAccelServer

from . import test_selenium as _sel
from .helpers import smoke_test

pytestmark = pytest.mark.browser
pytest.importorskip("playwright")



async def test_playwright_serves_requests_and_cleans_up() -> None:
    async with WebAccelServer() as server:
        workers = [
            await launch_worker(server, "chromium", launcher="playwright") for _ in range(2)
        ]  # two browsers share one Playwright driver
        try:
            for worker in workers:
                assert worker.launcher == "playwright"
                assert worker.capabilities["wasm"]["crossOriginIsolated"]
                result = await smoke_test(worker, server)
                assert result["backend"] == "wasm"
                assert worker.pids()
            assert (
                "HeadlessChrome" in workers[0].capabilities["userAgent"]
                or "Chrome" in workers[0].capabilities["userAgent"]
            )
        finally:
            for worker in workers:
                await worker.close()
        for worker in workers:
            assert not worker.alive
            assert not processes_marked(worker.id)


async def test_playwright_firefox_says_why_not() -> None:
    async with WebAccelServer() as server:
        with pytest.raises(BackendUnavailableError, match="patched Firefox"):
            await launch_worker(server, "firefox", launcher="playwright")


def test_no_playwright_browser_outlives_a_killed_python() -> None:
    worker_id = _sel.run_child_and_kill("playwright")
    assert _sel.gone_within(worker_id), [p.cmdline()[:2] for p in processes_marked(worker_id)]
