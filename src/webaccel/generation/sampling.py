"""Generation parameters, and the reference sampler that ``web/generate.mjs`` mirrors.

The page samples; this module validates the parameters before they travel,
and implements the same algorithm in Python (the native onnxruntime baseline
and the tests use it; with the same seed and the same logits both pick the
same tokens).  Order, as in Hugging Face's ``generate``: repetition penalty ->
temperature -> top-k -> top-p -> draw.

* repetition penalty (CTRL, Keskar et al. 2019): for every token id already in
  the prompt or the output, ``logit / p`` if positive else ``logit * p``.
* ``temperature == 0`` means greedy (argmax, the lowest id on ties).
* top-k keeps the k most likely tokens (0 = all); top-p then keeps the
  smallest prefix of them, most likely first, whose probability reaches
  ``top_p`` (at least one token).  Ties order by token id.
* the draw uses mulberry32 seeded with ``seed`` (a 32-bit integer): one
  ``u in [0, 1)`` per step, walking the kept tokens' cumulative weights.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from webaccel.errors import InvalidInputError

MAX_TOKENS_LIMIT = 8192


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    stop: tuple[str, ...] = ()  # stop strings: matched on the text, in Python
    include_eos_stops: bool = True  # also stop at the model's end-of-sequence ids

    def __post_init__(self) -> None:
        def bad(msg: str) -> InvalidInputError:
            return InvalidInputError(msg)

        if (
            not isinstance(self.max_tokens, int)
            or isinstance(self.max_tokens, bool)
            or not (1 <= self.max_tokens <= MAX_TOKENS_LIMIT)
        ):
            raise bad(
                f"max_tokens must be an integer in [1, {MAX_TOKENS_LIMIT}], got {self.max_tokens!r}"
            )
        if not _number(self.temperature) or not 0 <= self.temperature <= 100:
            raise bad(f"temperature must be a number in [0, 100], got {self.temperature!r}")
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 0:
            raise bad(f"top_k must be a non-negative integer (0 = no limit), got {self.top_k!r}")
        if not _number(self.top_p) or not 0 < self.top_p <= 1:
            raise bad(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool)
        ):
            raise bad(f"seed must be an integer, got {self.seed!r}")
        if not _number(self.repetition_penalty) or not 0 < self.repetition_penalty <= 10:
            raise bad(
                f"repetition_penalty must be a number in (0, 10], got {self.repetition_penalty!r}"
            )
        if not all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in self.stop_token_ids
        ):
            raise bad("stop_token_ids must be non-negative integers")
        if len(self.stop) > 16 or not all(isinstance(s, str) and s for s in self.stop):
            raise bad("stop must be at most 16 non-empty strings")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> GenerationParams:
        known = set(cls.__dataclass_fields__)
        unknown = set(kwargs) - known
        if unknown:
            raise InvalidInputError(
                f"unknown generation parameter(s) {sorted(unknown)}; accepted: {sorted(known)}"
            )
        clean = {k: v for k, v in kwargs.items() if v is not None}
        if "stop" in clean and isinstance(clean["stop"], str):
            clean["stop"] = (clean["stop"],)
        for key in ("stop", "stop_token_ids"):
            if key in clean:
                if not isinstance(clean[key], list | tuple):
                    raise InvalidInputError(f"{key} must be a list")
                clean[key] = tuple(clean[key])
        return cls(**clean)

    def resolved_seed(self) -> int:
        return (self.seed if self.seed is not None else secrets.randbits(32)) & 0xFFFFFFFF

    def page_options(self, stop_ids: Iterable[int], seed: int) -> dict[str, Any]:
        """The options the page's decode loop takes (see generate.mjs)."""
        return {
            "max_tokens": self.max_tokens,
            "temperature": float(self.temperature),
            "top_k": self.top_k,
            "top_p": float(self.top_p),
            "seed": seed,
            "repetition_penalty": float(self.repetition_penalty),
            "stop_token_ids": sorted(set(int(i) for i in stop_ids)),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int):  # always finite; math.isfinite would overflow past 1e308
        return True
    return isinstance(x, float) and math.isfinite(x)


class Mulberry32:
    """The PRNG of generate.mjs (Tommy Ettinger's mulberry32), bit for bit."""

    def __init__(self, seed: int) -> None:
        self.state = seed & 0xFFFFFFFF

    def next(self) -> float:
        self.state = (self.state + 0x6D2B79F5) & 0xFFFFFFFF
        t = self.state
        t = _imul(t ^ (t >> 15), t | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & 0xFFFFFFFF
        return ((t ^ (t >> 14)) & 0xFFFFFFFF) / 4294967296.0


def _imul(a: int, b: int) -> int:
    return (a * b) & 0xFFFFFFFF


@dataclass
class Sampler:
    """Picks the next token from last-position logits; the twin of generate.mjs's ``pick``."""

    params: GenerationParams
    seed: int
    seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.rng = Mulberry32(self.seed)

    def observe(self, ids: Iterable[int]) -> None:
        self.seen.update(int(i) for i in ids)

    def pick(self, logits: np.ndarray) -> int:
        x = np.asarray(logits, dtype=np.float64).reshape(-1).copy()
        p = self.params
        if p.repetition_penalty != 1.0 and self.seen:
            idx = np.fromiter(self.seen, dtype=np.int64)
            idx = idx[idx < x.size]
            v = x[idx]
            x[idx] = np.where(v > 0, v / p.repetition_penalty, v * p.repetition_penalty)
        if p.temperature == 0:
            token = int(np.argmax(x))
        else:
            x = x / p.temperature
            order = np.lexsort((np.arange(x.size), -x))  # by logit desc, then id asc
            if p.top_k:
                order = order[: p.top_k]
            w = np.exp(x[order] - x[order[0]])
            # Sums run left to right (np.cumsum), as the JS loop adds them.
            if p.top_p < 1.0:
                cum = np.cumsum(w)
                keep = int(np.searchsorted(cum / cum[-1], p.top_p, side="left")) + 1
                order, w = order[:keep], w[:keep]
            u = self.rng.next() * float(np.cumsum(w)[-1])
            acc = 0.0
            token = int(order[-1])
            for tid, wi in zip(order.tolist(), w.tolist(), strict=True):
                acc += wi
                if u < acc:
                    token = tid
                    break
        self.seen.add(token)
        return token
