"""Whisper's greedy decoding loop, written once and driven two ways.

The loop itself is a generator (:func:`window_steps`) that does no I/O: it
yields ``(part, feeds)`` for each graph run it needs and is sent back that
run's outputs.  The encoder runs once per 30 s window, then the decoder once
per token, with the KV cache travelling as ``past_*`` / ``present_*`` tensors
and the cross-attention K/V passed as the very same arrays every step (a
worker may keep those instead of receiving them again).

Two drivers move it:

:func:`run_loop`
    ``await run_loop(step, data, options)`` on the event loop: each graph run
    is ``await step(part, feeds)`` (a bridge round trip to a browser worker,
    with no thread in between); the CPU-heavy log-mel features are computed
    in a thread.  This is the model spec's ``run_loop``.
:func:`transcribe`
    ``transcribe(run, data)`` for synchronous callers with a :data:`Runner`
    (``run(part, feeds) -> outputs``, e.g. native onnxruntime): tests, the
    precision bench and ``mixed`` calibration.

Timestamps are off; the suppress lists come from the weights package's
CTranslate2 config (openai/whisper's ``SuppressTokens`` /
``SuppressBlank``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from webaccel.errors import LoadFailedError
from webaccel.models import audio
from webaccel.models.spec import StepFn
from webaccel.models.whisper.ct2 import ct2_config
from webaccel.models.whisper.tokens import EOT, NO_TIMESTAMPS, SOT, TIMESTAMP_BEGIN, decode

Runner = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
# What the loop asks for (a graph run) and what it is sent back (that run's outputs).
Request = tuple[str, Mapping[str, np.ndarray]]
Outputs = Mapping[str, np.ndarray]
T = TypeVar("T")
Steps = Generator[Request, Outputs, T]


@dataclass
class Transcript:
    text: str
    tokens: list[int]
    windows: int
    steps: int  # decoder calls
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeOptions:
    max_new_tokens: int = 224  # openai/whisper's sample_len: half the 448 context
    suppress: tuple[int, ...] = ()  # from the CTranslate2 config when empty
    suppress_at_begin: tuple[int, ...] = ()
    layers: int = 4
    heads: int = 6
    head_dim: int = 64


Suppress = tuple[np.ndarray, np.ndarray]  # (always, at the first token)


def suppress_lists(opts: DecodeOptions) -> Suppress:
    """The ids never sampled, and those not sampled first (reads the package's config)."""
    if opts.suppress:
        return np.array(opts.suppress), np.array(opts.suppress_at_begin or (220, EOT))
    try:
        cfg = ct2_config()
        return np.array(cfg["suppress_ids"]), np.array(cfg["suppress_ids_begin"])
    except (LoadFailedError, OSError, KeyError):
        return np.array([], dtype=np.int64), np.array([220, EOT])


def greedy_steps(
    features: np.ndarray, opts: DecodeOptions, suppress: Suppress | None = None
) -> Steps[tuple[list[int], int]]:
    """Greedy decoding of one [80, 3000] window; returns (text tokens, decoder calls)."""
    always, at_begin = suppress if suppress is not None else suppress_lists(opts)
    cross = yield ("encoder", {"input_features": features[None].astype(np.float32)})
    past: Mapping[str, np.ndarray] = {
        f"past_{kv}_{i}": np.zeros((1, opts.heads, 0, opts.head_dim), np.float32)
        for i in range(opts.layers)
        for kv in ("key", "value")
    }
    feed_ids = np.array([[SOT, NO_TIMESTAMPS]], dtype=np.int64)
    out: list[int] = []
    steps = 0
    while len(out) < opts.max_new_tokens:
        res = yield ("decoder", {"input_ids": feed_ids, **past, **cross})
        steps += 1
        logits = np.array(res["logits"][0, -1], dtype=np.float32)
        logits[always] = -np.inf
        logits[TIMESTAMP_BEGIN:] = -np.inf  # timestamps are off
        if not out:
            logits[at_begin] = -np.inf
        tok = int(logits.argmax())
        if tok == EOT:
            break
        out.append(tok)
        past = {k.replace("present", "past"): v for k, v in res.items() if k.startswith("present")}
        feed_ids = np.array([[tok]], dtype=np.int64)
    return out, steps


def window_steps(
    features: np.ndarray, opts: DecodeOptions, suppress: Suppress | None = None
) -> Steps[tuple[list[int], int]]:
    """Every 30 s window one after another; returns (text tokens, decoder calls)."""
    lists = suppress if suppress is not None else suppress_lists(opts)
    tokens: list[int] = []
    steps = 0
    for window in features:
        toks, n = yield from greedy_steps(window, opts, lists)
        tokens += toks
        steps += n
    return tokens, steps


def drive(steps: Steps[T], run: Runner) -> T:
    """Run the loop ``steps`` with a synchronous runner."""
    try:
        request = next(steps)
        while True:
            request = steps.send(run(*request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        steps.close()


async def drive_async(steps: Steps[T], step: StepFn) -> T:
    """Run the loop ``steps`` on the event loop, awaiting ``step`` for each graph run."""
    try:
        request = next(steps)
        while True:
            request = steps.send(await step(*request))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        steps.close()


def features(data: audio.AudioLike, sample_rate: int | None = None) -> np.ndarray:
    """Log-mel windows [N, 80, 3000] of speech; silent audio is an error, not a hallucination."""
    samples = audio.load_audio(data, sample_rate)
    audio.check_not_silent(samples)
    return audio.log_mel_features(samples)


def greedy_tokens(
    run: Runner, features: np.ndarray, opts: DecodeOptions = DecodeOptions()
) -> tuple[list[int], int]:
    """Greedy decoding of one [80, 3000] window; returns (text tokens, decoder calls)."""
    return drive(greedy_steps(features, opts), run)


def transcribe(
    run: Runner,
    data: audio.AudioLike,
    *,
    sample_rate: int | None = None,
    opts: DecodeOptions = DecodeOptions(),
) -> Transcript:
    """Speech to English text, 30 s windows one after another, timestamps off."""
    feats = features(data, sample_rate)
    tokens, steps = drive(window_steps(feats, opts), run)
    return Transcript(text=decode(tokens), tokens=tokens, windows=len(feats), steps=steps)


def _prepare(
    data: Any, sample_rate: int | None, opts: DecodeOptions
) -> tuple[np.ndarray, Suppress]:
    return features(data, sample_rate), suppress_lists(opts)


async def run_loop(step: StepFn, data: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """Speech to text with each graph run awaited on the event loop (the spec's ``run_loop``).

    ``options`` may carry ``sample_rate`` (for a bare array of samples); other
    keys belong to the caller and are ignored.  Returns ``{"text", "tokens",
    "windows"}`` as :func:`transcribe` does.
    """
    opts = DecodeOptions()
    sample_rate = options.get("sample_rate")
    feats, lists = await asyncio.to_thread(_prepare, data, sample_rate, opts)
    tokens, _ = await drive_async(window_steps(feats, opts, lists), step)
    text = await asyncio.to_thread(decode, tokens)
    return {"text": text, "tokens": tokens, "windows": len(feats)}


__all__ = [
    "DecodeOptions",
    "Runner",
    "Transcript",
    "drive",
    "drive_async",
    "features",
    "greedy_steps",
    "greedy_tokens",
    "run_loop",
    "suppress_lists",
    "transcribe",
    "window_steps",
]
