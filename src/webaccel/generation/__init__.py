"""Text generation: the in-page decode loop's Python side.

* :func:`stream_generate` / :func:`generate` (async, over an
  :class:`~webaccel.engine.Engine`): prompt or chat messages in, text pieces
  out as the page makes tokens; :class:`GenerationResult` carries the text,
  token ids, finish reason, usage and timings (time to first token, tokens/s).
* :class:`GenerationParams`: max_tokens, temperature, top_k, top_p, seed,
  repetition_penalty, stop_token_ids, stop (strings).
* :mod:`.export` writes the ONNX decoder with KV cache; :mod:`.native` runs
  the same loop on native onnxruntime; :mod:`.detok` is the incremental
  detokenizer; :mod:`.sampling` the reference sampler the page mirrors.
"""

from __future__ import annotations

from webaccel.generation.detok import IncrementalDetokenizer
from webaccel.generation.meta import GenerationModel
from webaccel.generation.runner import (
    GenerationResult,
    Piece,
    TextStream,
    generate,
    load_generation_model,
    stream_generate,
)
from webaccel.generation.sampling import GenerationParams, Sampler

__all__ = [
    "GenerationModel",
    "GenerationParams",
    "GenerationResult",
    "IncrementalDetokenizer",
    "Piece",
    "Sampler",
    "TextStream",
    "generate",
    "load_generation_model",
    "stream_generate",
]
