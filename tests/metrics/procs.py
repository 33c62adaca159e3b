"""Helper processes for the multi-process metrics tests (run as a script).

    procs.py writer DB INTERVAL [generations]
                                    record inferences (or generations, their token count
                                    counting up) forever; print "committed N" as flushes land
    procs.py server DB SECONDS      a server-like writer: records for SECONDS, then closes; "ready"
    procs.py hold DB SECONDS        hold a read-write DuckDB connection (a foreign client); "held"
"""
from __future__ import annotations

import sys
import time
from pathlib import Path


def writer(db: Path, interval: float, kind: str = "inferences") -> None:
    from webaccel.metrics.store import MetricsStore

    store = MetricsStore(db, interval=interval)
    store.record_run_start("crash-test")
    i = 0
    last = -1
    while True:
        for _ in range(50):
            if kind == "generations":
                store.record_generation("tiny-lm", task="text_generation", worker_id="w",
                                        backend="wasm", completion_tokens=i, ttft_ms=1.0,
                                        total_ms=2.0)
            else:
                store.record_inference("tiny", round_trip_ms=1.0, worker_id="w",
                                       backend="wasm", batch=i)
            i += 1
        committed = store.stats()["committed_rows"]
        if committed != last:
            print(f"committed {committed}", flush=True)
            last = committed
        time.sleep(0.002)


def server(db: Path, seconds: float) -> None:
    from webaccel.metrics.store import MetricsStore

    store = MetricsStore(db, interval=0.05)
    store.record_run_start("server")
    store.record_worker("w1", "chromium", version="156", backends=["wasm"])
    store.flush()
    print("ready", flush=True)
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        store.record_inference("srv", round_trip_ms=2.0, worker_id="w1", backend="wasm")
        n += 1
        time.sleep(0.001)
    store.close()
    print(f"done {n} {store.stats()['spooled_rows']}", flush=True)


def hold(db: Path, seconds: float) -> None:
    import duckdb

    con = duckdb.connect(str(db))
    print("held", flush=True)
    time.sleep(seconds)
    con.close()
    print("released", flush=True)


if __name__ == "__main__":
    cmd, path, arg, *rest = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), *sys.argv[4:]
    {"writer": writer, "server": server, "hold": hold}[cmd](path, arg, *rest)
