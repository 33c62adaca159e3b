"""Firefox (ESR) as a subprocess, kept off the network by a ``user.js``.

``firefox-esr --headless --profile DIR --no-remote URL`` (docs/FACTS.md).  The
profile's ``user.js`` points every proxy at a dead loopback port except for
loopback and our server, and turns off telemetry, updates, safebrowsing,
remote settings and captive-portal checks, so the browser contacts nothing
but the worker page's server.

Firefox here has no WebGPU adapter headless and no WebNN; the page probes and
reports that, and onnxruntime-web runs on WASM.  Selenium and Playwright
cannot drive this Firefox (no geckodriver; Playwright needs its own build):
see ``selenium_launcher.NO_GECKODRIVER`` and
``playwright_launcher.NO_PLAYWRIGHT_FIREFOX``.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

from webaccel.browsers import launchers
from webaccel.browsers.launching import tool_version, wait_for_hello
from webaccel.browsers.process import BrowserProcess, browser_user, find_executable, hand_over
from webaccel.browsers.worker import BrowserWorker
from webaccel.server import WebAccelServer

CANDIDATES = (
    "firefox-esr",
    "firefox",
    "/usr/lib/firefox-esr/firefox-esr",
    "/usr/lib/firefox/firefox",
)

# Port 9 (discard) on loopback: nothing listens, so a proxied request fails at once.
DEAD_PROXY = ("127.0.0.1", 9)


def find_firefox(explicit: str | os.PathLike[str] | None = None) -> Path:
    return find_executable(
        "Firefox", "WEBACCEL_FIREFOX", CANDIDATES, "apt-get install firefox-esr", explicit
    )


def user_prefs(server_host: str = "127.0.0.1") -> dict[str, object]:
    no_proxy = ", ".join(dict.fromkeys(["localhost", "127.0.0.1", "[::1]", server_host]))
    host, port = DEAD_PROXY
    prefs: dict[str, object] = {
        # Everything but loopback/our server goes to a dead proxy.
        "network.proxy.type": 1,
        "network.proxy.share_proxy_settings": True,
        "network.proxy.no_proxies_on": no_proxy,
        "network.proxy.allow_hijacking_localhost": False,
        "network.dns.disablePrefetch": True,
        "network.prefetch-next": False,
        "network.predictor.enabled": False,
        "network.http.speculative-parallel-limit": 0,
        "network.captive-portal-service.enabled": False,
        "network.connectivity-service.enabled": False,
        "network.trr.mode": 5,
        # Telemetry, studies, crash reports, updates, remote settings.
        "toolkit.telemetry.enabled": False,
        "toolkit.telemetry.unified": False,
        "toolkit.telemetry.server": "",
        "datareporting.healthreport.uploadEnabled": False,
        "datareporting.policy.dataSubmissionEnabled": False,
        "app.normandy.enabled": False,
        "app.shield.optoutstudies.enabled": False,
        "app.update.enabled": False,
        "app.update.auto": False,
        "extensions.update.enabled": False,
        "extensions.getAddons.cache.enabled": False,
        "extensions.blocklist.enabled": False,
        "services.settings.server": f"http://{host}:{port}/",
        "browser.safebrowsing.malware.enabled": False,
        "browser.safebrowsing.phishing.enabled": False,
        "browser.safebrowsing.downloads.enabled": False,
        "browser.safebrowsing.downloads.remote.enabled": False,
        "browser.region.update.enabled": False,
        "browser.search.update": False,
        "browser.newtabpage.enabled": False,
        "browser.startup.homepage_override.mstone": "ignore",
        "browser.shell.checkDefaultBrowser": False,
        "browser.tabs.crashReporting.sendReport": False,
        "browser.crashReports.unsubmittedCheck.autoSubmit2": False,
        "browser.ping-centre.telemetry": False,
        "browser.aboutwelcome.enabled": False,
        "dom.webgpu.enabled": True,  # the page probes; headless here it finds no adapter
        "dom.min_background_timeout_value": 4,  # worker tabs must not be throttled
    }
    for scheme in ("http", "ssl", "socks"):
        prefs[f"network.proxy.{scheme}"] = host
        prefs[f"network.proxy.{scheme}_port"] = port
    return prefs


def write_profile(profile: Path, server_host: str = "127.0.0.1") -> Path:
    profile.mkdir(parents=True, exist_ok=True)
    lines = [
        f"user_pref({json.dumps(k)}, {json.dumps(v)});" for k, v in user_prefs(server_host).items()
    ]
    path = profile / "user.js"
    path.write_text("\n".join(lines) + "\n")
    return path


class FirefoxWorker(BrowserWorker):
    launcher = "subprocess"

    def pids(self) -> list[int]:
        from webaccel.browsers.launching import descendants

        return descendants(self.process.pid) if self.process is not None else []


async def launch_firefox(
    server: WebAccelServer,
    *,
    worker_id: str | None = None,
    binary: str | None = None,
    timeout: float = 45.0,
    headless: bool = True,
    threads: int = 1,
    ort_build: str = "auto",
    extra_flags: list[str] | None = None,
) -> FirefoxWorker:
    """Start headless Firefox on the worker page; ready once the page says hello."""
    exe = find_firefox(binary)
    worker_id = worker_id or f"firefox-{uuid.uuid4().hex[:8]}"
    # As root, Firefox runs as the unprivileged browser user too (its content
    # sandbox then works as designed, and a compromised page is not root).
    off = os.environ.get("WEBACCEL_SANDBOX", "").strip().lower() in ("0", "off", "no", "false")
    user = browser_user() if os.geteuid() == 0 and not off else None
    profile = Path(tempfile.mkdtemp(prefix="webaccel-firefox-"))
    write_profile(profile, server.host)
    if user is not None:
        hand_over(profile, user)
    log_path = Path(tempfile.mkstemp(prefix="webaccel-firefox-", suffix=".log")[1])
    url = server.worker_page_url(worker_id, threads=threads, ort=ort_build)
    argv = [
        str(exe),
        *(["--headless"] if headless else []),
        "--profile",
        str(profile),
        "--no-remote",
        *(extra_flags or []),
        url,
    ]
    env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "MOZ_DISABLE_AUTO_SAFE_MODE": "1"}
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    process = await loop.run_in_executor(
        None,
        lambda: BrowserProcess(argv, profile_dir=profile, log_path=log_path, env=env, user=user),
    )
    try:
        conn = await wait_for_hello(
            server,
            worker_id,
            timeout,
            what="Firefox",
            failed=lambda: (
                None
                if process.returncode is None
                else f"Firefox exited with code {process.returncode}; its output ends with:\n"
                f"{process.log_tail()}"
            ),
        )
    except BaseException:
        await process.terminate_async()
        server.credentials.forget(worker_id)
        raise
    worker = FirefoxWorker(server, worker_id, "firefox", process)
    worker.capabilities = conn.capabilities
    worker.launch_ms = (time.perf_counter() - start) * 1000
    return worker


async def _launch(server: WebAccelServer, req: launchers.LaunchRequest) -> FirefoxWorker:
    return await launch_firefox(server, **req.options)


def _status() -> dict[str, object]:
    from webaccel.errors import WebAccelError

    try:
        firefox: str | None = str(find_firefox())
        why = ""
    except WebAccelError as exc:
        firefox, why = None, exc.message
    return {
        "launcher": "subprocess",
        "browser": "firefox",
        "ok": firefox is not None,
        "binary": firefox,
        "version": tool_version([firefox, "--version"]) if firefox else None,
        "why": why,
    }


launchers.register(launchers.Launcher("subprocess", "firefox", _launch, _status))
