"""Accuracy records: measured reports saved beside each variant, and picking by them.

``model.int4.onnx`` -> ``model.int4.report.json``; a report newer than its
file is reused, so ``webaccel models show`` needs no re-measuring.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.models.precision.accuracy import (
    Feed,
    Metric,
    VariantReport,
    evaluate,
    run_feeds,
    session,
)

# What "auto" must keep, per task: (metric, threshold on the *worst* sample).
# MiniLM measured here: int8 worst cosine 0.983, int4 0.909 ("ok", 2 tokens),
# mixed 0.990 by construction; so 0.98 admits int8/mixed, not plain int4.
DEFAULT_TARGETS: dict[str, tuple[str, float]] = {
    "text_embedding": ("cosine", 0.98),
    "image_classification": ("top1", 1.0),
    "vision": ("cosine", 0.99),
    "audio": ("wer_vs_fp32", 0.05),  # lower is better; see whisper.evaluate_variant
}


def pick_smallest(
    reports: Iterable[VariantReport], target: float, allowed: Iterable[str] | None = None
) -> VariantReport | None:
    """The smallest variant whose worst accuracy meets ``target`` (higher-is-better metrics).

    ``allowed`` limits the precisions (e.g. no fp16 on a WebGPU adapter
    without ``shader-f16``); None allows all.
    """
    ok_precisions = set(allowed) if allowed is not None else None
    ok = [
        r
        for r in reports
        if r.metric != "max_abs"
        and r.accuracy_worst >= target
        and (ok_precisions is None or r.precision in ok_precisions)
    ]
    return min(ok, key=lambda r: r.bytes, default=None)


def report_path(variant: str | os.PathLike[str]) -> Path:
    """Where a variant's measured report lives: ``model.onnx`` -> ``model.report.json``."""
    v = Path(variant)
    return v.with_name(v.stem + ".report.json")


def save_report(report: VariantReport) -> Path:
    """Write ``report`` beside its ONNX file, so ``models show`` needs no re-measuring."""
    import json

    out = report_path(report.path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=1, sort_keys=True))
    os.replace(tmp, out)
    return out


def load_report(variant: str | os.PathLike[str]) -> VariantReport | None:
    """The saved report of ``variant`` if it is newer than the ONNX file, else None."""
    import json

    rp, v = report_path(variant), Path(variant)
    if not rp.is_file() or not v.is_file() or rp.stat().st_mtime < v.stat().st_mtime:
        return None
    try:
        return VariantReport(**json.loads(rp.read_text()))
    except (ValueError, TypeError):
        return None  # an old or hand-edited file: measure again


def measure_variants(
    fp32: str | os.PathLike[str],
    variants: Mapping[str, str | os.PathLike[str]],
    feeds: Sequence[Feed],
    *,
    metric: Metric = "cosine",
    repeat: int = 10,
    threads: int | None = None,
    reuse: bool = True,
) -> list[VariantReport]:
    """Reports for ``{precision: path}`` (fp32 included if given), saved beside each file.

    With ``reuse`` a saved report newer than its ONNX file is returned as is.
    """
    out: list[VariantReport] = []
    ref: list[list[np.ndarray]] | None = None
    for precision, path in variants.items():
        rep = load_report(path) if reuse else None
        if rep is None:
            if ref is None:
                ref = run_feeds(session(fp32, threads=threads), feeds)
            rep = evaluate(
                fp32,
                path,
                feeds,
                metric=metric,
                precision=precision,
                repeat=repeat,
                threads=threads,
                ref_outputs=ref,
            )
            save_report(rep)
        out.append(rep)
    return out


def summary(report: VariantReport) -> dict[str, Any]:
    """The ``variants`` entry of ``webaccel models show NAME --json``."""
    return {
        "precision": report.precision,
        "path": report.path,
        "bytes": report.bytes,
        "ratio_to_fp32": round(report.ratio_to_fp32, 4),
        "metric": report.metric,
        "accuracy": report.accuracy_mean,
        "accuracy_worst": report.accuracy_worst,
        "native_latency_ms": report.latency_ms.get("median"),
    }


__all__ = [
    "DEFAULT_TARGETS",
    "load_report",
    "measure_variants",
    "pick_smallest",
    "report_path",
    "save_report",
    "summary",
]
