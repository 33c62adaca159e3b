"""Start-up time (launch -> page hello) and memory (PSS) per launcher.

    python scripts/grid/measure_launchers.py [--repeats 5] [--json]

Each launcher starts one headless browser on the same worker page, sequentially;
PSS is read 2 s after hello (the page idle, onnxruntime-web loaded), split into
the browser's own processes and the driver that started it (chromedriver,
Playwright's Node driver, the Grid node's JVM). Medians over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

import psutil

from webaccel.browsers import launch_worker
from webaccel.browsers.launching import descendants, processes_marked, pss_bytes, tree
from webaccel.server import WebAccelServer

# LocalGrid is a test harness: it lives with the tests, not in webaccel.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "browsers"))
from local_grid import LocalGrid  # noqa: E402


def split_pids(worker) -> tuple[list[int], list[int]]:
    """(browser pids, driver pids) of a worker."""
    kind = getattr(worker, "launcher", "subprocess")
    if kind == "grid":
        browser = [p.pid for p in tree(processes_marked(worker.id))]
        drivers = []
        for p in processes_marked(worker.id):
            parent = p.parent()
            if parent is not None and "chromedriver" in parent.name():
                drivers.append(parent.pid)
        return browser, drivers
    if kind == "selenium":
        driver = worker.driver_process.pid
        return descendants(driver, include_self=False), [driver]
    if kind == "playwright":
        nodes = [
            c.pid for c in psutil.Process().children() if "playwright" in " ".join(c.cmdline())
        ]
        return worker.pids(), nodes
    return descendants(worker.process.pid), []


async def once(server, browser: str, launcher: str | None, **kw) -> tuple[float, int, int, int]:
    w = await launch_worker(server, browser, launcher=launcher, **kw)
    await asyncio.sleep(2)
    b, d = split_pids(w)
    row = (w.launch_ms, pss_bytes(b), pss_bytes(d), len(b))
    await w.close()
    await asyncio.sleep(0.5)
    return row


def summary(browser: str, launcher: str, rows: list[tuple[float, int, int, int]]) -> dict:
    ms = [r[0] for r in rows]
    return {
        "browser": browser,
        "launcher": launcher,
        "start_ms_median": round(statistics.median(ms)),
        "start_ms_min": round(min(ms)),
        "start_ms_max": round(max(ms)),
        "browser_pss_mb": round(statistics.median(r[1] for r in rows) / 2**20),
        "driver_pss_mb": round(statistics.median(r[2] for r in rows) / 2**20),
        "browser_processes": int(statistics.median(r[3] for r in rows)),
        "repeats": len(rows),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results = []
    async with WebAccelServer() as server:
        # One throwaway launch: first-run disk caches are not a launcher's cost.
        w = await launch_worker(server, "chromium")
        await w.close()
        grid = await asyncio.to_thread(LocalGrid(nodes=1, max_sessions=1).start)
        try:
            w = await launch_worker(server, "chromium", grid_url=grid.url)  # warm the JVM
            await w.close()
            cases = [
                ("chromium", "subprocess", {}),
                ("chromium", "selenium", {}),
                ("chromium", "playwright", {}),
                ("chromium", "grid", {"grid_url": grid.url}),
                ("firefox", "subprocess", {}),
            ]
            rows: dict[int, list] = {i: [] for i in range(len(cases))}
            # Round-robin, so drifting load on a shared machine hits every launcher alike.
            for _ in range(args.repeats):
                for i, (browser, launcher, kw) in enumerate(cases):
                    rows[i].append(await once(server, browser, launcher, **kw))
            results = [summary(b, lch, rows[i]) for i, (b, lch, _) in enumerate(cases)]
            jvm = {
                "hub": round(psutil.Process(grid.hub.pid).memory_info().rss / 2**20),
                "node": round(psutil.Process(grid.nodes[0].process.pid).memory_info().rss / 2**20),
            }
            results[3]["jvm_rss_mb"] = jvm
        finally:
            grid.stop()
    host = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "loadavg": [round(x, 1) for x in os.getloadavg()],
    }
    if args.json:
        for r in results:
            print(json.dumps({**r, "hardware": host}))
        return
    print(
        "| browser | launcher | start-up to hello, ms (median [min-max]) | browser PSS MB "
        "| driver PSS MB | processes |"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['browser']} | {r['launcher']} | {r['start_ms_median']} "
            f"[{r['start_ms_min']}-{r['start_ms_max']}] | {r['browser_pss_mb']} | "
            f"{r['driver_pss_mb']} | {r['browser_processes']} |"
        )
    print(f"load average at the end: {host['loadavg']} on {host['cpus']} CPUs")
    for r in results:
        if "jvm_rss_mb" in r:
            print(f"Grid JVMs (RSS MB): {r['jvm_rss_mb']}")


if __name__ == "__main__":
    asyncio.run(main())
