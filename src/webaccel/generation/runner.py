"""Generation over the engine's browser workers: an async stream of text pieces.

:func:`stream_generate` tokenizes in Python, sends one ``generate`` frame, and
turns the page's ``stream`` frames (one token id each) into text pieces with
:class:`~webaccel.generation.detok.IncrementalDetokenizer`.  Stop strings are
matched here on the text (the page only knows ids): text that could be the
start of a stop string is held back until it cannot be, and a match cancels
the page's loop.  Leaving the iteration early (``aclose()``, ``break``, a
client disconnect) cancels the generation in the page too.

A worker is leased from the engine's pool only to place and load the model;
the generation then runs on that page's connection outside the lease, so
several generations share a page (the page alternates their steps) and the
pool can still send the page other work.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from webaccel.errors import BackendUnavailableError, InvalidInputError, WorkerLostError
from webaccel.generation.detok import IncrementalDetokenizer
from webaccel.generation.meta import GenerationModel
from webaccel.generation.sampling import GenerationParams
from webaccel.models import registry
from webaccel.pool.transport import ModelRef

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
    **params: Any,
) -> TextStream:
    """Stream ``model``'s continuation of ``prompt`` (or of chat ``messages``).

    ``params`` are :class:`GenerationParams` fields: max_tokens, temperature,
    top_k, top_p, seed, repetition_penalty, stop_token_ids, stop.
    """
    gp = GenerationParams.from_kwargs(**params)  # validate before anything starts
    holder: dict[str, Any] = {}
    return TextStream(
        _stream(engine, model, prompt, messages, platform, precision, timeout, gp, holder), holder
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
    platform: str | None,
    precision: str,
    timeout: float,
    gp: GenerationParams,
    holder: dict[str, Any],
) -> AsyncIterator[Piece]:
    t_start = time.perf_counter()
    spec, gm, _ = await asyncio.to_thread(load_generation_model, model, precision)
    prompt_ids = await asyncio.to_thread(build_prompt, gm, prompt, messages)
    if len(prompt_ids) + gp.max_tokens > gm.max_positions:
        raise InvalidInputError(
            f"prompt ({len(prompt_ids)} tokens) + max_tokens ({gp.max_tokens}) exceeds "
            f"{spec.name}'s context of {gm.max_positions} tokens"
        )
    stop_ids = set(gp.stop_token_ids) | (set(gm.eos_token_ids) if gp.include_eos_stops else set())
    seed = gp.resolved_seed()
    options = {**gp.page_options(stop_ids, seed), "kv_heads": gm.kv_heads, "head_dim": gm.head_dim}
    inputs = {"input_ids": np.array([prompt_ids], dtype=np.int64)}

    queue: asyncio.Queue[int] = asyncio.Queue()
    detok = IncrementalDetokenizer(gm.decode)
    max_stop = max((len(s) for s in gp.stop), default=0)
    text_parts: list[str] = []
    pending = ""  # decoded text held back while it may begin a stop string
    pending_ids: list[int] = []
    tokens: list[int] = []
    finish = "length"
    t_first: float | None = None
    t_last = t_start
    load_ms: float | None = None
    page_stats: dict[str, Any] = {}
    task: asyncio.Task[Any] | None = None
    worker: Any = None
    backend = ""
    getter: asyncio.Future[int] | None = None
    completed = False
    try:
        for attempt in range(3):
            worker, ref, load_ms = await _place(engine, spec, gm, precision, platform, timeout)
            backend = ref.backend
            try:
                conn = getattr(worker, "connection", None)
                if conn is None or not conn.open:
                    raise WorkerLostError(f"worker {worker.id} went away before generating")
                task = asyncio.ensure_future(
                    conn.run(
                        ref.key,
                        inputs,
                        kind="generate",
                        options=options,
                        timeout=timeout,
                        on_stream=lambda d: queue.put_nowait(int(d["token"])),
                    )
                )
                while True:
                    getter = asyncio.ensure_future(queue.get())
                    await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        if queue.empty():
                            reply = task.result()  # raises the page's error, if any
                            page_stats = dict(reply.data)
                            finish = str(page_stats.get("finish_reason", "length"))
                            break
                        token = queue.get_nowait()
                    else:
                        token = getter.result()
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
                break
            except WorkerLostError:
                if tokens or attempt == 2:
                    raise
        if finish != "stop" or not gp.stop:
            pending += detok.flush()
        if pending:
            text_parts.append(pending)
            yield Piece(pending, tuple(pending_ids))
        completed = True
    finally:
        if getter is not None and not getter.done():
            getter.cancel()
        if task is not None and not task.done():
            task.cancel()  # PageConnection sends the page a cancel for this request
            with contextlib.suppress(BaseException):
                await task
        if not completed:
            finish = "cancelled"
        t_end = time.perf_counter()
        decode_s = (t_last - t_first) if t_first is not None else 0.0
        stats = {
            "ttft_ms": (t_first - t_start) * 1000 if t_first is not None else None,
            "total_ms": (t_end - t_start) * 1000,
            "decode_tokens_per_s": (len(tokens) - 1) / decode_s
            if len(tokens) > 1 and decode_s > 0
            else None,
            "tokens_per_s": len(tokens) / (t_last - t_start) if tokens else None,
            "load_ms": load_ms,
            "seed": seed,
            "page": page_stats,
        }
        holder["result"] = GenerationResult(
            model=spec.name,
            text="".join(text_parts),
            token_ids=tokens,
            prompt_tokens=len(prompt_ids),
            finish_reason=finish,
            stats=stats,
            backend=backend,
            worker_id=getattr(worker, "id", ""),
            browser=getattr(worker, "browser", ""),
        )


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


_LOAD_LOCKS: dict[tuple[str, str], asyncio.Lock] = {}


async def _place(
    engine: Engine,
    spec: Any,
    gm: GenerationModel,
    precision: str,
    platform: str | None,
    timeout: float,
) -> tuple[Any, ModelRef, float | None]:
    """Lease a worker from the pool, make sure the model is loaded there, release it."""
    requested = platform or engine.default_platform or "auto"
    # The engine's backend choice (webgpu -> webnn -> wasm fallback, never a software
    # adapter unless asked for explicitly) becomes the lease's hard constraint.
    platform_for = getattr(engine, "_platform_for", None)
    if platform_for is not None:
        target, _reason = await platform_for(
            requested, explicit=platform is not None, precision=precision
        )
    else:
        target = None if requested == "auto" else requested
    async with engine.pool.get_connection("text_generation", target) as lease:
        worker = lease.worker
        backend = lease.backend or target or "wasm"
        resolved = await engine.pool.resolve(spec.name)
        key = f"{spec.name}/{precision}/{backend}"
        ref = next((v for v in resolved.variants if v.key == key), None)
        if ref is None:
            raise BackendUnavailableError(f"{spec.name} has no {precision} variant for {backend}")
        if backend == "webgpu":
            # Keep the KV cache on the GPU between steps (onnxruntime-web io binding).
            present = [
                n.replace("past_key_values.", "present.")
                for n in gm.meta["inputs"]
                if n.startswith("past_key_values.")
            ]
            ref = dataclasses.replace(
                ref,
                session_options={
                    **ref.session_options,
                    "ort": {"preferredOutputLocation": dict.fromkeys(present, "gpu-buffer")},
                },
            )
        # The page answers at once when the key is already loaded; the lock keeps two
        # streams from loading the same 540 MB model twice into one page.
        lock = _LOAD_LOCKS.setdefault((worker.id, ref.key), asyncio.Lock())
        async with lock:
            info = await worker.load_model(ref, timeout=timeout)
    load_ms = info.load_ms if info.source != "memory" else None
    return worker, ref, load_ms
