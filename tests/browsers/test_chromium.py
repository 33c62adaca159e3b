"""The Chromium launcher: readiness, clear errors, and no browser outlives Python."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from webaccel.browsers import launch_worker
from webaccel.errors import BrowserLaunchError, BrowserNotFoundError
from webaccel.server import WebAccelServer

pytestmark = pytest.mark.browser


def browsers_using(profile: str) -> list[psutil.Process]:
    """Live processes started with ``profile`` (a zombie has exited already: a
    Chromium helper orphaned to a container's init that does not reap is one)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(profile in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


async def test_launch_reports_capabilities_and_close_cleans_up():
    async with WebAccelServer() as server:
        worker = await launch_worker(server, "chrome")
        caps = worker.capabilities
        assert caps["wasm"]["simd"] and caps["wasm"]["crossOriginIsolated"]
        assert "webgpu" in caps and "webnn" in caps and caps["userAgent"]
        assert "wasm" in worker.available_backends()
        profile = str(worker.process.profile_dir)
        assert browsers_using(profile)
        await worker.close()
        assert not worker.alive
        assert not browsers_using(profile)
        assert not os.path.exists(profile) or "/profiles/" in profile


async def test_missing_binary_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WEBACCEL_CHROMIUM", "/nonexistent/chromium")
    async with WebAccelServer() as server:
        with pytest.raises(BrowserNotFoundError, match="apt-get install chromium"):
            await launch_worker(server, "chromium")


async def test_browser_dying_at_start_is_a_clear_error(tmp_path, monkeypatch):
    fake = tmp_path / "chromium"
    fake.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("WEBACCEL_CHROMIUM", str(fake))
    async with WebAccelServer() as server:
        with pytest.raises(BrowserLaunchError, match=r"code 3.*\n.*cannot open display"):
            await launch_worker(server, "chromium", timeout=10)


CHILD = textwrap.dedent("""
    import sys, time
    from webaccel.api import WebAccelerator
    acc = WebAccelerator(max_connections=1)
    worker = acc._loop.run(acc._engine.any_worker())
    print(worker.process.pid, worker.process.profile_dir, flush=True)
    time.sleep(120)
""")


def start_child_with_browser() -> tuple[subprocess.Popen, int, str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    line = child.stdout.readline().split()
    assert line, "child did not start a browser"
    pid, profile = int(line[0]), line[1]
    assert psutil.pid_exists(pid) and browsers_using(profile)
    return child, pid, profile


def wait_until_gone(profile: str, seconds: float = 10.0) -> list[psutil.Process]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in browsers_using(profile) if p.status() != psutil.STATUS_ZOMBIE]
        if not left:
            return []
        time.sleep(0.2)
    return left


@pytest.mark.parametrize(
    "sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"]
)
def test_no_browser_outlives_the_python_process(sig):
    child, _pid, profile = start_child_with_browser()
    child.send_signal(sig)
    child.wait(timeout=15)
    assert wait_until_gone(profile) == []
    # A persistent profile (kept for the CID cache) must be free for the next browser.
    if "/profiles/" in profile:
        from pathlib import Path

        from webaccel.browsers.process import ProfileLease

        name = Path(profile).name
        family, n = name.rsplit("-", 1)
        leases = []
        while (lease := ProfileLease.acquire(family, Path(profile).parent)) is not None:
            leases.append(lease)
            if lease.path.name == name:
                break
        assert leases and leases[-1].path.name == name, "profile still locked"
        for lease in leases:
            lease.release()
    elif sig != signal.SIGKILL:  # a killed parent cannot delete a temp profile; the others do
        assert not os.path.exists(profile)
