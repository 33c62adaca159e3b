"""Selenium 4 launcher: Chromium through chromedriver (local), the same page and bridge.

We start ``chromedriver`` ourselves (as a :class:`BrowserProcess`: own process
group, PR_SET_PDEATHSIG) and point Selenium's Remote client at it, because
Selenium's own ``Service`` starts it with a plain Popen that outlives a killed
Python (docs/FACTS.md).  chromedriver in turn starts Chromium through a ``setpriv
--pdeathsig`` wrapper, so the chain unwinds if any link is killed.

Firefox: Selenium needs geckodriver, which Debian does not ship and whose
PyPI/npm packages download it at run time (impossible here).  Where a
``geckodriver`` is on PATH (or ``WEBACCEL_GECKODRIVER``) it is used; otherwise
:func:`launch_selenium` says so and points at the subprocess launcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from webaccel.browsers import launchers
from webaccel.browsers.chromium import chromium_flags, find_chromium
from webaccel.browsers.launching import (
    descendants,
    free_port,
    marker_flag,
    package_version,
    pdeathsig_wrapper,
    tool_version,
    wait_for_hello,
    wait_port,
)
from webaccel.browsers.process import BrowserProcess
from webaccel.browsers.worker import BrowserWorker
from webaccel.errors import BackendUnavailableError, BrowserLaunchError, BrowserNotFoundError
from webaccel.server import WebAccelServer

CHROMEDRIVER_CANDIDATES = (
    "/usr/bin/chromedriver",
    "/usr/lib/chromium/chromedriver",
    "chromedriver",
)


def find_chromedriver(explicit: str | None = None) -> Path:
    wanted = explicit or os.environ.get("WEBACCEL_CHROMEDRIVER")
    for name in [wanted] if wanted else CHROMEDRIVER_CANDIDATES:
        found = name if os.path.isabs(name) else shutil.which(name)
        if found and os.path.isfile(found) and os.access(found, os.X_OK):
            return Path(found)
    raise BrowserNotFoundError(
        "chromedriver is not installed: run `apt-get install chromium-driver` (it must match the "
        "Chromium version), or set WEBACCEL_CHROMEDRIVER",
        details={"binary": wanted or "chromedriver"},
    )


def find_geckodriver() -> Path | None:
    wanted = os.environ.get("WEBACCEL_GECKODRIVER") or shutil.which("geckodriver")
    return Path(wanted) if wanted and os.access(wanted, os.X_OK) else None


NO_GECKODRIVER = (
    "Selenium cannot drive Firefox here: no geckodriver is installed (Debian does not package it, "
    "and the PyPI/npm geckodriver packages download it at run time). Use the subprocess launcher "
    "for Firefox (launch_worker(server, 'firefox'), the default), or install geckodriver and set "
    "WEBACCEL_GECKODRIVER."
)


def require_selenium() -> Any:
    from webaccel.extras import require

    return require("selenium.webdriver", "the Selenium launcher", "selenium")


def chrome_options(flags: list[str], *, binary: str | None = None) -> Any:
    webdriver = require_selenium()
    opts = webdriver.ChromeOptions()
    if binary:
        opts.binary_location = binary
    for flag in flags:
        opts.add_argument(flag)
    # Return from get() at once: readiness is the page's hello, not the load event.
    opts.page_load_strategy = "none"
    return opts


class SeleniumWorker(BrowserWorker):
    """A worker whose browser a WebDriver session owns (local chromedriver or a Grid)."""

    launcher = "selenium"

    def __init__(
        self,
        server: WebAccelServer,
        worker_id: str,
        browser: str,
        driver: Any,
        driver_process: BrowserProcess | None,
    ) -> None:
        super().__init__(server, worker_id, browser, None)
        self.driver = driver
        self.driver_process = driver_process

    @property
    def alive(self) -> bool:
        if self.driver_process is not None and self.driver_process.returncode is not None:
            return False
        return super().alive

    def pids(self) -> list[int]:
        """chromedriver and everything under it (Chromium and its helpers)."""
        if self.driver_process is None:
            return []
        return descendants(self.driver_process.pid)

    async def close(self) -> None:
        if self._closed:
            return
        await super().close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(self.driver.quit), 10)
        if self.driver_process is not None:
            await self.driver_process.terminate_async()


async def launch_selenium(
    server: WebAccelServer,
    *,
    browser: str = "chromium",
    worker_id: str | None = None,
    binary: str | None = None,
    driver: str | None = None,
    timeout: float = 30.0,
    headless: bool = True,
    threads: int = 1,
    ort_build: str = "auto",
    extra_flags: list[str] | None = None,
) -> SeleniumWorker:
    """Chromium via a local chromedriver; ready once the page says hello."""
    if browser == "firefox":
        if find_geckodriver() is None:
            raise BackendUnavailableError(NO_GECKODRIVER)
        raise BackendUnavailableError(
            "Selenium + geckodriver is not wired in this build; use the subprocess Firefox launcher"
        )
    require_selenium()
    exe = find_chromium(binary)
    chromedriver = find_chromedriver(driver)
    worker_id = worker_id or f"chromium-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="webaccel-selenium-"))
    profile = workdir / "profile"
    log_path = Path(tempfile.mkstemp(prefix="webaccel-chromedriver-", suffix=".log")[1])
    flags = [
        *chromium_flags(profile, server_host=server.host, headless=headless),
        marker_flag(worker_id),
        *(extra_flags or []),
    ]
    url = server.worker_page_url(worker_id, threads=threads, ort=ort_build)
    start = time.perf_counter()
    port = free_port()
    loop = asyncio.get_running_loop()
    proc = await loop.run_in_executor(
        None,
        lambda: BrowserProcess(
            [str(chromedriver), f"--port={port}", "--allowed-ips=127.0.0.1"],
            profile_dir=workdir,
            log_path=log_path,
        ),
    )
    wd: Any = None
    try:
        if not await asyncio.to_thread(wait_port, "127.0.0.1", port, 10):
            raise BrowserLaunchError(
                f"chromedriver did not listen on port {port}: {proc.log_tail()}"
            )
        webdriver = require_selenium()
        opts = chrome_options(flags, binary=str(pdeathsig_wrapper(exe, workdir)))

        def open_session() -> Any:
            d = webdriver.Remote(command_executor=f"http://127.0.0.1:{port}", options=opts)
            d.get(url)
            return d

        try:
            wd = await asyncio.wait_for(asyncio.to_thread(open_session), timeout)
        except TimeoutError:
            raise BrowserLaunchError(
                f"chromedriver did not open a session within {timeout:.0f} s"
            ) from None
        except Exception as exc:
            raise BrowserLaunchError(
                f"chromedriver could not start Chromium: {exc}. chromedriver's log ends with:\n"
                f"{proc.log_tail()}",
                details={"binary": str(exe)},
            ) from exc
        worker = SeleniumWorker(server, worker_id, "chromium", wd, proc)
        conn = await wait_for_hello(
            server,
            worker_id,
            timeout,
            what="Chromium (Selenium)",
            failed=lambda: (
                None
                if proc.returncode is None
                else f"chromedriver exited with code {proc.returncode}"
            ),
        )
    except BaseException:
        if wd is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(wd.quit), 5)
        await proc.terminate_async()
        raise
    worker.capabilities = conn.capabilities
    worker.launch_ms = (time.perf_counter() - start) * 1000
    return worker


async def _launch(server: WebAccelServer, req: launchers.LaunchRequest) -> SeleniumWorker:
    return await launch_selenium(server, browser=req.browser, **req.options)


def _chromium_status() -> dict[str, Any]:
    from webaccel.errors import WebAccelError

    try:
        driver: str | None = str(find_chromedriver())
        why = ""
    except WebAccelError as exc:
        driver, why = None, exc.message
    try:
        chromium: str | None = str(find_chromium())
    except WebAccelError:
        chromium = None
    sel = package_version("selenium")
    return {
        "launcher": "selenium",
        "browser": "chromium",
        "ok": bool(sel and driver and chromium),
        "selenium": sel,
        "chromedriver": driver,
        "version": tool_version([driver, "--version"]) if driver else None,
        "why": why or ("" if sel else "pip install selenium"),
    }


def _firefox_status() -> dict[str, Any]:
    ok = find_geckodriver() is not None
    return {
        "launcher": "selenium", "browser": "firefox", "ok": ok, "why": "" if ok else NO_GECKODRIVER
    }


launchers.register(launchers.Launcher("selenium", "chromium", _launch, _chromium_status))
launchers.register(launchers.Launcher("selenium", "firefox", _launch, _firefox_status))
