"""Store benchmark JSON lines brought back from the GPU machine in the metrics store.

The GPU machine's Python has no duckdb, so there the benchmark prints its line
(``python -m webaccel.bench.webgpu_vs_wasm --json``) and this records it here,
exactly as ``webaccel bench`` would have (``record_benchmark``).

    python scripts/gpu/store_results.py results/gpu/webgpu-vs-wasm.json [--db PATH]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from webaccel.bench.core import load
from webaccel.metrics.store import MetricsStore


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--db", type=Path, default=None)
    args = p.parse_args()
    store = MetricsStore(args.db)
    try:
        store.record_run_start("bench", info={"imported_from": [str(f) for f in args.files]})
        for path in args.files:
            for line in path.read_text().splitlines():
                if not line.strip():
                    continue
                result = json.loads(line)
                spec = load([result["benchmark"]]).get(result["benchmark"])
                better = getattr(spec, "better", None)
                store.record_benchmark(result, better=better)
                print(f"stored {result['benchmark']} from {path} ({result.get('at')})")
    finally:
        store.close()
    print(f"in {store.path}")


if __name__ == "__main__":
    main()
