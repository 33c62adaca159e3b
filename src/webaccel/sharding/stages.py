"""A registry model split into stage models (``minilm`` -> ``minilm.stage0of2``, ...).

Each stage is registered as a model of its own (raw tensors in and out), so
the pool resolves, places, loads and serves it like any other: its file lives
under ``$WEBACCEL_HOME/models/<stage name>@<revision>/fp32/model.onnx`` and
travels by its own CID.  The split itself is :mod:`webaccel.sharding.split`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from webaccel.errors import InvalidInputError
from webaccel.models import registry
from webaccel.models.spec import ModelSpec
from webaccel.sharding import split as cut


@dataclass(frozen=True)
class Stage:
    index: int
    spec: ModelSpec
    layers: tuple[int, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.spec.name

    def path(self) -> Path:
        return self.spec.onnx_path("fp32")

    def size_bytes(self) -> int:
        return self.path().stat().st_size


@dataclass(frozen=True)
class SplitModel:
    parent: ModelSpec
    sizes: tuple[int, ...]  # layers per stage
    stages: tuple[Stage, ...]
    how: str  # "layers" (even layer count) or "cost" (measured)

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "stage": s.index,
                "model": s.name,
                "layers": list(s.layers),
                "inputs": list(s.inputs),
                "outputs": list(s.outputs),
                "bytes": s.size_bytes(),
            }
            for s in self.stages
        ]


def stage_name(parent: str, index: int, sizes: tuple[int, ...]) -> str:
    n = len(sizes)
    even = tuple(cut.even_cuts(sum(sizes), n)) == sizes
    return f"{parent}.stage{index}of{n}" + ("" if even else "." + "-".join(map(str, sizes)))


_lock = threading.Lock()


@cache
def _shaped(src: str, mtime_ns: int) -> Any:
    import onnx

    return cut.with_shapes(onnx.load(src))


def _build_stage(src: Path, sizes: tuple[int, ...], index: int, dest: Path) -> None:
    import onnx

    with _lock:  # one shape inference per source file, not one per stage
        shaped = _shaped(str(src), src.stat().st_mtime_ns)
    graphs = cut.stage_graphs(shaped, sizes)
    cut.extract_stage(shaped, graphs[index], dest)
    onnx.checker.check_model(str(dest))


def split_model(name: str, stages: int | None = None, *, sizes: tuple[int, ...] | None = None,
                how: str = "layers") -> SplitModel:
    """Split registry model ``name`` (fp32) into stages, building and registering them once.

    ``stages``: that many stages of (nearly) equal layer count; or ``sizes``:
    layers per stage (e.g. from :func:`webaccel.sharding.plan.measured_sizes`).
    """
    import onnx

    parent = registry.get(name)
    if parent.build_parts is not None:
        raise InvalidInputError(
            f"{parent.name} is made of several graphs ({', '.join(parent.ensure_parts('fp32'))}); "
            "splitting it by layers is not supported yet")
    src = parent.ensure_onnx("fp32")
    if sizes is None:
        if stages is None:
            raise InvalidInputError("give stages or sizes")
        sizes = tuple(cut.even_cuts(cut.count_layers(src), stages))
    sizes = tuple(int(s) for s in sizes)
    out: list[Stage] = []
    first = 0
    for k, n_layers in enumerate(sizes):
        sname = stage_name(parent.name, k, sizes)
        spec = ModelSpec(
            name=sname,
            task=parent.task,
            source=f"split:{parent.name}",
            description=f"stage {k} of {len(sizes)} of {parent.name} "
            f"(layers {first}-{first + n_layers - 1})",
            build_fp32=lambda dest, k=k: _build_stage(src, sizes, k, dest),  # type: ignore[misc]
            processor=registry.RawTensorProcessor,
            revision=parent.revision,
        )
        registry.register(spec, replace=True)
        path = spec.ensure_onnx("fp32")
        g = onnx.load(str(path), load_external_data=False).graph
        out.append(Stage(k, spec, tuple(range(first, first + n_layers)),
                         tuple(i.name for i in g.input), tuple(o.name for o in g.output)))
        first += n_layers
    return SplitModel(parent, sizes, tuple(out), how)


__all__ = ["SplitModel", "Stage", "split_model", "stage_name"]
