"""Chromium as a subprocess: where to find it, which flags it needs here, and its sandbox.

The sandbox (:func:`sandbox_plan`).  Chromium refuses to start sandboxed as
root, so as root we run it as an unprivileged account
(:func:`~webaccel.browsers.process.browser_user`) with the sandbox on; not as
root, we simply drop ``--no-sandbox``.  Chromium's Linux sandbox needs either
unprivileged user namespaces (the "namespace sandbox": CLONE_NEWUSER, NEWPID,
NEWNET) or the setuid ``chrome-sandbox`` helper beside the binary (Debian's
``chromium-sandbox`` package).  Both are probed once, as the account that
will run the browser; where neither works the sandbox stays off and the reason
is kept for ``webaccel doctor``.  ``WEBACCEL_SANDBOX=off`` turns it off
(browsers then run as root again); ``=on`` makes a missing sandbox an error.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from webaccel.bridge.origin import STABLE_HOST
from webaccel.browsers.process import BrowserUser, browser_user, find_executable
from webaccel.errors import BrowserLaunchError

# /usr/bin/chromium is Debian's shell wrapper (adds flags, prints a spurious
# error); the real binary is beside it in /usr/lib (docs/FACTS.md).
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


@dataclass(frozen=True)
class SandboxPlan:
    """How our Chromium runs: sandboxed or not, as which user, and why."""

    sandbox: bool
    user: BrowserUser | None  # None: as ourselves
    reason: str

    def describe(self) -> dict[str, object]:
        return {
            "sandbox": self.sandbox,
            "user": self.user.name if self.user else None,
            "reason": self.reason,
        }


def _namespaces_work(user: BrowserUser | None) -> tuple[bool, str]:
    """Can ``user`` create the user, PID and network namespaces the sandbox needs?

    Probed with util-linux ``unshare`` (a system binary every user can run; our
    own Python may live where the browser user cannot read it).
    """
    unshare = shutil.which("unshare") or shutil.which("unshare", path="/usr/bin:/bin")
    if unshare is None:
        return False, "cannot probe user namespaces: util-linux `unshare` is not installed"
    try:
        proc = subprocess.run(
            [unshare, "--user", "--pid", "--net", "--fork", "true"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
            user=user.uid if user else None,
            group=user.gid if user else None,
            extra_groups=[] if user else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return False, f"could not probe user namespaces: {exc}"
    if proc.returncode == 0:
        return True, "unprivileged user namespaces work"
    return False, (
        f"`unshare --user --pid --net` fails ({proc.stderr.strip() or proc.returncode}): user "
        "namespaces are off (sysctl user.max_user_namespaces / "
        "kernel.unprivileged_userns_clone, AppArmor, or a container's seccomp profile)"
    )


def _setuid_helper(exe: Path) -> Path | None:
    helper = exe.parent / "chrome-sandbox"
    with_suid = helper.is_file() and helper.stat().st_uid == 0
    return helper if with_suid and helper.stat().st_mode & stat.S_ISUID else None


@functools.cache
def sandbox_plan(exe: Path | None = None) -> SandboxPlan:
    """Decide once per process (see the module docstring)."""
    mode = os.environ.get("WEBACCEL_SANDBOX", "auto").strip().lower()
    if mode in ("0", "off", "no", "false"):
        return SandboxPlan(False, None, "turned off by WEBACCEL_SANDBOX")
    exe = exe or find_chromium()
    user = browser_user() if os.geteuid() == 0 else None
    who = f"as the unprivileged user {user.name!r}" if user else "as ourselves (not root)"
    works, why = _namespaces_work(user)
    if works:
        return SandboxPlan(True, user, f"on, {who}: namespace sandbox ({why})")
    helper = _setuid_helper(exe)
    if helper is not None:
        return SandboxPlan(True, user, f"on, {who}: setuid sandbox ({helper})")
    reason = (
        f"off, {who}: {why}; and no setuid chrome-sandbox beside {exe} "
        "(apt-get install chromium-sandbox, or enable user namespaces)"
    )
    if mode in ("1", "on", "yes", "true"):
        raise BrowserLaunchError(f"WEBACCEL_SANDBOX=on but the Chromium sandbox is {reason}")
    return SandboxPlan(False, user, reason)


def chromium_flags(
    profile_dir: Path,
    *,
    server_host: str = "127.0.0.1",
    headless: bool = True,
    webnn: bool = True,
    sandbox: bool = False,
    stable_host_to: str | None = None,
) -> list[str]:
    """``sandbox``: leave Chromium's sandbox on (only where :func:`sandbox_plan` says it
    works; as root Chromium refuses to start with it). ``stable_host_to``: the server's
    ``host:port`` that ``webaccel.localhost`` maps to (see :mod:`webaccel.bridge.origin`)."""
    exclude = "EXCLUDE 127.0.0.1, EXCLUDE localhost"
    if server_host not in ("127.0.0.1", "localhost", "::1"):
        exclude += f", EXCLUDE {server_host}"
    if stable_host_to:  # the first matching MAP rule wins
        exclude = f"MAP {STABLE_HOST} {stable_host_to}, MAP * ~NOTFOUND, {exclude}"
    else:
        exclude = f"MAP * ~NOTFOUND, {exclude}"
    flags = [
        f"--user-data-dir={profile_dir}",
        *([] if sandbox else ["--no-sandbox"]),
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
        f"--host-resolver-rules={exclude}",
        # WebGPU needs this on Linux; without a GPU it gives SwiftShader (reported as software).
        "--enable-unsafe-webgpu",
        # Background tabs and timers must not be throttled in a worker.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ]
    if webnn:
        # Makes navigator.ml appear; where the platform has no WebNN backend the
        # page's probe reports why (never use the blink flag alone: docs/FACTS.md).
        flags.append("--enable-features=WebMachineLearningNeuralNetwork")
    if headless:
        flags.append("--headless")
    return flags
