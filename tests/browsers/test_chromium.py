"""The Chromium launcher: readiness, clear errors, and no browser outlives Python."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from webaccel.browsers import launch_worker
from webaccel.browsers.chromium import sandbox_plan
from webaccel.browsers.launching import descendants
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
    # Somewhere the unprivileged browser user (when we are root) may execute it.
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent == Path(tempfile.gettempdir()):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
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


def cmdlines(pids: list[int]) -> dict[int, str]:
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return out


async def test_no_secret_in_any_browser_process_command_line():
    """/proc/<pid>/cmdline is readable by every local user: neither the master
    token nor the page's session secret may be there; the launch credential that
    is there is spent."""
    async with WebAccelServer() as server:
        worker = await launch_worker(server, "chromium")
        try:
            pids = descendants(worker.process.pid)
            lines = cmdlines(pids)
            assert len(lines) >= 3  # browser, zygotes, renderer, utility processes
            assert all(server.token not in line for line in lines.values())
            # Every secret-looking word is checked against the live session secrets.
            words = {w for line in lines.values() for w in re.findall(r"[A-Za-z0-9_-]{32,}", line)}
            assert not [w for w in words if server.credentials.worker_of(w) is not None]
            assert server.credentials.bound(worker.id)  # the page did redeem one
            # The launch credential in argv is spent: it cannot be redeemed again.
            launch = re.search(r"[?&]launch=([A-Za-z0-9_-]+)", lines[worker.process.pid])
            assert launch is not None
            import httpx

            async with httpx.AsyncClient() as client:
                again = await client.post(
                    f"{server.url}/bridge/session",
                    json={"worker": worker.id, "launch": launch.group(1)},
                )
            assert again.status_code == 403 and "already redeemed" in again.text
            # And the page still serves: its socket is authenticated by the secret.
            assert worker.alive and worker.capabilities["wasm"]["simd"]
        finally:
            await worker.close()


async def test_sandbox_and_user_as_planned():
    plan = sandbox_plan()
    async with WebAccelServer() as server:
        worker = await launch_worker(server, "chromium")
        try:
            browser = psutil.Process(worker.process.pid)
            argv = browser.cmdline()
            assert ("--no-sandbox" in argv) == (not plan.sandbox), plan.reason
            if os.geteuid() == 0 and plan.user is not None:
                # As root, every browser process runs as the unprivileged user.
                for pid in descendants(browser.pid):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        assert psutil.Process(pid).uids().real == plan.user.uid
                assert os.stat(worker.process.profile_dir).st_uid == plan.user.uid
            if plan.sandbox:
                # Sandboxed renderers live in their own user namespace.
                renderers = [
                    pid
                    for pid, line in cmdlines(descendants(browser.pid)).items()
                    if "--type=renderer" in line
                ]
                assert renderers
                own = os.readlink(f"/proc/{browser.pid}/ns/user")
                assert all(os.readlink(f"/proc/{pid}/ns/user") != own for pid in renderers)
        finally:
            await worker.close()


def test_doctor_says_whether_the_sandbox_is_on_and_why(monkeypatch):
    import io

    from rich.console import Console

    from webaccel.doctor import render, sandbox_status

    status = sandbox_status()
    assert status == sandbox_plan().describe()
    assert status["reason"].startswith("on" if status["sandbox"] else "off")
    out = io.StringIO()
    render({"browsers": [], "sandbox": status}, Console(file=out, width=300))
    assert f"Chromium sandbox: {status['reason']}" in out.getvalue()
    # Turned off on purpose, doctor says so (a fresh decision: the plan is cached).
    sandbox_plan.cache_clear()
    monkeypatch.setenv("WEBACCEL_SANDBOX", "off")
    try:
        assert sandbox_status() == {
            "sandbox": False,
            "user": None,
            "reason": "turned off by WEBACCEL_SANDBOX",
        }
    finally:
        sandbox_plan.cache_clear()


def test_without_namespaces_or_setuid_helper_the_sandbox_is_off_with_the_reason(monkeypatch):
    from webaccel.browsers import chromium

    real_which = chromium.shutil.which
    monkeypatch.setattr(
        chromium.shutil,
        "which",
        lambda name, *a, **k: None if name == "unshare" else real_which(name, *a, **k),
    )
    monkeypatch.setattr(chromium, "_setuid_helper", lambda exe: None)
    sandbox_plan.cache_clear()
    try:
        plan = sandbox_plan()
        assert not plan.sandbox
        assert plan.reason.startswith("off") and "unshare" in plan.reason
        assert "chrome-sandbox" in plan.reason  # and what to install
        assert "--no-sandbox" in chromium.chromium_flags(Path("/p"), sandbox=plan.sandbox)
        sandbox_plan.cache_clear()
        monkeypatch.setenv("WEBACCEL_SANDBOX", "on")
        with pytest.raises(BrowserLaunchError, match="WEBACCEL_SANDBOX=on"):
            sandbox_plan()
    finally:
        sandbox_plan.cache_clear()


def test_a_profile_dir_the_browser_user_cannot_enter_is_refused(tmp_path):
    """Chromium would quietly fall back to a shared default profile instead."""
    from webaccel.browsers.process import BrowserUser, unreachable_dir

    stranger = BrowserUser("nobody-here", uid=54321, gid=54321, home=tmp_path)
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)  # owned by us, closed to others
    assert unreachable_dir(closed / "inner" / "profiles", stranger) == closed
    closed.chmod(0o711)
    tmp_path.chmod(0o755)
    blocked = unreachable_dir(closed / "inner" / "profiles", stranger)
    assert blocked is None or blocked not in (closed, tmp_path)  # pytest's root may stay closed


def test_pages_reach_the_server_under_one_origin_whatever_its_port():
    """The OPFS model cache belongs to an origin; the port must not be part of it."""
    from webaccel.browsers.chromium import chromium_flags

    flags = chromium_flags(Path("/p"), stable_host_to="127.0.0.1:9")
    (rules,) = [f for f in flags if "resolver" in f]
    # our name first (the first matching MAP rule wins), then nothing else resolves
    assert rules == (
        "--host-resolver-rules=MAP webaccel.localhost 127.0.0.1:9, MAP * ~NOTFOUND, "
        "EXCLUDE 127.0.0.1, EXCLUDE localhost"
    )
