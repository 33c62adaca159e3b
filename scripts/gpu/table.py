"""Markdown tables of a webgpu-vs-wasm JSON line (+ the PyTorch reference from the same call).

    python scripts/gpu/table.py results/gpu/RUN-webgpu-vs-wasm.json [results/gpu/RUN-torch.jsonl]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _cell(cfg: str, r: dict[str, Any]) -> str:
    if "page_ms" not in r:
        return "skipped" if "skipped" in r else "error"
    if cfg.startswith("native"):
        return f"{r['page_ms']['median']:.2f}"
    return f"{r['page_ms']['median']:.2f} ({r['round_trip_ms']['median']:.1f})"


def _rows(
    results: dict[str, dict[str, Any]], shapes: list[str], graphs: dict[str, str]
) -> list[str]:
    head = " | ".join(f"{s} ms (bridge)" for s in shapes)
    rows = [
        f"| config | graph | {head} | worst cosine / max abs vs native fp32 |",
        "|---|---|" + "---|" * len(shapes) + "---|",
    ]
    for cfg, per in results.items():
        ok = [per[s] for s in shapes if "page_ms" in per.get(s, {})]
        cells = [_cell(cfg, per.get(s, {})) for s in shapes]
        acc = "-"
        if ok:
            cos = min(r["accuracy_vs_native_fp32"]["min_cosine"] for r in ok)
            mab = max(r["accuracy_vs_native_fp32"]["max_abs"] for r in ok)
            acc = f"{cos:.6f} / {mab:.1e}"
        rows.append(f"| {cfg} | {graphs.get(cfg, '')} | " + " | ".join(cells) + f" | {acc} |")
    return rows


def table(bench_path: str, torch_path: str | None = None) -> str:
    d = json.loads(Path(bench_path).read_text().splitlines()[-1])
    f = d["figures"]
    shapes = ["1x16", "32x128", "128x128"]
    rows = _rows(f["results"], shapes, f["config_models"])
    for cfg, why in f["unavailable"].items():
        rows.append(f"| {cfg} | | unavailable: {why} | | | |")
    if torch_path:
        t: dict[tuple[str, str, str], float] = {}
        for line in Path(torch_path).read_text().splitlines():
            r = json.loads(line)
            if "median_ms" in r:
                key = (r.get("timing", "forward"), r["dtype"], f"{r['batch']}x{r['seq']}")
                t[key] = r["median_ms"]
        for timing in ("forward", "embeddings"):
            for dt, name in (("float32", "fp32"), ("float16", "fp16")):
                if (timing, dt, shapes[0]) in t:
                    cells = " | ".join(f"{t[(timing, dt, s)]:.2f}" for s in shapes)
                    label = f"PyTorch CUDA {name}, {timing}"
                    rows.append(f"| {label} | same architecture | {cells} | - |")
    out = "\n".join(rows) + f"\n\nratio {d['ratio']:.1f} ({d['ratio_is']}), at {d['at']}\n"
    for model, results in (f.get("other_models") or {}).items():
        model_shapes = sorted({s for per in results.values() for s in per}, key=len)
        out += f"\n{model}:\n\n" + "\n".join(_rows(results, model_shapes, {})) + "\n"
    return out


if __name__ == "__main__":
    print(table(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
