"""Dynamic batching helpers (pure): which inputs can share a batch, merge, split.

Two requests can share a batch when every input tensor has the same name,
dtype and shape except along the batch axis.  Padding variable-length inputs
to a common shape is the preprocessor's job (it knows the pad token), not the
pool's: merging tensors of different shapes would change results.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from webaccel.errors import InvalidInputError

BatchKey = Hashable


def batch_signature(inputs: Mapping[str, np.ndarray], axis: int = 0) -> tuple[BatchKey, int]:
    """(key, rows): equal keys can be concatenated along ``axis``; rows is this request's size."""
    if not inputs:
        raise InvalidInputError("no input tensors; pass a dict of name -> array")
    rows: int | None = None
    parts = []
    for name in sorted(inputs):
        arr = inputs[name]
        if arr.ndim <= axis:
            raise InvalidInputError(
                f"input {name!r} has shape {arr.shape}: no batch axis {axis}; add one"
            )
        n = int(arr.shape[axis])
        if rows is None:
            rows = n
        elif n != rows:
            raise InvalidInputError(
                f"inputs disagree on batch size along axis {axis}: {name!r} has {n}, others {rows}"
            )
        shape = arr.shape[:axis] + arr.shape[axis + 1 :]
        parts.append((name, arr.dtype.str, shape))
    assert rows is not None
    return tuple(parts), rows


def merge(batch: Sequence[Mapping[str, np.ndarray]], axis: int = 0) -> dict[str, np.ndarray]:
    """Concatenate requests along ``axis`` (callers checked the signatures match)."""
    if len(batch) == 1:
        return dict(batch[0])
    return {name: np.concatenate([b[name] for b in batch], axis=axis) for name in batch[0]}


def split(
    outputs: Mapping[str, np.ndarray], rows: Sequence[int], axis: int = 0
) -> list[dict[str, np.ndarray]]:
    """Cut batched outputs back into per-request pieces of ``rows`` each.

    An output whose size along ``axis`` is not the batch total (a per-batch
    scalar, say) cannot be attributed to a request: that is a model that
    should not have been declared batchable, so it raises.
    """
    if len(rows) == 1:
        return [dict(outputs)]
    total = sum(rows)
    bounds = np.cumsum([0, *rows])
    out: list[dict[str, np.ndarray]] = [{} for _ in rows]
    for name, arr in outputs.items():
        if arr.ndim <= axis or arr.shape[axis] != total:
            raise InvalidInputError(
                f"output {name!r} has shape {arr.shape}, not {total} rows on axis {axis}: "
                "this model cannot be batched; declare it batchable=False"
            )
        for i in range(len(rows)):
            sl = [slice(None)] * arr.ndim
            sl[axis] = slice(int(bounds[i]), int(bounds[i + 1]))
            out[i][name] = arr[tuple(sl)]
    return out


def plan_microbatches(
    lengths: Sequence[int],
    *,
    max_rows: int = 32,
    max_tokens: int = 2048,
    granule: int = 8,
    max_stretch: float = 2.0,
) -> list[tuple[list[int], int]]:
    """Cut a list of sequences into padded micro-batches: ``[(indices, padded_length), ...]``.

    Sequences are sorted by length (stable, so equal lengths keep the caller's
    order) and taken in runs of at most ``max_rows`` whose padded size
    (rows x padded length) stays within ``max_tokens``.  A run is padded to its
    longest member rounded up to ``granule`` (so concurrent callers' runs share
    shapes and can be batched together), and a run closes before a member
    would be padded to more than ``max_stretch`` times its own bucket: a
    6-token sentence is never padded to 128.  Every index appears exactly once.
    """
    if max_rows < 1 or max_tokens < 1 or granule < 1 or max_stretch < 1:
        raise InvalidInputError("max_rows, max_tokens and granule must be >= 1, max_stretch >= 1")

    def bucket(n: int) -> int:
        return max(granule, -(-int(n) // granule) * granule)

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    plan: list[tuple[list[int], int]] = []
    group: list[int] = []
    first = 0
    for i in order:
        b = bucket(lengths[i])
        if group and (
            len(group) + 1 > max_rows
            or (len(group) + 1) * b > max_tokens
            or b > max_stretch * first
        ):
            plan.append((group, bucket(lengths[group[-1]])))
            group = []
        if not group:
            first = b
        group.append(i)
    if group:
        plan.append((group, bucket(lengths[group[-1]])))
    return plan
