"""PNG plots for the report (matplotlib, Agg backend, no display needed).

Each function takes plain rows (dicts from the store) and a target path, and
returns the path, or None when there is nothing to draw.  Numbers on axes and
bars are written plainly (:func:`plain`): 1,080 ms, never 1.08e+03 or 10^3.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from webaccel.extras import require

matplotlib = require("matplotlib", "webaccel report's plots", "report")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plain(v: float) -> str:
    """A number as a person writes it: 12,345 / 450 / 45.6 / 1.5 / 0.012, never 1.2e+04."""
    v = float(v)
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a >= 100 or v.is_integer():
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.{1 if a >= 10 else 2}f}".rstrip("0").rstrip(".")
    digits = 2 - math.floor(math.log10(a))  # three significant digits, positional
    return f"{v:.{digits}f}".rstrip("0").rstrip(".")


def _plain_axis(axis: Any) -> None:
    """Plain tick labels (no offset, no scientific or 10^n notation), also on log scales."""
    fmt = FuncFormatter(lambda v, _pos: plain(v))
    axis.set_major_formatter(fmt)
    axis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))


def _log_if_wide(ax: Any, values: Sequence[float]) -> None:
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")


def latency_by_backend(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """rows: model, backend, precision, n, p10, p50, p90 (ms). Grouped bars, p10-p90 whiskers."""
    if not rows:
        return None
    groups = sorted({(r["model"], r["backend"]) for r in rows})
    precisions = sorted({r["precision"] for r in rows})
    color = {p: COLORS[j % len(COLORS)] for j, p in enumerate(precisions)}
    widest = max(sum(1 for r in rows if (r["model"], r["backend"]) == g) for g in groups)
    width = 0.8 / widest
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(rows) + 2.5), 4.2))
    values: list[float] = []
    labelled: set[str] = set()
    for i, g in enumerate(groups):
        present = sorted((r for r in rows if (r["model"], r["backend"]) == g),
                         key=lambda r: r["precision"])
        for k, r in enumerate(present):  # bars of one group centred on its tick
            x = i + (k - (len(present) - 1) / 2) * width
            prec = r["precision"]
            bars = ax.bar([x], [r["p50"]], width * 0.92, color=color[prec],
                          yerr=[[max(0.0, r["p50"] - r["p10"])], [max(0.0, r["p90"] - r["p50"])]],
                          capsize=3, label=None if prec in labelled else prec)
            labelled.add(prec)
            ax.bar_label(bars, labels=[plain(r["p50"])], fontsize=8, padding=2)
            values += [r["p10"], r["p90"]]
    ax.set_xticks(range(len(groups)), [f"{m}\n{b}" for m, b in groups])
    ax.set_ylabel("round trip, ms (median, p10–p90)")
    ax.set_title("Inference latency by backend and precision")
    _log_if_wide(ax, values)
    _plain_axis(ax.yaxis)
    handles, labels = ax.get_legend_handles_labels()
    order = sorted(range(len(labels)), key=lambda n: labels[n])
    ax.legend([handles[n] for n in order], [labels[n] for n in order], title="precision",
              fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.12)
    return _save(fig, path)


def throughput_vs_workers(runs: list[dict[str, Any]], series: dict[str, dict[int, float]],
                          path: Path) -> Path | None:
    """runs: workers, throughput (items/s) per recorded run; series: benchmark curves."""
    if not runs and not series:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if runs:
        ax.scatter([r["workers"] for r in runs], [r["throughput"] for r in runs], color=COLORS[0],
                   label="recorded runs", zorder=3)
    for k, (name, pts) in enumerate(sorted(series.items())):
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", color=COLORS[(k + 1) % len(COLORS)],
                label=name)
    ax.set_xlabel("workers")
    ax.set_ylabel("throughput, items/s")
    ax.set_title("Throughput vs workers")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    top = max([r["throughput"] for r in runs]
              + [v for pts in series.values() for v in pts.values()])
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    _plain_axis(ax.yaxis)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def load_time_by_tier(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """rows: tier, n, p10, p50, p90 (ms)."""
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(rows) + 2), 4.2))
    xs = range(len(rows))
    ys = [r["p50"] for r in rows]
    bars = ax.bar(xs, ys, 0.6, color=[COLORS[i % len(COLORS)] for i in xs],
                  yerr=[[max(0.0, r["p50"] - r["p10"]) for r in rows],
                        [max(0.0, r["p90"] - r["p50"]) for r in rows]], capsize=4)
    ax.bar_label(bars, labels=[f"{plain(y)} ms\nn={r['n']}" for y, r in zip(ys, rows, strict=True)],
                 fontsize=8, padding=2)
    ax.set_xticks(list(xs), [r["tier"] for r in rows])
    ax.set_ylabel("model load, ms (median, p10–p90)")
    ax.set_title("Model load time by cache tier")
    _log_if_wide(ax, [v for r in rows for v in (r["p10"], r["p90"])])
    _plain_axis(ax.yaxis)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    return _save(fig, path)


def accuracy_vs_size(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """rows: model, variant, bytes, accuracy, metric."""
    rows = [r for r in rows if r.get("accuracy") is not None and r.get("bytes")]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    models = sorted({r["model"] for r in rows})
    named: set[tuple[str, int]] = set()
    for k, model in enumerate(models):
        pts = sorted((r for r in rows if r["model"] == model), key=lambda r: r["bytes"])
        xs = [r["bytes"] / 1e6 for r in pts]
        ys = [r["accuracy"] for r in pts]
        ax.plot(xs, ys, marker="o", linestyle=":", color=COLORS[k % len(COLORS)], label=model)
        for r, x, y in zip(pts, xs, ys, strict=True):
            if (r["variant"], r["bytes"]) in named:  # same variant in another series
                continue
            named.add((r["variant"], r["bytes"]))
            ax.annotate(r["variant"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    metrics = sorted({str(r.get("metric") or "accuracy") for r in rows})
    _plain_axis(ax.xaxis)
    ax.set_xlabel("size, MB")
    ax.set_ylabel(f"{' / '.join(metrics)} vs fp32")
    ax.set_title("Accuracy vs size per precision variant")
    lo = min(r["accuracy"] for r in rows)
    hi = max(r["accuracy"] for r in rows)
    pad = max((hi - lo) * 0.15, 1e-4)
    ax.set_ylim(lo - pad, hi + pad)
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # 0.99999, not 1e-5 + 0.9999
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def benchmark_ratios(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """rows: benchmark, ratio, better, ratio_is (latest result each)."""
    rows = [r for r in rows if r.get("ratio") is not None and math.isfinite(r["ratio"])]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(rows) + 1.6))
    ys = range(len(rows))
    ratios = [r["ratio"] for r in rows]
    bars = ax.barh(list(ys), ratios, color=[COLORS[i % len(COLORS)] for i in ys])
    ax.bar_label(bars, labels=[f"{plain(v)}× ({r.get('better') or '?'} is better)"
                               for v, r in zip(ratios, rows, strict=True)], fontsize=8, padding=3)
    ax.set_yticks(list(ys), [r["benchmark"] for r in rows])
    ax.invert_yaxis()
    ax.axvline(1.0, color="black", linewidth=0.8)
    positive = [v for v in ratios if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_xscale("log")
    ax.set_xlim(right=max(ratios) * (3 if ax.get_xscale() == "log" else 1.35))
    _plain_axis(ax.xaxis)
    ax.set_xlabel("ratio (see the table for what over what)")
    ax.set_title("Benchmarks, latest run")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def generation_speed(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """rows: model, backend, ttft_p50, ttft_p95 (ms), tps_p50 (tokens/s). Two bar panels."""
    rows = [r for r in rows if r.get("ttft_p50") is not None or r.get("tps_p50") is not None]
    if not rows:
        return None
    labels = [f"{r['model']} / {r['backend']}" for r in rows]
    fig, (left, right) = plt.subplots(1, 2, sharey=True,
                                      figsize=(11.0, 0.55 * len(rows) + 2.2))
    ys = list(range(len(rows)))
    colors = [COLORS[i % len(COLORS)] for i in ys]

    ttft = [r.get("ttft_p50") for r in rows]
    p95 = [r.get("ttft_p95") for r in rows]
    bars = left.barh(ys, [v or 0.0 for v in ttft], 0.6, color=colors,
                     xerr=[[0.0] * len(rows),
                           [max(0.0, (b or 0.0) - (a or 0.0)) for a, b in zip(ttft, p95,
                                                                             strict=True)]],
                     capsize=3)
    left.bar_label(bars, labels=["–" if a is None else f"{plain(a)} ms (p95 {plain(b or a)})"
                                 for a, b in zip(ttft, p95, strict=True)],
                   fontsize=8, padding=4)
    left.set_xlabel("time to first token, ms (median; whisker to p95)")
    left.set_title("Time to first token")
    left.set_xlim(0, max([b or a or 0.0 for a, b in zip(ttft, p95, strict=True)] + [1.0]) * 1.45)

    tps = [r.get("tps_p50") for r in rows]
    bars = right.barh(ys, [v or 0.0 for v in tps], 0.6, color=colors)
    right.bar_label(bars, labels=["–" if v is None else f"{plain(v)} tokens/s" for v in tps],
                    fontsize=8, padding=4)
    right.set_xlabel("decode rate, tokens/s (median)")
    right.set_title("Decode rate")
    right.set_xlim(0, max([v or 0.0 for v in tps] + [1.0]) * 1.35)

    left.set_yticks(ys, labels)
    left.invert_yaxis()
    for ax in (left, right):
        _plain_axis(ax.xaxis)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Generation by model and backend")
    return _save(fig, path)


def corpus_systems(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """rows: system, median, p10, p90 (embeddings/s), setting (threads, version): one bar each."""
    rows = [r for r in rows if r.get("median") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9.0, 0.7 * len(rows) + 1.8))
    ys = list(range(len(rows)))
    meds = [float(r["median"]) for r in rows]
    lo = [max(0.0, m - float(r.get("p10", m))) for m, r in zip(meds, rows, strict=True)]
    hi = [max(0.0, float(r.get("p90", m)) - m) for m, r in zip(meds, rows, strict=True)]
    bars = ax.barh(ys, meds, 0.6, color=[COLORS[i % len(COLORS)] for i in ys],
                   xerr=[lo, hi], capsize=3)
    ax.bar_label(bars, labels=[f"{plain(m)}/s  ({r.get('setting', '')})"
                               for m, r in zip(meds, rows, strict=True)],
                 fontsize=8, padding=4)
    ax.set_yticks(ys, [r["system"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlim(0, max(m + h for m, h in zip(meds, hi, strict=True)) * 2.3)
    _plain_axis(ax.xaxis)
    ax.set_xlabel("embeddings/s (median over passes; whiskers p10–p90)")
    ax.set_title("Embedding a corpus: MiniLM fp32, same sentences, same machine")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def soak_memory(figures: dict[str, Any], path: Path) -> Path | None:
    """The latest soak: memory (server + browsers) over time, each browser kill marked."""
    memory = figures.get("memory_mb") or []
    if not memory:
        return None
    fig, ax = plt.subplots(figsize=(9.0, 3.6))
    ax.plot([t for t, _ in memory], [m for _, m in memory], color=COLORS[0],
            label="RSS, all processes")
    for i, k in enumerate(figures.get("kills_at_s") or []):
        ax.axvline(k, color=COLORS[3], alpha=0.5, linestyle="--",
                   label="a browser SIGKILLed" if i == 0 else None)
    ax.set_ylim(0, max(m for _, m in memory) * 1.15)
    _plain_axis(ax.yaxis)
    _plain_axis(ax.xaxis)
    ax.set_xlabel("seconds into the soak")
    ax.set_ylabel("MB")
    ax.set_title(f"Soak, {plain(figures.get('minutes', 0))} min: {figures.get('sent', 0):,} sent, "
                 f"{figures.get('lost', 0)} lost, {figures.get('wrong', 0)} wrong")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def resource_memory(workers: list[dict[str, Any]], models: list[dict[str, Any]],
                    path: Path) -> Path | None:
    """Peak RSS per worker (workers: label, peak_mb) and RSS growth at load per model
    (models: model, median_mb, max_mb), as two bar panels; MB written plainly."""
    workers = [w for w in workers if w.get("peak_mb") is not None]
    models = [m for m in models if m.get("median_mb") is not None]
    panels = [p for p in (("workers", workers), ("models", models)) if p[1]]
    if not panels:
        return None
    rows = max(len(items) for _, items in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 1.0, 0.5 * rows + 2.0),
                             squeeze=False)
    for ax, (kind, items) in zip(axes[0], panels, strict=True):
        ys = list(range(len(items)))
        colors = [COLORS[(i if kind == "workers" else i + 3) % len(COLORS)] for i in ys]
        if kind == "workers":
            vals = [float(w["peak_mb"]) for w in items]
            bars = ax.barh(ys, vals, 0.6, color=colors)
            ax.bar_label(bars, labels=[f"{plain(v)} MB" for v in vals], fontsize=8, padding=3)
            ax.set_yticks(ys, [str(w["label"]) for w in items])
            ax.set_xlabel("peak RSS of the browser's processes, MB")
            ax.set_title("Peak memory per worker")
            top = max(vals)
        else:
            vals = [float(m["median_mb"]) for m in items]
            hi = [max(0.0, float(m.get("max_mb") or v) - v) for m, v in zip(items, vals,
                                                                              strict=True)]
            ax.barh(ys, vals, 0.6, color=colors, xerr=[[0.0] * len(vals), hi], capsize=3)
            for y, v, h, m in zip(ys, vals, hi, items, strict=True):  # label past the whisker
                ax.text(max(v + h, 0.0), y, f"  {plain(v)} MB (max {plain(v + h)}, n={m['n']})",
                        va="center", fontsize=8)
            ax.set_yticks(ys, [str(m["model"]) for m in items])
            ax.set_xlabel("RSS growth at load, MB (median; whisker to max)")
            ax.set_title("Memory per model")
            top = max(v + h for v, h in zip(vals, hi, strict=True))
        ax.invert_yaxis()
        lo = min(0.0, *vals)
        ax.set_xlim(lo * 1.2, max(top, 1.0) * 1.6)
        _plain_axis(ax.xaxis)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Resource efficiency: memory")
    return _save(fig, path)
