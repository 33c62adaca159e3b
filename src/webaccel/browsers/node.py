"""The headless WebGPU worker: Node 22 + Dawn (npm ``webgpu``) running the page runtime.

``launch_node_worker(server)`` starts ``web/node-worker.mjs`` under Node as a
:class:`~webaccel.browsers.process.BrowserProcess` (own process group,
PDEATHSIG) and returns a :class:`~webaccel.browsers.worker.BrowserWorker` of
browser family ``"node-webgpu"`` once it has said hello over the bridge.  It
speaks the same protocol, runs the same ``runtime.mjs`` and reports the same
capabilities as a browser page, so the pool treats it like one; on a GPU
server it serves WebGPU without a browser (docs/FACTS.md: Dawn finds an NVIDIA GPU
through Vulkan).

Where things come from (first match wins):

* Node >= 22: ``$WEBACCEL_NODE``, then the npm package ``node@22`` that
  ``make setup`` installs (``node_modules/node/bin/node``), then ``node`` on PATH.
* Dawn: ``$WEBACCEL_DAWN`` (a ``dawn.node`` file), else the npm package
  ``webgpu`` resolved from the worker script (``node_modules/webgpu``).
* onnxruntime-web: the package's vendored files (``web/vendor/ort``); the build
  is ``build=``, else ``$WEBACCEL_NODE_BUILD``, else ``all`` (JSEP).
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from webaccel.browsers.process import BrowserProcess
from webaccel.browsers.worker import BrowserWorker
from webaccel.errors import BrowserLaunchError, BrowserNotFoundError
from webaccel.server import WebAccelServer

FAMILY = "node-webgpu"
MIN_NODE_MAJOR = 22  # global WebSocket, and the Node the webgpu package is built and tested for
WEB_DIR = Path(__file__).resolve().parent.parent / "web"
WORKER_SCRIPT = WEB_DIR / "node-worker.mjs"
# src/webaccel/browsers/node.py -> the repository root (`make setup` fills its node_modules)
REPO_ROOT = Path(__file__).resolve().parents[3]
# Dawn withholds shader-f16 on NVIDIA/Vulkan unless this toggle is on (docs/FACTS.md).
F16_FLAG = "enable-dawn-features=vulkan_enable_f16_on_nvidia"


@functools.cache
def node_version(binary: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.match(r"v(\d+)\.(\d+)\.(\d+)", out.strip())
    return tuple(int(x) for x in m.groups()) if m else None


def find_node(explicit: str | os.PathLike[str] | None = None) -> Path:
    """A Node binary of version >= 22, or :class:`BrowserNotFoundError` saying what to do."""
    wanted = explicit or os.environ.get("WEBACCEL_NODE")
    candidates = (
        [str(wanted)]
        if wanted
        else [
            str(REPO_ROOT / "node_modules" / "node" / "bin" / "node"),
            shutil.which("node") or "",
        ]
    )
    seen: list[str] = []
    for cand in candidates:
        if not cand or not os.path.isfile(cand) or not os.access(cand, os.X_OK):
            continue
        version = node_version(cand)
        if version and version[0] >= MIN_NODE_MAJOR:
            return Path(cand)
        seen.append(
            f"{cand} ({'v' + '.'.join(map(str, version)) if version else 'unknown version'})"
        )
    found = f"; found only {', '.join(seen)}" if seen else ""
    if wanted and not seen:
        found = f"; {wanted!s} does not exist or is not executable (WEBACCEL_NODE)"
    raise BrowserNotFoundError(
        f"the headless WebGPU worker needs Node >= {MIN_NODE_MAJOR}{found}. Run `make setup` "
        "(it installs the npm package node@22 into node_modules) or set WEBACCEL_NODE",
        details={"candidates": candidates},
    )


def dawn_available() -> str | None:
    """Why Dawn cannot load here, or None when dawn.node is present."""
    explicit = os.environ.get("WEBACCEL_DAWN")
    if explicit:
        return None if os.path.isfile(explicit) else f"WEBACCEL_DAWN={explicit} does not exist"
    if (REPO_ROOT / "node_modules" / "webgpu" / "package.json").is_file():
        return None
    return "the npm package webgpu (Dawn) is not installed: run `make setup`"


async def launch_node_worker(
    server: WebAccelServer,
    *,
    worker_id: str | None = None,
    node: str | os.PathLike[str] | None = None,
    build: str | None = None,
    threads: int = 1,
    f16: bool = True,
    dawn_flags: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    heartbeat_ms: int = 5000,
) -> BrowserWorker:
    """Start a Node WebGPU worker; ready once it says hello on the bridge.

    ``build``: ``all`` (JSEP, what Chromium pages load; also runs ``wasm``),
    ``webgpu`` (onnxruntime-web's native WebGPU EP) or ``wasm`` (CPU only, no
    Dawn).  JSEP is the default: with graph capture (which only it replays
    correctly) MiniLM ran in 2.38 ms at 1x16 and 6.66 ms at 32x128 on an H100,
    against 16.74 and 16.52 ms on the WebGPU EP build (results/gpu, run 8).  ``threads``:
    WASM threads.  ``f16`` turns on Dawn's shader-f16 toggle for NVIDIA.
    ``env`` adds variables (e.g. ``VK_ICD_FILENAMES`` for a software Vulkan).
    """
    build = build or os.environ.get("WEBACCEL_NODE_BUILD") or "all"
    exe = find_node(node)
    if not WORKER_SCRIPT.is_file():
        raise BrowserLaunchError(f"{WORKER_SCRIPT} is missing from the webaccel package")
    worker_id = worker_id or f"node-{uuid.uuid4().hex[:8]}"
    flags = list(dawn_flags)
    if f16 and F16_FLAG not in flags:
        flags.append(F16_FLAG)
    argv = [
        str(exe),
        str(WORKER_SCRIPT),
        "--server",
        server.url,
        "--worker",
        worker_id,
        "--build",
        build,
        "--threads",
        str(threads),
        "--heartbeat-ms",
        str(heartbeat_ms),
    ]
    for flag in flags:
        argv += ["--dawn-flag", flag]
    if os.environ.get("WEBACCEL_DAWN"):
        argv += ["--dawn", os.environ["WEBACCEL_DAWN"]]
    child_env = {**os.environ, **(env or {}), "WEBACCEL_TOKEN": server.token}
    # Dawn's Vulkan loader wants a runtime dir; a bare GPU server often has none (docs/FACTS.md).
    child_env.setdefault("XDG_RUNTIME_DIR", tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="webaccel-node-"))
    log_path = Path(tempfile.mkstemp(prefix="webaccel-node-", suffix=".log")[1])
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    process = await loop.run_in_executor(
        None, lambda: BrowserProcess(argv, profile_dir=workdir, log_path=log_path, env=child_env)
    )
    worker = BrowserWorker(server, worker_id, FAMILY, process)
    hello = asyncio.ensure_future(server.hub.wait_for(worker_id, timeout))
    try:
        while not hello.done():
            if process.returncode is not None:
                raise BrowserLaunchError(
                    f"the Node WebGPU worker exited with code {process.returncode} before it said "
                    f"hello. Its output ends with:\n{process.log_tail()}",
                    details={"node": str(exe), "returncode": process.returncode},
                )
            await asyncio.wait({hello}, timeout=0.05)
        try:
            conn = hello.result()
        except TimeoutError:
            raise BrowserLaunchError(
                f"the Node WebGPU worker started but did not say hello within {timeout:.0f} s "
                f"(is {server.url} reachable?). Its output ends with:\n{process.log_tail()}"
            ) from None
    except BaseException:
        hello.cancel()
        await process.terminate_async()
        raise
    worker.capabilities = conn.capabilities
    worker.launch_ms = (time.perf_counter() - start) * 1000
    return worker
