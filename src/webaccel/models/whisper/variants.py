"""Precision variants of both Whisper parts, and how well each transcribes.

``fp16`` / ``int8`` / ``int4`` convert each part alone; ``mixed`` measures
each part's layers on feeds recorded while transcribing calibration audio.
:func:`evaluate_variant` scores a variant by word error rate against fp32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import InvalidInputError
from webaccel.models.calibration import beckett_wav
from webaccel.models.whisper.decoding import transcribe
from webaccel.models.whisper.runners import OrtRunner, RecordingRunner


def make_variants(
    parts: Mapping[str, Path],
    precision: str,
    dest_dir: str | os.PathLike[str],
    *,
    block_size: int | None = None,  # None: precision.DEFAULT_BLOCK_SIZE
    calibration: Any = None,
    target: float = 0.99,
) -> dict[str, Path]:
    """``precision`` variants of both parts in ``dest_dir`` (same file names).

    ``mixed`` records the fp32 parts' feeds while transcribing ``calibration``
    audio (beckett.wav by default) and searches each part separately: the
    encoder on cosine of its first cross-attention key, the decoder on top-1
    agreement of its next-token logits (target 1.0: greedy output unchanged).
    """
    from webaccel.models import precision as P

    block_size = block_size or P.DEFAULT_BLOCK_SIZE
    out = Path(dest_dir)
    out.mkdir(parents=True, exist_ok=True)
    if precision != "mixed":
        return {
            name: P.make_variant(path, precision, out / Path(path).name, block_size=block_size)
            for name, path in parts.items()
        }
    rec = RecordingRunner(OrtRunner(parts))
    transcribe(rec, calibration if calibration is not None else beckett_wav())
    P.to_mixed(
        parts["encoder"],
        out / "encoder.onnx",
        rec.feeds["encoder"],
        metric="cosine",
        target=target,
        block_size=block_size,
    )
    P.to_mixed(
        parts["decoder"],
        out / "decoder.onnx",
        rec.feeds["decoder"],
        metric="top1",
        target=1.0,
        block_size=block_size,
    )
    return {"encoder": out / "encoder.onnx", "decoder": out / "decoder.onnx"}


@dataclass
class TranscriptReport:
    precision: str
    bytes: int
    wer_vs_fp32: float  # per clip, mean
    texts: list[str]
    seconds: list[float]  # wall time of each transcription (native onnxruntime)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def evaluate_variant(
    fp32: Mapping[str, Path],
    variant: Mapping[str, Path],
    clips: list[Any],
    *,
    precision: str = "",
    threads: int | None = None,
    reference: list[str] | None = None,
) -> TranscriptReport:
    """Word error rate of ``variant``'s transcripts against the fp32 transcripts, plus bytes."""
    import time

    from webaccel.models import precision as P

    if not clips:
        raise InvalidInputError("evaluate_variant needs at least one audio clip")
    if reference is None:
        ref_run = OrtRunner(fp32, threads=threads)
        reference = [transcribe(ref_run, c).text for c in clips]
    run = OrtRunner(variant, threads=threads)
    texts, secs = [], []
    for clip in clips:
        t = time.perf_counter()
        texts.append(transcribe(run, clip).text)
        secs.append(time.perf_counter() - t)
    wers = [P.word_error_rate(r, h) for r, h in zip(reference, texts, strict=True)]
    return TranscriptReport(
        precision,
        sum(P.model_bytes(p) for p in variant.values()),
        float(np.mean(wers)),
        texts,
        secs,
    )


__all__ = ["TranscriptReport", "evaluate_variant", "make_variants"]
