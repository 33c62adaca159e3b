"""Generation as pool work: an async stream of text pieces.

:func:`stream_generate` tokenizes in Python and asks the engine's pool for a
stream (:meth:`~webaccel.pool.ResourcePool.stream`): the pool schedules it
like any request, holds a session slot of one worker for the stream's life,
records it (tokens, time to first token, tokens/s) and, when that worker dies
mid-stream, replays prompt + tokens so far on another worker -- with greedy
decoding the text equals an uninterrupted run.  The page's ``stream`` frames
(one token id each) become text pieces through
:class:`~webaccel.generation.detok.IncrementalDetokenizer`.  Stop strings are
matched here on the text (the page only knows ids): text that could be the
start of a stop string is held back until it cannot be, and a match cancels
the page's loop.  Leaving the iteration early (``aclose()``, ``break``, a
client disconnect) cancels the generation in the page too.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from webaccel.errors import InvalidInputError
from webaccel.generation.detok import IncrementalDetokenizer
from webaccel.generation.meta import GenerationModel
from webaccel.generation.sampling import GenerationParams
from webaccel.models import registry

if TYPE_CHECKING:
    from webaccel.engine import Engine

DEFAULT_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Piece:
    """New text, final (never revised), and the token ids that produced it."""

    text: str
    token_ids: tuple[int, ...]


@dataclass
class GenerationResult:
    model: str
    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (eos id or stop string) | "length" | "cancelled"
    stats: dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    worker_id: str = ""
    browser: str = ""

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": len(self.token_ids),
            "total_tokens": self.prompt_tokens + len(self.token_ids),
        }


_MODELS: dict[Path, GenerationModel] = {}


def load_generation_model(name: str, precision: str = "fp32") -> tuple[Any, GenerationModel, Path]:
    """(spec, model metadata, ONNX path); builds the model once if needed (blocking)."""
    spec = registry.get(name)
    if spec.task != "text_generation":
        raise InvalidInputError(
            f"{spec.name} is a {spec.task} model; generation needs a "
            "text_generation model (e.g. smollm2)"
        )
    path = spec.ensure_onnx(precision)
    meta_path = spec.ensure_onnx("fp32")  # tokenizer and metadata live beside the fp32 build
    gm = _MODELS.get(meta_path)
    if gm is None:
        gm = _MODELS[meta_path] = GenerationModel.load(spec.name, meta_path)
    return spec, gm, path


def build_prompt(
    gm: GenerationModel, prompt: str | None, messages: list[dict[str, Any]] | None
) -> list[int]:
    if (prompt is None) == (messages is None):
        raise InvalidInputError("give a prompt string or a list of chat messages (one of them)")
    if messages is not None:
        text = gm.apply_chat_template(messages, add_generation_prompt=True)
    else:
        if not isinstance(prompt, str) or not prompt:
            raise InvalidInputError("prompt must be a non-empty string")
        text = prompt
    ids = gm.encode(text)
    if not ids:
        raise InvalidInputError("the prompt encodes to no tokens")
    return ids


class TextStream:
    """Async iterator of :class:`Piece`; ``result`` is set once it ends."""

    def __init__(self, agen: AsyncIterator[Piece], holder: dict[str, Any]) -> None:
        self._agen = agen
        self._holder = holder

    def __aiter__(self) -> TextStream:
        return self

    async def __anext__(self) -> Piece:
        return await self._agen.__anext__()

    async def aclose(self) -> None:
        await self._agen.aclose()  # type: ignore[attr-defined]

    @property
    def result(self) -> GenerationResult | None:
        return self._holder.get("result")

    async def collect(self) -> GenerationResult:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result


def stream_generate(
    engine: Engine,
    model: str,
    prompt: str | None = None,
    *,
    messages: list[dict[str, Any]] | None = None,
    platform: str | None = None,
    precision: str = "fp32",
    timeout: float = DEFAULT_TIMEOUT_S,
    allow_software: bool | None = None,
    **params: Any,
) -> TextStream:
    """Stream ``model``'s continuation of ``prompt`` (or of chat ``messages``).

    ``params`` are :class:`GenerationParams` fields: max_tokens, temperature,
    top_k, top_p, seed, repetition_penalty, stop_token_ids, stop.
    """
    GenerationParams.from_kwargs(**params)  # validate before anything starts
    holder: dict[str, Any] = {}
    route = engine.route(platform, allow_software=allow_software)
    return TextStream(
        _stream(engine, model, prompt, messages, route, precision, timeout, params, holder),
        holder,
    )


async def generate(
    engine: Engine, model: str, prompt: str | None = None, **kwargs: Any
) -> GenerationResult:
    return await stream_generate(engine, model, prompt, **kwargs).collect()


async def _stream(
    engine: Engine,
    model: str,
    prompt: str | None,
    messages: list[dict[str, Any]] | None,
    route: dict[str, Any],
    precision: str,
    timeout: float,
    params: dict[str, Any],
    holder: dict[str, Any],
) -> AsyncIterator[Piece]:
    t_start = time.perf_counter()
    spec, gm, _ = await asyncio.to_thread(load_generation_model, model, precision)
    # The Python API is greedy unless asked otherwise (its tests and callers rely on
    # it); the OpenAI server and `webaccel run` fill gaps from the model's own
    # generation config instead, as vLLM does.
    gp = GenerationParams.from_kwargs(**params)
    prompt_ids = await asyncio.to_thread(build_prompt, gm, prompt, messages)
    if len(prompt_ids) + gp.max_tokens > gm.max_positions:
        raise InvalidInputError(
            f"prompt ({len(prompt_ids)} tokens) + max_tokens ({gp.max_tokens}) exceeds "
            f"{spec.name}'s context of {gm.max_positions} tokens"
        )
    stop_ids = set(gp.stop_token_ids) | (set(gm.eos_token_ids) if gp.include_eos_stops else set())
    seed = gp.resolved_seed()
    options = {**gp.page_options(stop_ids, seed), "kv_heads": gm.kv_heads, "head_dim": gm.head_dim}

    def resume(produced: list[int]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # Failover: the new worker prefills prompt + what was already produced
        # and generates only what is left (greedy then continues identically).
        ids = np.array([prompt_ids + produced], dtype=np.int64)
        return {"input_ids": ids}, {**options, "max_tokens": gp.max_tokens - len(produced)}

    detok = IncrementalDetokenizer(gm.decode)
    max_stop = max((len(s) for s in gp.stop), default=0)
    text_parts: list[str] = []
    pending = ""  # decoded text held back while it may begin a stop string
    pending_ids: list[int] = []
    tokens: list[int] = []
    finish = "length"
    t_first: float | None = None
    t_last = t_start
    page_stats: dict[str, Any] = {}
    sessions: list[Any] = []
    completed = False
    steps = engine.pool.stream(
        spec.name,
        {"input_ids": np.array([prompt_ids], dtype=np.int64)},
        options=options,
        resume=resume,
        prompt_tokens=len(prompt_ids),
        run_timeout=timeout,
        on_session=sessions.append,
        model_type="text_generation",
        precision=precision,
        **route,
    )
    try:
        async for ev in steps:
            if ev.final:
                page_stats = dict(ev.data)
                finish = str(page_stats.get("finish_reason", "length"))
                break
            token = int(ev.data["token"])
            t_last = time.perf_counter()
            if t_first is None:
                t_first = t_last
            tokens.append(token)
            pending_ids.append(token)
            pending += detok.push(token)
            hit = _find_stop(pending, gp.stop)
            if hit is not None:
                pending = pending[:hit]
                finish = "stop"
                break
            cut = len(pending) - (max_stop - 1) if max_stop else len(pending)
            if cut > 0:
                piece, pending = pending[:cut], pending[cut:]
                text_parts.append(piece)
                yield Piece(piece, tuple(pending_ids))
                pending_ids = []
        if finish != "stop" or not gp.stop:
            pending += detok.flush()
        if pending:
            text_parts.append(pending)
            yield Piece(pending, tuple(pending_ids))
        completed = True
    finally:
        await steps.aclose()  # a stop string or an early exit cancels the page's loop
        if not completed:
            finish = "cancelled"
        t_end = time.perf_counter()
        decode_s = (t_last - t_first) if t_first is not None else 0.0
        last = sessions[-1] if sessions else None
        stats = {
            "ttft_ms": (t_first - t_start) * 1000 if t_first is not None else None,
            "total_ms": (t_end - t_start) * 1000,
            "decode_tokens_per_s": (len(tokens) - 1) / decode_s
            if len(tokens) > 1 and decode_s > 0
            else None,
            "tokens_per_s": len(tokens) / (t_last - t_start) if tokens else None,
            "load_ms": sum(s.load_info.load_ms for s in sessions if s.load_info is not None)
            or None,
            "seed": seed,
            "decode_step": last.load_info.decode_step
            if last is not None and last.load_info is not None
            else None,
            "page": page_stats,
            "failovers": max(0, len(sessions) - 1),
        }
        holder["result"] = GenerationResult(
            model=spec.name,
            text="".join(text_parts),
            token_ids=tokens,
            prompt_tokens=len(prompt_ids),
            finish_reason=finish,
            stats=stats,
            backend=last.backend if last else "",
            worker_id=last.worker_id if last else "",
            browser=last.browser if last else "",
        )


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


# The captured decode step on webgpu (generate.mjs): rows decoded together, and KV
# cache positions (prompt + new tokens; longer requests decode step by step).
# WEBACCEL_DECODE_STEP=ROWSxPOSITIONS changes it, =off turns it off.
DECODE_STEP_ROWS = 8
DECODE_STEP_POSITIONS = 512


def decode_step_option() -> dict[str, int] | None:
    raw = os.environ.get("WEBACCEL_DECODE_STEP", "").strip().lower()
    if raw in ("off", "0", "no", "false"):
        return None
    if not raw:
        return {"batch": DECODE_STEP_ROWS, "max_len": DECODE_STEP_POSITIONS}
    try:
        rows, positions = (int(v) for v in raw.split("x"))
    except ValueError:
        raise InvalidInputError(
            f"WEBACCEL_DECODE_STEP={raw!r}: give ROWSxPOSITIONS (e.g. 8x512) or off"
        ) from None
    if rows < 1 or positions < 2:
        raise InvalidInputError(f"WEBACCEL_DECODE_STEP={raw!r}: rows >= 1 and positions >= 2")
    return {"batch": rows, "max_len": positions}


def generation_session_options(spec: Any, backend: str) -> dict[str, Any]:
    """Session options of a generator's variant: on WebGPU the KV cache stays on the
    GPU between steps (onnxruntime-web io binding of the ``present.*`` outputs), and
    the decode step is a captured session (``decode_step_option``)."""
    if backend != "webgpu":
        return {}
    meta_path = spec.onnx_path("fp32")
    if not meta_path.is_file():
        return {}
    gm = _MODELS.get(meta_path)
    if gm is None:
        gm = _MODELS[meta_path] = GenerationModel.load(spec.name, meta_path)
    present = [
        n.replace("past_key_values.", "present.")
        for n in gm.meta["inputs"]
        if n.startswith("past_key_values.")
    ]
    options: dict[str, Any] = {
        "ort": {"preferredOutputLocation": dict.fromkeys(present, "gpu-buffer")}
    }
    step = decode_step_option()
    if step is not None and "next_token" in gm.meta["outputs"]:
        options["decode_step"] = step
    return options
