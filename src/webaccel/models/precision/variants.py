"""The front door: :func:`make_variant` writes any precision of an fp32 model."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from webaccel.errors import InvalidInputError
from webaccel.models.precision.accuracy import Feed, Metric
from webaccel.models.precision.files import PRECISIONS
from webaccel.models.precision.fp16 import to_fp16
from webaccel.models.precision.int4 import DEFAULT_BLOCK_SIZE, to_int4
from webaccel.models.precision.int8 import to_int8
from webaccel.models.precision.mixed import to_mixed


def variant_path(
    fp32: str | os.PathLike[str], precision: str, dest_dir: Path | None = None
) -> Path:
    """``model.onnx`` -> ``model.int4.onnx`` beside it (or in ``dest_dir``)."""
    p = Path(fp32)
    return (dest_dir or p.parent) / f"{p.stem}.{precision}.onnx"


def make_variant(
    fp32: str | os.PathLike[str],
    precision: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    feeds: Sequence[Feed] | None = None,
    target: float = 0.99,
    metric: Metric = "cosine",
) -> Path:
    """Write the ``precision`` variant of ``fp32`` (``mixed`` needs ``feeds``); returns its path."""
    if precision not in PRECISIONS and dest is not None and str(dest) in PRECISIONS:
        # Also accept make_variant(fp32, dest, precision), the order registry.py calls.
        precision, dest = str(dest), precision
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}"
        )
    out = Path(dest) if dest else variant_path(fp32, precision)
    if precision == "fp32":
        if dest is not None and Path(dest) != Path(fp32):
            import shutil

            shutil.copyfile(fp32, out)
            return out
        return Path(fp32)
    if precision == "fp16":
        return to_fp16(fp32, out)
    if precision == "int8":
        return to_int8(fp32, out)
    if precision == "int4":
        return to_int4(fp32, out, block_size=block_size)
    if feeds is None:
        raise InvalidInputError("precision 'mixed' needs calibration inputs (feeds) to measure")
    to_mixed(fp32, out, feeds, target=target, metric=metric, block_size=block_size)
    return out


__all__ = ["make_variant", "variant_path"]
