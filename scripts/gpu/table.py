"""Markdown table of a webgpu-vs-wasm JSON line (+ the PyTorch reference from the same call).

    python scripts/gpu/table.py results/gpu/RUN-webgpu-vs-wasm.json results/gpu/RUN-torch.jsonl
"""
from __future__ import annotations

import json
import sys

SHAPES = ["1x16", "32x128", "128x128"]


def table(bench_path: str, torch_path: str | None = None) -> str:
    d = json.loads(open(bench_path).read().splitlines()[-1])
    f = d["figures"]
    head = " | ".join(f"{s} ms (bridge)" for s in SHAPES)
    rows = [f"| config | model | {head} | worst cosine / max abs vs native fp32 |",
            "|---|---|" + "---|" * len(SHAPES) + "---|"]
    for cfg, per in f["results"].items():
        ok = [per[s] for s in SHAPES if "page_ms" in per.get(s, {})]
        cells = []
        for s in SHAPES:
            r = per.get(s, {})
            if "page_ms" not in r:
                cells.append("error")
            elif cfg.startswith("native"):
                cells.append(f"{r['page_ms']['median']:.2f}")
            else:
                cells.append(f"{r['page_ms']['median']:.2f} ({r['round_trip_ms']['median']:.1f})")
        cos = min(r["accuracy_vs_native_fp32"]["min_cosine"] for r in ok)
        mab = max(r["accuracy_vs_native_fp32"]["max_abs"] for r in ok)
        rows.append(f"| {cfg} | {f['config_models'][cfg]} | " + " | ".join(cells)
                    + f" | {cos:.6f} / {mab:.1e} |")
    for cfg, why in f["unavailable"].items():
        rows.append(f"| {cfg} | | unavailable: {why} | | | |")
    if torch_path:
        t = {}
        for line in open(torch_path):
            r = json.loads(line)
            if "median_ms" in r:
                t[(r["dtype"], f"{r['batch']}x{r['seq']}")] = r["median_ms"]
        for dt, name in (("float32", "fp32"), ("float16", "fp16")):
            rows.append(f"| PyTorch CUDA {name} (reference) | same architecture | "
                        + " | ".join(f"{t[(dt, s)]:.2f}" for s in SHAPES) + " | - |")
    return "\n".join(rows) + f"\n\nratio {d['ratio']:.1f} ({d['ratio_is']}), at {d['at']}\n"


if __name__ == "__main__":
    print(table(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
