"""``whisper-tiny-en``: CTranslate2 weights -> Hugging Face Whisper -> two ONNX graphs,
and the greedy loop that drives them.

One job per module:

==============  ===============================================================
``ct2``         read CTranslate2's ``model.bin``; map it onto the HF model
``export``      the encoder and decoder ONNX graphs (torch export)
``tokens``      special token ids; the tokenizer; ids -> text
``decoding``    the decoding loop (a generator), its async driver
                :func:`run_loop` (the spec's) and the sync :func:`transcribe`
``runners``     native onnxruntime (and recording) runners for the sync loop
``parts``       the built parts per precision, cached under ``$WEBACCEL_HOME``
``variants``    fp16 / int8 / int4 / mixed parts and their word error rate
``family``      the processor and the registry's :data:`WHISPER_TINY_EN`
==============  ===============================================================

Every public name stays importable from ``webaccel.models.whisper``.
"""

from __future__ import annotations

from webaccel.models.calibration import beckett_wav
from webaccel.models.whisper.ct2 import (
    PACKAGE,
    TINY_EN_CONFIG,
    ct2_config,
    ct2_to_hf_state_dict,
    load_hf_model,
    model_dir,
    read_ct2,
)
from webaccel.models.whisper.decoding import (
    DecodeOptions,
    Runner,
    Transcript,
    greedy_tokens,
    run_loop,
    transcribe,
)
from webaccel.models.whisper.export import export_onnx
from webaccel.models.whisper.family import WHISPER_TINY_EN, WhisperProcessor
from webaccel.models.whisper.parts import NAME, artifact_dir, ensure_parts, parts_in
from webaccel.models.whisper.runners import OrtRunner, RecordingRunner
from webaccel.models.whisper.tokens import EOT, NO_TIMESTAMPS, SOT, TIMESTAMP_BEGIN, tokenizer
from webaccel.models.whisper.variants import TranscriptReport, evaluate_variant, make_variants

__all__ = [
    "EOT",
    "NAME",
    "NO_TIMESTAMPS",
    "PACKAGE",
    "SOT",
    "TIMESTAMP_BEGIN",
    "TINY_EN_CONFIG",
    "WHISPER_TINY_EN",
    "DecodeOptions",
    "OrtRunner",
    "RecordingRunner",
    "Runner",
    "Transcript",
    "TranscriptReport",
    "WhisperProcessor",
    "artifact_dir",
    "beckett_wav",
    "ct2_config",
    "ct2_to_hf_state_dict",
    "ensure_parts",
    "evaluate_variant",
    "export_onnx",
    "greedy_tokens",
    "load_hf_model",
    "make_variants",
    "model_dir",
    "parts_in",
    "read_ct2",
    "run_loop",
    "tokenizer",
    "transcribe",
]
