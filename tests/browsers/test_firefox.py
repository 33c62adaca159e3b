"""Firefox ESR as a subprocess: serves requests on WASM, reports what it has, stays off the net."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import time

import psutil
import pytest

from webaccel.browsers import launch_worker
from webaccel.browsers.firefox import find_firefox, user_prefs, write_profile
from webaccel.errors import BrowserNotFoundError
from webaccel.server import WebAccelServer

from .helpers import smoke_test

pytestmark = pytest.mark.browser

try:
    find_firefox()
except BrowserNotFoundError as exc:
    pytest.skip(f"needs Firefox: {exc}", allow_module_level=True)


def test_user_js_keeps_firefox_on_loopback_and_our_server(tmp_path) -> None:
    prefs = user_prefs("10.200.0.1")
    assert prefs["network.proxy.type"] == 1 and prefs["network.proxy.http_port"] == 9
    assert "10.200.0.1" in str(prefs["network.proxy.no_proxies_on"])
    text = write_profile(tmp_path, "127.0.0.1").read_text()
    assert 'user_pref("app.update.enabled", false);' in text
    assert 'user_pref("toolkit.telemetry.enabled", false);' in text


async def test_firefox_serves_requests_reports_capabilities_and_cleans_up() -> None:
    async with WebAccelServer() as server:
        worker = await launch_worker(server, "firefox")
        try:
            assert worker.browser == "firefox"
            caps = worker.capabilities
            assert "Firefox" in caps["userAgent"]
            assert caps["wasm"]["simd"] and caps["wasm"]["crossOriginIsolated"]
            # Reported honestly, whatever this build has.
            assert caps["webnn"]["available"] is False and caps["webnn"]["reason"]
            assert "available" in caps["webgpu"]
            assert "wasm" in worker.available_backends()
            result = await smoke_test(worker, server)
            assert result["backend"] == "wasm"
            pids = worker.pids()
            remote = []
            for pid in pids:
                try:
                    conns = psutil.Process(pid).net_connections(kind="inet")
                except psutil.Error:
                    continue
                remote += [
                    c.raddr.ip
                    for c in conns
                    if c.raddr and not ipaddress.ip_address(c.raddr.ip).is_loopback
                ]
            assert remote == [], f"Firefox talks to {remote}"
            # No master token in any Firefox process's argv (world-readable in /proc);
            # as root, Firefox runs as the unprivileged browser user.
            procs = []
            for pid in pids:
                with contextlib.suppress(psutil.Error):
                    procs.append((psutil.Process(pid).cmdline(), psutil.Process(pid).uids().real))
            assert procs and all(server.token not in " ".join(argv) for argv, _ in procs)
            if os.geteuid() == 0 and os.environ.get("WEBACCEL_SANDBOX", "") != "off":
                from webaccel.browsers.process import browser_user

                assert {uid for _, uid in procs} == {browser_user().uid}
            profile = str(worker.process.profile_dir)
        finally:
            await worker.close()
        assert not worker.alive
        assert not os.path.exists(profile)
        # close() SIGKILLs the process group; a big process can take a moment to be gone
        # (CI once saw one still there at this check).
        deadline = time.monotonic() + 5

        def left() -> list[int]:
            out = []
            for p in pids:
                with contextlib.suppress(psutil.Error):
                    if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                        out.append(p)
            return out

        while left() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not left()
