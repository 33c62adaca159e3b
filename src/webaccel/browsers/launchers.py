"""The launcher registry: each launcher module adds itself here when imported.

A :class:`Launcher` is one way to start one browser family ("subprocess" +
"chromium", "selenium" + "firefox", ...): a ``launch`` coroutine and,
optionally, a cheap ``status`` row for ``webaccel doctor``.  This module
imports no launcher, and no launcher is imported to be found:
``webaccel.browsers`` (the package) imports the built-in launcher modules,
which call :func:`register`; :func:`~webaccel.browsers.launch_worker` and
:func:`~webaccel.browsers.launching.launcher_status` only read the table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webaccel.browsers.worker import BrowserWorker
    from webaccel.server import WebAccelServer

# The order rows appear in (``webaccel doctor``) and the names launch_worker accepts.
NAMES = ("subprocess", "selenium", "playwright", "grid")
FAMILIES = ("chromium", "firefox")


@dataclass(frozen=True)
class LaunchRequest:
    """What ``launch_worker`` was asked for, handed to the launcher as is."""

    browser: str  # the family: "chromium" | "firefox"
    grid_url: str | None = None  # a Selenium Grid hub (the "grid" launcher)
    public_url: str | None = None  # the server address remote nodes can reach
    options: dict[str, Any] = field(default_factory=dict)  # the launcher's own keywords


LaunchFn = Callable[["WebAccelServer", LaunchRequest], Awaitable["BrowserWorker"]]
StatusFn = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Launcher:
    name: str  # one of NAMES
    browser: str  # one of FAMILIES
    launch: LaunchFn
    # One row for ``webaccel doctor``: {"launcher", "browser", "ok", "why", ...};
    # finds binaries and packages only, starts no browser.  None: no row.
    status: StatusFn | None = None


_LAUNCHERS: dict[tuple[str, str], Launcher] = {}


def register(launcher: Launcher) -> Launcher:
    if launcher.name not in NAMES or launcher.browser not in FAMILIES:
        raise ValueError(
            f"launcher ({launcher.name!r}, {launcher.browser!r}) is not one of "
            f"{NAMES} x {FAMILIES}"
        )
    _LAUNCHERS[(launcher.name, launcher.browser)] = launcher
    return launcher


def find(name: str, browser: str) -> Launcher | None:
    return _LAUNCHERS.get((name, browser))


def registered() -> list[Launcher]:
    """Every launcher, by family then by launcher name (the order of NAMES)."""
    return sorted(
        _LAUNCHERS.values(), key=lambda x: (FAMILIES.index(x.browser), NAMES.index(x.name))
    )


__all__ = [
    "FAMILIES",
    "NAMES",
    "LaunchRequest",
    "Launcher",
    "find",
    "register",
    "registered",
]
