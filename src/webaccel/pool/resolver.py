"""The model seam: how the pool learns what a model name means.

The pool knows nothing about tokenizers, image transforms or the model
registry.  It asks a **resolver** -- any callable
``resolver(model_name, model_type) -> ResolvedModel`` (sync or async) -- once
per model name, and caches the answer.  ``webaccel.models`` plugs the real
registry in; tests and small programs use :class:`StaticResolver`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from webaccel.errors import ModelNotFoundError
from webaccel.pool.buckets import ShapeBuckets
from webaccel.pool.state import ModelInfo
from webaccel.pool.transport import ModelRef

Tensors = dict[str, np.ndarray]


@dataclass(frozen=True)
class ResolvedModel:
    """Everything the pool needs to schedule and run one model.

    ``variants``: one :class:`ModelRef` per (backend, precision) the model can
    run as, default first (routing picks among them; see
    :mod:`webaccel.pool.routing`).  ``preprocess`` turns what the caller gave
    (text, an image, a dict of lists) into named tensors; ``postprocess`` turns
    one request's outputs back into what the caller wants (``(outputs,
    original_input) -> result``).  Both are optional: without them inputs must
    already be a mapping of name -> array and the outputs dict is returned.

    ``batchable``: requests may be concatenated along ``batch_axis`` (of every
    input and output) up to ``max_batch`` rows, waiting at most ``max_wait_ms``
    for company.
    """

    name: str
    model_type: str | None
    variants: tuple[ModelRef, ...]
    batchable: bool = False
    batch_axis: int = 0
    max_batch: int = 8
    max_wait_ms: float = 2.0
    output_names: tuple[str, ...] | None = None
    preprocess: Callable[[Any], Mapping[str, np.ndarray]] | None = None
    postprocess: Callable[[Tensors, Any], Any] | None = None
    auto_precisions: tuple[str, ...] | None = None
    # Pad batches to fixed shapes and run them as captured sessions on JSEP
    # WebGPU workers (webaccel.pool.buckets); None: run every shape as given.
    shape_buckets: ShapeBuckets | None = None
    # A session loads the chosen variant before it starts; a model of several
    # graphs (Whisper) loads its parts itself through the session instead.
    load_on_session: bool = True
    # The trusted answer for checked workers (webaccel.pool.verify): ``reference(
    # tensors, precision) -> outputs`` runs in a thread (native onnxruntime).
    reference: Callable[[Tensors, str], Tensors] | None = None
    # Dummy inputs of typical shapes: a worker that loads this model runs them
    # (the pool's ``warmup_runs`` times in all, cycling) before it takes traffic,
    # so V8's WASM tier-up and the first runs' allocations are not a caller's.
    warmup_inputs: tuple[Mapping[str, np.ndarray], ...] = ()

    def info(self) -> ModelInfo:
        return ModelInfo(
            name=self.name,
            model_type=self.model_type,
            variants=self.variants,
            max_batch=self.max_batch if self.batchable else 1,
            max_wait=self.max_wait_ms / 1000.0,
            auto_precisions=self.auto_precisions,
        )


ModelResolver = Callable[[str, "str | None"], "ResolvedModel | Awaitable[ResolvedModel]"]
"""``resolver(model_name, model_type)``: raise ModelNotFoundError for unknown names."""


async def call_resolver(
    resolver: ModelResolver, name: str, model_type: str | None
) -> ResolvedModel:
    out = resolver(name, model_type)
    if inspect.isawaitable(out):
        out = await out
    if not isinstance(out, ResolvedModel):
        raise TypeError(f"resolver returned {type(out).__name__}, not ResolvedModel")
    return out


class StaticResolver:
    """A resolver over a fixed table (tests, scripts); ``register`` adds models."""

    def __init__(self, models: Mapping[str, ResolvedModel] | None = None) -> None:
        self._models: dict[str, ResolvedModel] = dict(models or {})

    def register(self, model: ResolvedModel) -> None:
        self._models[model.name] = model

    def __call__(self, name: str, model_type: str | None = None) -> ResolvedModel:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise ModelNotFoundError(
                f"unknown model {name!r}; known: {known}. Register it with the pool's resolver"
            ) from None
