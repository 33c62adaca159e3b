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

# The built-in launchers register themselves (webaccel.browsers.launchers) when imported.
from webaccel.browsers import firefox, grid, playwright_launcher, selenium_launcher  # noqa: F401
from webaccel.browsers import launchers as _launchers
from webaccel.browsers.node import launch_node_worker
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
LAUNCHERS = _launchers.NAMES


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
    launchers ignore it.  Launchers are looked up in :mod:`webaccel.browsers.launchers`."""
    if browser == "node-webgpu":  # the headless WebGPU worker (Node + Dawn), no browser
        return await launch_node_worker(server, **options)
    family = BROWSER_ALIASES.get(browser)
    if family is None:
        raise BackendUnavailableError(
            f"no launcher for browser {browser!r}; use 'chromium' (aliases: chrome, edge) or "
            "'firefox'"
        )
    how = launcher or ("grid" if grid_url else os.environ.get("WEBACCEL_LAUNCHER", "subprocess"))
    found = _launchers.find(how, family)
    if found is None:
        raise BackendUnavailableError(
            f"unknown launcher {how!r}; use one of {', '.join(LAUNCHERS)}"
        )
    request = _launchers.LaunchRequest(family, grid_url, public_url, dict(options))
    return await found.launch(server, request)
