"""``webaccel serve``: run the server (and optionally browser workers) until interrupted."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from rich.console import Console

from webaccel.engine import Engine


async def serve_forever(host: str, port: int, browsers: int) -> None:
    console = Console()
    engine = Engine(host=host, port=port, max_connections=max(browsers, 1))
    await engine.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        for _ in range(browsers):
            await engine.any_worker()
        console.print(f"webaccel serving on {engine.server.url}  (token: {engine.server.token})")
        console.print(f"worker page: {engine.server.worker_page_url('manual-1')}")
        await stop.wait()
    finally:
        await engine.close()
