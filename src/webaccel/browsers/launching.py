"""Pieces every launcher shares: waiting for the page's hello, finding a
browser's processes, and a Chromium wrapper that dies with its parent.

A launcher's job ends when the worker page has said hello over the bridge;
what started the browser (our subprocess, chromedriver, Playwright's driver,
a Grid node) does not change the page, the bridge or the capabilities.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil

from webaccel.bridge.endpoint import PageConnection
from webaccel.browsers import launchers
from webaccel.errors import BrowserLaunchError
from webaccel.server import WebAccelServer

# Chromium ignores switches it does not know; this one names the worker in the
# browser's command line so its processes can be found (and killed) on any host
# we can reach, whoever started them (chromedriver, a Grid node, Playwright).
MARKER_SWITCH = "--webaccel-worker"


def marker_flag(worker_id: str) -> str:
    return f"{MARKER_SWITCH}={worker_id}"


async def wait_for_hello(
    server: WebAccelServer,
    worker_id: str,
    timeout: float,
    *,
    what: str,
    failed: Callable[[], str | None] = lambda: None,
) -> PageConnection:
    """Wait until the page ``worker_id`` says hello; ``failed()`` returns a reason
    (e.g. "chromedriver exited") to stop waiting early."""
    hello = asyncio.ensure_future(server.hub.wait_for(worker_id, timeout))
    try:
        while not hello.done():
            reason = failed()
            if reason:
                raise BrowserLaunchError(f"{what} failed before its page said hello: {reason}")
            await asyncio.wait({hello}, timeout=0.05)
        try:
            return hello.result()
        except TimeoutError:
            raise BrowserLaunchError(
                f"{what} started but its worker page did not say hello within {timeout:.0f} s "
                f"(is {server.url} reachable from that browser?)"
            ) from None
    finally:
        hello.cancel()


def pdeathsig_wrapper(binary: str | os.PathLike[str], directory: Path) -> Path:
    """A script that execs ``binary`` with PR_SET_PDEATHSIG=SIGKILL (util-linux ``setpriv``).

    chromedriver and Playwright's driver start Chromium themselves; if they are
    killed (because we were), this makes the kernel kill Chromium too.  Falls
    back to the plain binary where ``setpriv`` is missing.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return Path(binary)
    script = directory / "chromium-pdeathsig"
    script.write_text(f'#!/bin/sh\nexec {setpriv} --pdeathsig KILL -- {binary} "$@"\n')
    script.chmod(0o755)
    return script


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def processes_marked(worker_id: str) -> list[psutil.Process]:
    """Processes on this host whose command line carries the worker's marker."""
    flag = marker_flag(worker_id)
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if flag in (proc.info["cmdline"] or []):
                found.append(proc)
    return found


def tree(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    out: dict[int, psutil.Process] = {}
    for proc in procs:
        out[proc.pid] = proc
        with contextlib.suppress(psutil.Error):
            for child in proc.children(recursive=True):
                out[child.pid] = child
    return list(out.values())


def kill_marked(worker_id: str, *, drivers: tuple[str, ...] = ("chromedriver",)) -> list[int]:
    """SIGKILL a worker's browser (found by its marker), its helpers, and the
    driver that started it (a chromedriver orphaned by a dead Grid node)."""
    browsers = processes_marked(worker_id)
    victims = tree(browsers)
    for proc in browsers:
        with contextlib.suppress(psutil.Error):
            parent = proc.parent()
            if parent is not None and any(d in parent.name() for d in drivers):
                victims.append(parent)
    killed = []
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGKILL)
            killed.append(proc.pid)
    psutil.wait_procs(victims, timeout=3)
    return killed


def pss_bytes(pids: Iterable[int]) -> int:
    """Proportional set size of these processes (shared pages split fairly)."""
    total = 0
    for pid in set(pids):
        with contextlib.suppress(psutil.Error):
            total += int(getattr(psutil.Process(pid).memory_full_info(), "pss", 0))
    return total


def descendants(pid: int, *, include_self: bool = True) -> list[int]:
    try:
        proc = psutil.Process(pid)
        out = [c.pid for c in proc.children(recursive=True)]
    except psutil.Error:
        return []
    return [pid, *out] if include_self else out


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def tool_version(argv: list[str]) -> str:
    """The first line ``argv`` (e.g. ``[binary, "--version"]``) prints, for doctor rows."""
    import subprocess

    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def package_version(name: str) -> str | None:
    """The installed version of the Python distribution ``name``, or None."""
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def launcher_status() -> list[dict[str, Any]]:
    """What each launcher would use here, and why one cannot work (for ``webaccel doctor``).

    One row per registered launcher that reports one (see
    :mod:`webaccel.browsers.launchers`).  Cheap: finds binaries and packages
    and asks for versions; starts no browser.
    """
    return [x.status() for x in launchers.registered() if x.status is not None]
