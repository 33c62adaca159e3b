"""``webaccel serve``: one port for the bridge, worker page, model files, the
trustless gateway, the OpenAI-compatible API, Prometheus metrics and the
dashboard; browsers that join over the network become pool workers.
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import Any

from webaccel.engine import Engine
from webaccel.errors import InvalidInputError
from webaccel.progress import stage
from webaccel.terminal import make_console

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def live_snapshot(engine: Engine) -> dict[str, Any]:
    """What the dashboard and Prometheus show about the pool right now."""
    stats = engine.pool.stats()
    workers = []
    for wid, info in stats["workers"].items():
        worker = engine.pool.workers.get(wid)
        workers.append({
            "id": wid,
            "browser": info["browser"],
            "state": info["state"],
            "backends": worker.available_backends() if worker is not None else [],
            "models": info["loaded"],
            "inflight": info["running"],
            "sessions": info["sessions"],  # streams and multi-step jobs holding the worker
            "served": info["served"],
        })
    return {"workers": workers, "queues": stats["queued"], "running": stats["running"],
            "pending": stats["pending"], "recovery_s": stats["recovery_s"],
            "quarantined": stats["quarantined"]}


def can_launch(launcher: str | None) -> tuple[bool, str]:
    """Whether the pool could start a worker here, and if not, why."""
    if launcher in ("grid", "selenium", "playwright"):
        return True, f"{launcher} launcher"
    from webaccel.browsers.chromium import find_chromium
    from webaccel.browsers.firefox import find_firefox

    for find in (find_chromium, find_firefox):
        try:
            return True, str(find())
        except Exception:  # noqa: BLE001 - not installed: try the next
            continue
    return False, "no Chromium or Firefox found to launch (install one, or let browsers join)"


def readiness(states: list[str], starting: bool, launchable: tuple[bool, str]) -> dict[str, Any]:
    """The ``/health`` check vLLM users expect (``states``: the workers' lifecycle
    states): a ``problem`` (503) until a worker can serve -- while the workers asked
    for with ``--browsers`` start, or when none is ready and none can be launched
    (a joined browser left and no local one exists)."""
    ready = sum(s in ("ready", "busy") for s in states)
    out: dict[str, Any] = {"ready_workers": ready, "can_launch": launchable[0]}
    if starting and not ready:
        out["problem"] = "starting: the first browser worker is not ready yet"
    elif not ready and not launchable[0]:
        out["problem"] = f"no worker can serve: {launchable[1]}"
    return out


async def serve_forever(host: str = "127.0.0.1", port: int = 8700, browsers: int = 0, *,
                        api_key: str | None = None, join: bool | None = None,
                        public_url: str | None = None, ready: asyncio.Future[Engine] | None = None,
                        launcher: str | None = None, grid_url: str | None = None,
                        stop: asyncio.Event | None = None, verify: str = "sample",
                        quiet: bool = False, state_file: Path | None = None) -> None:
    """``verify``: how workers' answers are checked (webaccel.pool.verify: sample | all |
    off); ``quiet``: print nothing (an embedding caller such as ``bench soak``);
    ``state_file``: where to say that this server runs, its URL and master key (what
    ``webaccel tokens`` reads: webaccel.admin), removed on a clean exit."""
    from webaccel import admin
    from webaccel.browsers import remote
    from webaccel.metrics.http import metrics_health, metrics_routes
    from webaccel.metrics.store import MetricsStore
    from webaccel.openai import openai_routes, resolve_api_key
    from webaccel.run_route import run_routes

    console = make_console()
    console.quiet = quiet
    loopback = host in LOOPBACK
    if not loopback and not api_key:
        raise InvalidInputError(
            f"serving on {host} (not loopback) needs an explicit key: pass --api-key K or set "
            "WEBACCEL_API_KEY (a generated key printed to a log is how keys leak)"
        )
    metrics = MetricsStore()
    metrics.record_run_start("server", info={"host": host, "port": port})
    # --browsers N is a cap as well as a floor: a user who asks for one browser
    # does not get four under load (each idle Chromium is ~280 MB, docs/FACTS.md).
    engine = Engine(host=host, port=port, max_connections=browsers or 4, metrics=metrics,
                    launcher=launcher, grid_url=grid_url, public_url=public_url, verify=verify)
    key, generated = resolve_api_key(api_key)
    server = engine.server
    server.add_routes([
        *openai_routes(engine, key),
        *run_routes(engine, server.token),  # `webaccel run` on this server (its master key)
        *metrics_routes(metrics, lambda: live_snapshot(engine), api_key=key,
                        open_metrics=loopback),
    ])
    # The server's one /healthz (and /health) reports the pool and the metrics writer.
    server.add_health_check(lambda: {"pool": {k: v for k, v in live_snapshot(engine).items()
                                              if k != "workers"}})
    server.add_health_check(metrics_health(metrics, lambda: live_snapshot(engine)))
    launchable = can_launch(launcher)
    starting = [browsers > 0]
    server.add_health_check(lambda: readiness(
        [w["state"] for w in live_snapshot(engine)["workers"]], starting[0], launchable))
    remote_ok = join if join is not None else not loopback
    tokens = joined = None
    urls: list[str] = []  # where browsers reach us (set once the port is known)
    if remote_ok:
        tokens = remote.TokenStore().attach(server)
        server.add_routes([*remote.join_routes(tokens),
                           *remote.token_admin_routes(tokens, server.token, lambda: urls)])
        joined = remote.JoinedWorkers(server)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await engine.start()
    adopt_task = None
    state = None
    try:
        if state_file is not None:
            other = None
            with contextlib.suppress(admin.ServerNotRunningError):
                other = admin.read_state(state_file)
            if other is not None and other.process_alive():
                console.print(f"[yellow]note[/] another webaccel serve (pid {other.pid}, "
                              f"{other.url}) wrote {state_file}; `webaccel tokens` talks to "
                              "this server from now on (reach that one with --api URL --key KEY)")
            state = admin.write_state(server.url, server.token, join=remote_ok, path=state_file)
        console.print(f"webaccel serving on [bold]{server.url}[/]")
        console.print(f"  OpenAI API: {server.url}/v1  (API key: "
                      f"{key if generated else 'from --api-key / WEBACCEL_API_KEY'})")
        console.print(f"  gateway: {server.url}/ipfs/<cid>   dashboard: {server.url}/dashboard"
                      "#key=<key>   metrics: " + f"{server.url}/metrics")
        # Say which routes answer without the key, so nobody is surprised.
        open_routes = ["/health", "/healthz", "/ipfs (public content)", "/worker (the page)"]
        if loopback:
            open_routes.append("/metrics (loopback only)")
        console.print("  open without the key: " + ", ".join(open_routes))
        if tokens is not None and joined is not None:
            bound_any = host in ("0.0.0.0", "::")
            urls[:] = [public_url] if public_url else (
                remote.public_urls(server.port) if bound_any else [server.url])
            for url in urls:
                remote.advertise(server, url)
            if not urls:
                urls.append(admin.local_url(server.url))
            tok = tokens.issue("serve")
            console.print(remote.join_banner(
                remote.join_url(urls[0], tok),
                token_id=tok.id if state is not None else None))
            if state is not None:
                console.print("  join tokens: webaccel tokens list | create [--ttl 1h] "
                              "[--max-workers N] [--label L] | revoke ID")

            async def adopt_joined() -> None:
                while True:
                    with contextlib.suppress(TimeoutError):
                        engine.pool.adopt(await joined.next(timeout=3600))

            adopt_task = asyncio.create_task(adopt_joined())
        if browsers:
            with stage(f"starting {browsers} browser worker(s)", after_s=2.0):
                for _ in range(browsers):
                    await engine.any_worker()
        starting[0] = False
        if ready is not None and not ready.done():
            ready.set_result(engine)
        await stop.wait()
    finally:
        if state is not None:
            admin.remove_state(state)
        if adopt_task is not None:
            adopt_task.cancel()
        await engine.close()
        metrics.close()
