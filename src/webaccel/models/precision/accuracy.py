"""How far a variant is from fp32: per-sample scores, native latency, word error rate.

:func:`evaluate` measures a variant against fp32 on given inputs: accuracy
(cosine for embeddings, top-1 agreement for classifiers), bytes, native
onnxruntime latency and load time.  Speech uses :func:`word_error_rate` on
transcripts (see ``webaccel.models.whisper``).
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.models.precision.files import PRECISIONS, model_bytes

Metric = Literal["cosine", "top1", "max_abs"]
Feed = Mapping[str, np.ndarray]


def _pool(out: np.ndarray, feed: Feed) -> np.ndarray:
    """One vector per sample: masked mean over tokens for [B, T, H] outputs."""
    out = np.asarray(out, dtype=np.float64)
    mask = feed.get("attention_mask")
    if out.ndim == 3 and mask is not None and mask.shape == out.shape[:2]:
        m = mask.astype(np.float64)[..., None]
        return (out * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return out.reshape(out.shape[0], -1) if out.ndim >= 2 else out.reshape(1, -1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def compare_outputs(
    ref: Sequence[np.ndarray], got: Sequence[np.ndarray], feed: Feed, metric: Metric
) -> np.ndarray:
    """Per-sample scores of the first output (1.0 = identical)."""
    r, g = np.asarray(ref[0]), np.asarray(got[0])
    if r.shape != g.shape:
        raise InvalidInputError(f"variant output shape {g.shape} != fp32 {r.shape}")
    if metric == "cosine":
        return cosine_rows(_pool(r, feed), _pool(g, feed))
    if metric == "top1":
        return (
            r.reshape(r.shape[0], -1).argmax(-1) == g.reshape(g.shape[0], -1).argmax(-1)
        ).astype(np.float64)
    if metric == "max_abs":  # lower is better; reported as is
        return np.abs(r - g).reshape(r.shape[0], -1).max(-1).astype(np.float64)
    raise InvalidInputError(f"unknown metric {metric!r}; use cosine, top1 or max_abs")


def session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """A CPU onnxruntime session with a typed error for unloadable files."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LoadFailedError(f"onnxruntime could not load {path}: {exc}") from exc


def run_feeds(sess: Any, feeds: Sequence[Feed]) -> list[list[np.ndarray]]:
    names = {i.name for i in sess.get_inputs()}
    outs = []
    for feed in feeds:
        missing = names - set(feed)
        if missing:
            raise InvalidInputError(f"inputs missing for the model: {sorted(missing)}")
        outs.append(sess.run(None, {k: v for k, v in feed.items() if k in names}))
    return outs


@dataclass
class VariantReport:
    precision: str
    path: str
    bytes: int
    ratio_to_fp32: float
    metric: str
    accuracy_mean: float
    accuracy_worst: float
    latency_ms: dict[str, float]  # native onnxruntime CPU, per feed, median/p10/p90
    load_ms: float  # native session creation
    threads: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spread(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    q = statistics.quantiles(s, n=10) if len(s) >= 2 else [s[0]] * 9
    return {"median": statistics.median(s), "p10": q[0], "p90": q[-1], "n": len(s)}


def evaluate(
    fp32: str | os.PathLike[str],
    variant: str | os.PathLike[str],
    feeds: Sequence[Feed],
    *,
    metric: Metric = "cosine",
    precision: str | None = None,
    repeat: int = 10,
    warmup: int = 3,
    threads: int | None = None,
    ref_outputs: list[list[np.ndarray]] | None = None,
) -> VariantReport:
    """Accuracy of ``variant`` vs ``fp32`` on ``feeds``, its bytes and native latency.

    Latency is the median over ``repeat`` runs of the first feed after
    ``warmup`` runs (onnxruntime CPU, ``threads`` intra-op threads).
    """
    if not feeds:
        raise InvalidInputError("evaluate needs at least one input feed")
    if ref_outputs is None:
        ref_outputs = run_feeds(session(fp32, threads=threads), feeds)
    t0 = time.perf_counter()
    sess = session(variant, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    outs = run_feeds(sess, feeds)
    scores = np.concatenate(
        [compare_outputs(r, o, f, metric) for r, o, f in zip(ref_outputs, outs, feeds, strict=True)]
    )
    worst = float(scores.max() if metric == "max_abs" else scores.min())
    names = {i.name for i in sess.get_inputs()}
    feed0 = {k: v for k, v in feeds[0].items() if k in names}
    for _ in range(warmup):
        sess.run(None, feed0)
    samples = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        sess.run(None, feed0)
        samples.append((time.perf_counter() - t) * 1e3)
    size, base = model_bytes(variant), model_bytes(fp32)
    return VariantReport(
        precision=precision or _guess_precision(variant),
        path=str(variant),
        bytes=size,
        ratio_to_fp32=size / base,
        metric=metric,
        accuracy_mean=float(scores.mean()),
        accuracy_worst=worst,
        latency_ms=_spread(samples),
        load_ms=load_ms,
        threads=threads,
    )


def _guess_precision(path: str | os.PathLike[str]) -> str:
    stem = Path(path).stem
    for p in PRECISIONS:
        if stem.endswith(p):
            return p
    return "fp32"


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference words (case and punctuation ignored)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(ref)


def normalize_words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


__all__ = [
    "Feed",
    "Metric",
    "VariantReport",
    "compare_outputs",
    "cosine_rows",
    "evaluate",
    "normalize_words",
    "run_feeds",
    "session",
    "word_error_rate",
]
