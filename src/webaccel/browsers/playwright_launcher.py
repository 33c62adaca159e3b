"""Playwright launcher: the system Chromium through Playwright's driver.

Never ``playwright install``: it downloads browsers (impossible here, and not
ours to pin).  ``executable_path`` points at Debian's Chromium (through a
``setpriv --pdeathsig`` wrapper, so Chromium dies with Playwright's Node
driver, which dies when its stdin -- our pipe -- closes).

Firefox: Playwright drives only its own patched Firefox build (Juggler
protocol), which cannot be installed here; a stock Firefox ESR cannot be
driven, so :func:`launch_playwright` says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from webaccel.browsers import launchers
from webaccel.browsers.chromium import chromium_flags, find_chromium
from webaccel.browsers.launching import (
    marker_flag,
    package_version,
    pdeathsig_wrapper,
    processes_marked,
    tree,
    wait_for_hello,
)
from webaccel.browsers.worker import BrowserWorker
from webaccel.errors import BackendUnavailableError, BrowserLaunchError
from webaccel.server import WebAccelServer

NO_PLAYWRIGHT_FIREFOX = (
    "Playwright cannot drive this Firefox: it only drives its own patched Firefox build, which "
    "`playwright install firefox` would download (not possible here, and not the system browser). "
    "Use the subprocess launcher for Firefox (launch_worker(server, 'firefox'))."
)

# Switches Playwright sets itself, or refuses in ``args``.
_PLAYWRIGHT_OWNS = ("--user-data-dir", "--headless", "--remote-debugging")


class _Driver:
    """One Playwright driver (a Node process) per event loop, shared by its workers."""

    def __init__(self) -> None:
        self.pw: Any = None
        self.users = 0
        self.lock = asyncio.Lock()

    async def acquire(self) -> Any:
        async with self.lock:
            if self.pw is None:
                try:
                    from playwright.async_api import async_playwright
                except ImportError as exc:
                    raise BackendUnavailableError(
                        "the Playwright launcher needs the playwright package: pip install "
                        "playwright (never `playwright install`; the system Chromium is used)"
                    ) from exc
                self.pw = await async_playwright().start()
            self.users += 1
            return self.pw

    async def release(self) -> None:
        async with self.lock:
            self.users -= 1
            if self.users <= 0 and self.pw is not None:
                pw, self.pw = self.pw, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pw.stop(), 10)


_drivers: dict[int, _Driver] = {}


def _driver() -> _Driver:
    loop = asyncio.get_running_loop()
    return _drivers.setdefault(id(loop), _Driver())


class PlaywrightWorker(BrowserWorker):
    launcher = "playwright"

    def __init__(
        self,
        server: WebAccelServer,
        worker_id: str,
        browser_name: str,
        pw_browser: Any,
        page: Any,
        driver: _Driver,
        workdir: Path,
    ) -> None:
        super().__init__(server, worker_id, browser_name, None)
        self.pw_browser = pw_browser
        self.page = page
        self._driver = driver
        self._workdir = workdir
        self._gone = False
        pw_browser.on("disconnected", lambda *_: setattr(self, "_gone", True))

    @property
    def alive(self) -> bool:
        return not self._gone and super().alive

    def pids(self) -> list[int]:
        """Chromium and its helpers (the shared Node driver is not counted)."""
        return [p.pid for p in tree(processes_marked(self.id))]

    async def close(self) -> None:
        if self._closed:
            return
        await super().close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pw_browser.close(), 10)
        await self._driver.release()
        shutil.rmtree(self._workdir, ignore_errors=True)


async def launch_playwright(
    server: WebAccelServer,
    *,
    browser: str = "chromium",
    worker_id: str | None = None,
    binary: str | None = None,
    timeout: float = 30.0,
    headless: bool = True,
    threads: int = 1,
    ort_build: str = "auto",
    extra_flags: list[str] | None = None,
) -> PlaywrightWorker:
    """Chromium via Playwright (system binary); ready once the page says hello."""
    if browser == "firefox":
        raise BackendUnavailableError(NO_PLAYWRIGHT_FIREFOX)
    exe = find_chromium(binary)
    worker_id = worker_id or f"chromium-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="webaccel-playwright-"))
    flags = [
        f
        for f in chromium_flags(workdir / "unused", server_host=server.host, headless=headless)
        if not f.startswith(_PLAYWRIGHT_OWNS)
    ]
    flags += [marker_flag(worker_id), *(extra_flags or [])]
    url = server.worker_page_url(worker_id, threads=threads, ort=ort_build)
    start = time.perf_counter()
    driver = _driver()
    pw = await driver.acquire()
    pw_browser: Any = None
    try:
        try:
            pw_browser = await pw.chromium.launch(
                executable_path=str(pdeathsig_wrapper(exe, workdir)),
                args=flags,
                headless=headless,
                timeout=timeout * 1000,
                chromium_sandbox=False,
            )
            page = await pw_browser.new_page()
            await page.goto(url, wait_until="commit", timeout=timeout * 1000)
        except Exception as exc:
            if isinstance(exc, BackendUnavailableError):
                raise
            raise BrowserLaunchError(
                f"Playwright could not start Chromium ({exe}): {exc}", details={"binary": str(exe)}
            ) from exc
        worker = PlaywrightWorker(server, worker_id, "chromium", pw_browser, page, driver, workdir)
        conn = await wait_for_hello(
            server,
            worker_id,
            timeout,
            what="Chromium (Playwright)",
            failed=lambda: "browser disconnected" if worker._gone else None,
        )
    except BaseException:
        if pw_browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pw_browser.close(), 5)
        await driver.release()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    worker.capabilities = conn.capabilities
    worker.launch_ms = (time.perf_counter() - start) * 1000
    return worker


async def _launch(server: WebAccelServer, req: launchers.LaunchRequest) -> PlaywrightWorker:
    return await launch_playwright(server, browser=req.browser, **req.options)


def _chromium_status() -> dict[str, Any]:
    from webaccel.errors import WebAccelError

    try:
        find_chromium()
        chromium = True
    except WebAccelError:
        chromium = False
    pw = package_version("playwright")
    return {
        "launcher": "playwright",
        "browser": "chromium",
        "ok": bool(pw and chromium),
        "playwright": pw,
        "why": ""
        if pw
        else "pip install playwright (never `playwright install`: the system Chromium is used)",
    }


def _firefox_status() -> dict[str, Any]:
    return {
        "launcher": "playwright", "browser": "firefox", "ok": False, "why": NO_PLAYWRIGHT_FIREFOX
    }


launchers.register(launchers.Launcher("playwright", "chromium", _launch, _chromium_status))
launchers.register(launchers.Launcher("playwright", "firefox", _launch, _firefox_status))
