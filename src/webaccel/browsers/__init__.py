"""Browser launchers: each gives a ready :class:`~webaccel.browsers.worker.BrowserWorker`.

``launch_worker(server, browser, launcher=...)`` picks how the browser starts;
the page, the bridge and the reported capabilities are the same whichever:

=============  ==========================================  ====================
launcher       chromium                                    firefox
=============  ==========================================  ====================
subprocess     our own process group (default, fastest)    ``firefox-esr`` + user.js
selenium       local chromedriver                          only with a geckodriver
playwright     Playwright's driver, system Chromium        not possible (own build)
grid           a Selenium Grid 4 session (``grid_url=``)   whatever the nodes offer
=============  ==========================================  ====================
"""

from __future__ import annotations

import os
from typing import Any

from webaccel.browsers.worker import BrowserWorker, backends_from_capabilities, launch_chromium
from webaccel.errors import BackendUnavailableError
from webaccel.server import WebAccelServer

__all__ = [
    "BROWSER_ALIASES",
    "LAUNCHERS",
    "BrowserWorker",
    "backends_from_capabilities",
    "launch_chromium",
    "launch_worker",
]

BROWSER_ALIASES = {
    "chrome": "chromium",
    "chromium": "chromium",
    "edge": "chromium",
    "firefox": "firefox",
    "firefox-esr": "firefox",
}
LAUNCHERS = ("subprocess", "selenium", "playwright", "grid")


async def launch_worker(
    server: WebAccelServer,
    browser: str = "chromium",
    *,
    launcher: str | None = None,
    grid_url: str | None = None,
    public_url: str | None = None,
    **options: Any,
) -> BrowserWorker:
    """Start one worker page in ``browser`` via ``launcher`` (default: ``$WEBACCEL_LAUNCHER``
    or "subprocess"; "grid" when ``grid_url`` is given).  ``public_url`` is the server
    address Grid nodes can reach (needed when the server listens on 0.0.0.0); local
    launchers ignore it."""
    if browser == "node-webgpu":  # the headless WebGPU worker (Node + Dawn), no browser
        from webaccel.browsers.node import launch_node_worker

        return await launch_node_worker(server, **options)
    family = BROWSER_ALIASES.get(browser)
    if family is None:
        raise BackendUnavailableError(
            f"no launcher for browser {browser!r}; use 'chromium' (aliases: chrome, edge) or "
            "'firefox'"
        )
    how = launcher or ("grid" if grid_url else os.environ.get("WEBACCEL_LAUNCHER", "subprocess"))
    if how == "subprocess":
        if family == "firefox":
            from webaccel.browsers.firefox import launch_firefox

            return await launch_firefox(server, **options)
        return await launch_chromium(server, **options)
    if how == "selenium":
        from webaccel.browsers.selenium_launcher import launch_selenium

        return await launch_selenium(server, browser=family, **options)
    if how == "playwright":
        from webaccel.browsers.playwright_launcher import launch_playwright

        return await launch_playwright(server, browser=family, **options)
    if how == "grid":
        if not grid_url:
            raise BackendUnavailableError("launcher 'grid' needs grid_url='http://HUB:4444'")
        from webaccel.browsers.grid import launch_grid

        return await launch_grid(server, grid_url, browser=family, public_url=public_url, **options)
    raise BackendUnavailableError(f"unknown launcher {how!r}; use one of {', '.join(LAUNCHERS)}")
