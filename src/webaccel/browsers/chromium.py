"""Chromium as a subprocess: where to find it and which flags it needs here."""

from __future__ import annotations

import os
from pathlib import Path

from webaccel.browsers.process import find_executable

# /usr/bin/chromium is Debian's shell wrapper (adds flags, prints a spurious
# error); the real binary is beside it in /usr/lib (FACTS.md).
CANDIDATES = (
    "/usr/lib/chromium/chromium",
    "/usr/lib/chromium-browser/chromium-browser",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
)


def find_chromium(explicit: str | os.PathLike[str] | None = None) -> Path:
    return find_executable(
        "Chromium",
        "WEBACCEL_CHROMIUM",
        CANDIDATES,
        "apt-get install chromium chromium-driver",
        explicit,
    )


def chromium_flags(
    profile_dir: Path, *, server_host: str = "127.0.0.1", headless: bool = True, webnn: bool = True
) -> list[str]:
    exclude = "EXCLUDE 127.0.0.1, EXCLUDE localhost"
    if server_host not in ("127.0.0.1", "localhost", "::1"):
        exclude += f", EXCLUDE {server_host}"
    flags = [
        f"--user-data-dir={profile_dir}",
        "--no-sandbox",  # we run as root in CI; the sandbox refuses to start as root
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-breakpad",
        "--disable-dev-shm-usage",
        "--mute-audio",
        # Only loopback (and our server) resolves: the browser may reach nothing else.
        f"--host-resolver-rules=MAP * ~NOTFOUND, {exclude}",
        # WebGPU needs this on Linux; without a GPU it gives SwiftShader (reported as software).
        "--enable-unsafe-webgpu",
        # Background tabs and timers must not be throttled in a worker.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ]
    if webnn:
        # Makes navigator.ml appear; where the platform has no WebNN backend the
        # page's probe reports why (never use the blink flag alone: FACTS.md).
        flags.append("--enable-features=WebMachineLearningNeuralNetwork")
    if headless:
        flags.append("--headless")
    return flags
