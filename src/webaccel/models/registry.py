"""Short model names -> their :class:`~webaccel.models.spec.ModelSpec`.

The built-in families register on first lookup; :func:`register` and
:func:`register_onnx` add a user's own.  The spec types live in the leaf
module :mod:`webaccel.models.spec` (re-exported here), so family modules
never import this one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import InvalidInputError, ModelNotFoundError
from webaccel.models.spec import (
    PRECISIONS,
    TASKS,
    ModelSpec,
    Prepared,
    Processor,
    RunLoop,
    StepFn,
)

_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    if spec.task not in TASKS:
        raise InvalidInputError(f"unknown task {spec.task!r}; choose one of {TASKS}")
    for name in (spec.name, *spec.aliases):
        if name in _REGISTRY and not replace:
            raise InvalidInputError(f"a model named {name!r} is already registered")
        _REGISTRY[name] = spec
    return spec


def get(name: str) -> ModelSpec:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted({s.name for s in _REGISTRY.values()}))
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {known} "
            "(register your own with webaccel.models.registry.register)",
            details={"model": name},
        ) from None


def all_models() -> list[ModelSpec]:
    _load_builtins()
    seen: dict[str, ModelSpec] = {}
    for spec in _REGISTRY.values():
        seen.setdefault(spec.name, spec)
    return list(seen.values())


_builtins_loaded = False
# Concurrent first look-ups (streams started together each resolve their model in a
# thread) must not see the flag set before the built-ins are registered.
_builtins_lock = threading.Lock()


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    with _builtins_lock:
        if _builtins_loaded:
            return
        from webaccel.models import smollm, text, vision, whisper

        register(text.MINILM)
        register(smollm.SMOLLM2)
        register(vision.NSFW_CNN)
        register(vision.VIT_SALIENCY)
        register(whisper.WHISPER_TINY_EN)
        _builtins_loaded = True


class RawTensorProcessor:
    """For a user's own ONNX file: tensors in (a dict of name -> array), tensors out."""

    def preprocess(self, data: Any, options: dict[str, Any]) -> Prepared:
        raise InvalidInputError(
            "this model was registered from a bare ONNX file and takes raw tensors: pass a dict "
            "of input name -> list/array (e.g. {'input_ids': [[101, 102]]})")

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, Any]:
        return dict(outputs)


def register_onnx(name: str, path: str | os.PathLike[str], *, task: str | None = None,
                  replace: bool = False) -> ModelSpec:
    """Register a local ONNX file as model ``name`` (the task inferred from its graph
    unless given).  A file that is not an ONNX model is refused here, not in a page."""
    import shutil

    import onnx

    from webaccel.errors import LoadFailedError
    from webaccel.models.infer import infer_model_type

    source = Path(path)
    if not source.is_file():
        raise InvalidInputError(f"no ONNX file at {source}")
    try:
        model = onnx.load(str(source), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as exc:  # DecodeError, ValidationError: the file is not a usable model
        raise LoadFailedError(f"{source} is not a valid ONNX model ({exc}); export it again or "
                              "check that the file is complete") from None
    if task is None:
        guess = infer_model_type(model)
        if guess.task not in TASKS:
            raise InvalidInputError(f"cannot tell what {source.name} is ({guess.reason}); "
                                    f"pass task= one of {TASKS}")
        task = guess.task
    return register(
        ModelSpec(name=name, task=task, source=f"file:{source}",
                  description=f"{task} model from {source}",
                  build_fp32=lambda dest: shutil.copyfile(source, dest),
                  processor=RawTensorProcessor),
        replace=replace)


__all__ = [
    "PRECISIONS",
    "TASKS",
    "ModelSpec",
    "Prepared",
    "Processor",
    "RawTensorProcessor",
    "RunLoop",
    "StepFn",
    "all_models",
    "get",
    "register",
    "register_onnx",
]
