"""Calibration inputs per model: what ``mixed`` measures sensitivity on, and what
the precision benchmark compares variants with.

Nothing here downloads: sentences are written out, pictures are drawn
deterministically, and speech is beckett.wav from the ``useful-moonshine-onnx``
wheel.  :func:`feeds_for` turns them into model feeds through each model's
own processor, so calibration sees exactly what serving sees.
"""

from __future__ import annotations

from importlib import util as importlib_util
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from webaccel.errors import InvalidInputError, LoadFailedError

if TYPE_CHECKING:
    from webaccel.models.precision import Metric

# Varied on purpose: lengths from 1 to ~20 tokens, code, another language.
# The 2-token "ok" is the worst case for every quantized MiniLM here.
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "How do I reset my password?",
    "Quantum entanglement links particles across distance.",
    "I love pizza",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "El gato duerme en la alfombra.",
    "def foo(x): return x * 2",
    "Photosynthesis converts light into chemical energy in plants.",
    "ok",
    "The committee will reconvene next week to discuss the budget proposal in detail.",
    "Neural networks learn representations from data.",
]

# Which metric judges a variant of each task (precision.compare_outputs names).
METRIC_FOR_TASK: dict[str, Metric] = {
    "text_embedding": "cosine",
    "image_classification": "top1",
    "vision": "cosine",
}


def pictures(n: int = 8) -> list[Any]:
    """``n`` deterministic structured RGB pictures (gradients, noise, filled ellipses)."""
    from PIL import Image, ImageDraw

    out = []
    for k in range(n):
        rng = np.random.default_rng(k)
        w, h = int(rng.integers(160, 400)), int(rng.integers(160, 400))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 40 * k % 255)], -1)
        noisy = (base + rng.normal(0, 10, base.shape)).clip(0, 255).astype(np.uint8)
        img = Image.fromarray(noisy)
        d = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1 = x0 + int(rng.integers(10, w // 2))
            y1 = y0 + int(rng.integers(10, h // 2))
            d.ellipse([x0, y0, x1, y1], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        out.append(img)
    return out


def beckett_wav() -> Path:
    """``beckett.wav`` from the ``useful-moonshine-onnx`` wheel (a test clip)."""
    spec = importlib_util.find_spec("moonshine_onnx")
    if spec is None or spec.origin is None:
        raise LoadFailedError("useful-moonshine-onnx is not installed (it carries beckett.wav)")
    return Path(spec.origin).parent / "assets" / "beckett.wav"


def samples_for(task: str) -> list[Any]:
    """Raw calibration inputs (what a user would pass) for ``task``."""
    if task == "text_embedding":
        return list(SENTENCES)
    if task in ("vision", "image_classification"):
        return pictures()
    if task == "audio":
        return [beckett_wav()]
    raise InvalidInputError(f"no calibration inputs for task {task!r}")


def feeds_for(spec: Any) -> list[dict[str, np.ndarray]]:
    """One feed per sample, through ``spec``'s processor (a registry ModelSpec)."""
    proc = spec.processor()
    return [dict(proc.preprocess(x, {}).tensors) for x in samples_for(spec.task)]


def metric_for(task: str) -> Metric:
    try:
        return METRIC_FOR_TASK[task]
    except KeyError:
        raise InvalidInputError(f"no single-graph accuracy metric for task {task!r}") from None


__all__ = [
    "METRIC_FOR_TASK",
    "SENTENCES",
    "beckett_wav",
    "feeds_for",
    "metric_for",
    "pictures",
    "samples_for",
]
