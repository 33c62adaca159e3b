"""Static shape buckets (pure): pad a batch up to a fixed shape, cut the outputs back.

onnxruntime-web's graph capture records the GPU commands of one run and
replays them, which removes its fixed CPU cost per run (MiniLM 1x16 on an
H100: 6.98 -> 2.32 ms, results/gpu run 5), but a captured session only takes the
shapes it was made for.  So the pool keeps one session per bucket, a shape
with every free dimension fixed (``freeDimensionOverrides``), and pads each
batch up to the smallest bucket that holds it:

* the batch axis is padded with copies of the first row (real rows, so no
  row is all padding; their outputs are dropped);
* other axes (a text model's sequence) with the input's pad value, which the
  model masks out (token id 0 under an attention mask of 0).

Only models that declare their dimensions (:class:`ShapeBuckets`) are bucketed;
a batch larger than the largest bucket runs unbucketed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

Tensors = Mapping[str, np.ndarray]


def powers_of_two(lo: int, hi: int) -> tuple[int, ...]:
    out, n = [], lo
    while n <= hi:
        out.append(n)
        n *= 2
    return tuple(out)


@dataclass(frozen=True)
class Bucket:
    """One padded batch: what to run, and how to cut the outputs back."""

    shape: Mapping[str, int]  # dimension name -> bucket size (freeDimensionOverrides)
    inputs: dict[str, np.ndarray]
    rows: int  # real rows along the batch axis
    actual: Mapping[str, int]  # dimension name -> the batch's own size

    @property
    def label(self) -> str:
        return "x".join(str(v) for v in self.shape.values())


@dataclass(frozen=True)
class ShapeBuckets:
    """How a model's inputs may be padded to fixed shapes.

    ``inputs``: input name -> the dimension name of each axis (``None`` for a
    fixed axis), e.g. ``{"input_ids": ("batch", "sequence")}``.  ``sizes``:
    dimension name -> allowed sizes, ascending.  ``outputs``: output name ->
    dimension names, for outputs with padded axes besides the batch axis
    (other outputs are cut along axis 0 only).  ``pad_values``: per input
    (default 0).
    """

    inputs: Mapping[str, tuple[str | None, ...]]
    sizes: Mapping[str, tuple[int, ...]]
    batch_dim: str = "batch"
    outputs: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    pad_values: Mapping[str, float] = field(default_factory=dict)

    def fit(self, inputs: Tensors) -> Bucket | None:
        """The batch padded to its bucket, or None (not this model's inputs, or too large)."""
        if set(inputs) != set(self.inputs):
            return None
        actual: dict[str, int] = {}
        for name, dims in self.inputs.items():
            arr = inputs[name]
            if arr.ndim != len(dims):
                return None
            for dim, n in zip(dims, arr.shape, strict=True):
                if dim is not None and actual.setdefault(dim, int(n)) != n:
                    return None  # two inputs disagree on a dimension
        shape: dict[str, int] = {}
        for dim, n in actual.items():
            size = next((s for s in self.sizes.get(dim, ()) if s >= n), None)
            if size is None:
                return None
            shape[dim] = size
        padded = {name: self._pad(name, inputs[name], shape) for name in self.inputs}
        return Bucket(shape, padded, actual.get(self.batch_dim, 0), actual)

    def _pad(self, name: str, arr: np.ndarray, shape: Mapping[str, int]) -> np.ndarray:
        dims = self.inputs[name]
        out = arr
        for axis, dim in enumerate(dims):
            if dim is None or shape[dim] == arr.shape[axis]:
                continue
            extra = shape[dim] - out.shape[axis]
            if dim == self.batch_dim:  # copies of the first row
                first = np.take(out, [0], axis=axis)
                out = np.concatenate([out, np.repeat(first, extra, axis=axis)], axis=axis)
            else:
                width = [(0, 0)] * out.ndim
                width[axis] = (0, extra)
                out = np.pad(out, width, constant_values=self.pad_values.get(name, 0))
        return np.ascontiguousarray(out)

    def unpad(self, outputs: Tensors, bucket: Bucket) -> dict[str, np.ndarray]:
        """Outputs of the padded run cut back to the batch's own shape."""
        cut: dict[str, np.ndarray] = {}
        for name, arr in outputs.items():
            dims = self.outputs.get(name, (self.batch_dim,))
            index = tuple(
                slice(0, bucket.actual[d]) if d is not None and d in bucket.actual else slice(None)
                for d in dims[: arr.ndim]
            )
            cut[name] = arr[index]
        return cut
