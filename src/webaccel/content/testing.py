"""Local gateway peers for tests and benchmarks, with optional faults.

``python -m webaccel.content.testing --root DIR [--rate BPS] [--corrupt P]
[--delay S] [--token T]`` serves the block store at DIR through the gateway on
127.0.0.1 (port 0 unless ``--port``) and prints ``LISTENING <url>`` once ready.

* ``--rate``: cap the server's total egress (a token bucket over every
  response body, all connections together) - a peer on a slow uplink.
* ``--corrupt``: with this probability, flip one byte of a block/file body
  (the status and headers stay 200 and plausible) - a lying peer.
* ``--delay``: sleep this long before every answer - a slow, far peer.

:func:`spawn_peer` starts one as a subprocess (so peers do not share the
client's GIL) and :func:`serve_in_thread` runs any ASGI app in this process.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BACKLOG = 4096


class TokenBucket:
    def __init__(self, rate: float, burst: int = 64 * 1024) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.t = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: int) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
                self.t = now
                if self.tokens >= n:
                    self.tokens -= n
                    return
                await asyncio.sleep((n - self.tokens) / self.rate)


class Faults:
    """ASGI middleware: bandwidth cap, corruption, delay (see module docstring)."""

    PIECE = 64 * 1024

    def __init__(self, app: ASGIApp, *, rate: float | None = None, corrupt: float = 0.0,
                 delay: float = 0.0, seed: int = 0) -> None:
        self.app = app
        # a quarter second of burst: a process scheduled late (busy machine)
        # catches up instead of losing the tokens it slept through
        self.bucket = TokenBucket(rate, burst=max(self.PIECE, int(rate // 4))) if rate else None
        self.corrupt = corrupt
        self.delay = delay
        self.rng = random.Random(seed)
        self.corrupted = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/ipfs/"):
            await self.app(scope, receive, send)
            return
        if self.delay:
            await asyncio.sleep(self.delay)
        state = {"ok": False, "flip": False}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["ok"] = message["status"] in (200, 206)
                state["flip"] = (state["ok"] and self.corrupt > 0
                                 and self.rng.random() < self.corrupt)
                await send(message)
                return
            if message["type"] == "http.response.body":
                body: bytes = message.get("body", b"")
                if state["flip"] and body:
                    i = self.rng.randrange(len(body))
                    body = body[:i] + bytes([body[i] ^ 0xFF]) + body[i + 1 :]
                    state["flip"] = False
                    self.corrupted += 1
                if self.bucket is not None and body:
                    more = message.get("more_body", False)
                    for off in range(0, len(body), self.PIECE):
                        piece = body[off : off + self.PIECE]
                        await self.bucket.take(len(piece))
                        last = off + self.PIECE >= len(body)
                        await send({"type": "http.response.body", "body": piece,
                                    "more_body": more or not last})
                    return
                await send({**message, "body": body})
                return
            await send(message)

        await self.app(scope, receive, wrapped)


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only then (see
    # webaccel.server.WebAccelServer.start)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    return sock


@dataclass
class ThreadServer:
    url: str
    server: object
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True  # type: ignore[attr-defined]
        self.thread.join(timeout=10)


def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1") -> ThreadServer:
    """Run ``app`` under uvicorn in a daemon thread; returns once it accepts connections."""
    import uvicorn

    sock = bind(host)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            backlog=BACKLOG, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    t = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("gateway thread did not start")
        time.sleep(0.01)
    return ThreadServer(f"http://{host}:{port}", server, t)


@dataclass
class PeerProcess:
    url: str
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def spawn_peer(root: str | os.PathLike[str], *, rate: float | None = None, corrupt: float = 0.0,
               delay: float = 0.0, token: str | None = None, seed: int = 0) -> PeerProcess:
    cmd = [sys.executable, "-m", "webaccel.content.testing", "--root", str(root),
           "--corrupt", str(corrupt), "--delay", str(delay), "--seed", str(seed)]
    if rate:
        cmd += ["--rate", str(rate)]
    if token:
        cmd += ["--token", token]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        raise RuntimeError("peer process did not start")
    return PeerProcess(line.split()[1], proc)


@contextlib.contextmanager
def peers(specs: list[dict[str, object]]) -> Iterator[list[PeerProcess]]:
    started: list[PeerProcess] = []
    try:
        for spec in specs:
            started.append(spawn_peer(**spec))  # type: ignore[arg-type]
        yield started
    finally:
        for p in started:
            p.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m webaccel.content.testing")
    ap.add_argument("--root", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--corrupt", type=float, default=0.0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--token", default=None)
    args = ap.parse_args(argv)

    import uvicorn

    from webaccel.content.gateway import create_gateway_app
    from webaccel.content.store import BlockStore

    store = BlockStore(Path(args.root), fsync=False)
    app = Faults(create_gateway_app(store, upload_token=args.token), rate=args.rate,
                 corrupt=args.corrupt, delay=args.delay, seed=args.seed)
    sock = bind("127.0.0.1", args.port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            backlog=BACKLOG, timeout_keep_alive=30)
    server = uvicorn.Server(config)

    async def run() -> None:
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.01)
        print(f"LISTENING http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
        await task

    asyncio.run(run())


if __name__ == "__main__":
    main()
