"""Browser launchers: each gives a ready :class:`~webaccel.browsers.worker.BrowserWorker`."""
from __future__ import annotations

from typing import Any

from webaccel.browsers.worker import BrowserWorker, backends_from_capabilities, launch_chromium
from webaccel.errors import BackendUnavailableError
from webaccel.server import WebAccelServer

__all__ = ["BrowserWorker", "backends_from_capabilities", "launch_chromium", "launch_worker"]

BROWSER_ALIASES = {"chrome": "chromium", "chromium": "chromium", "edge": "chromium"}


async def launch_worker(server: WebAccelServer, browser: str = "chromium", **options: Any) -> BrowserWorker:
    family = BROWSER_ALIASES.get(browser, browser)
    if family == "chromium":
        return await launch_chromium(server, **options)
    raise BackendUnavailableError(
        f"no launcher for browser {browser!r} yet; use 'chromium' (aliases: chrome, edge)")
