"""Reading and writing the ONNX files variants are made from and into, and their size."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import onnx

from webaccel.errors import LoadFailedError

Precision = Literal["fp32", "fp16", "int8", "int4", "mixed"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4", "mixed")


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX file (with external data), mapping failures to LoadFailedError."""
    path = Path(path)
    if not path.is_file():
        raise LoadFailedError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... on garbage
        raise LoadFailedError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
            "re-export or re-download it"
        ) from exc


def model_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an ONNX file plus any external-data files it references."""
    path = Path(path)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location" and entry.value not in seen:
                    seen.add(entry.value)
                    total += (path.parent / entry.value).stat().st_size
    return total


def save_model(model: onnx.ModelProto, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Protobuf cannot serialize > 2 GiB; such models keep weights beside the file.
    if model.ByteSize() > 1_900_000_000:
        onnx.save(model, str(dest), save_as_external_data=True, location=dest.name + ".data")
    else:
        onnx.save(model, str(dest))
    return dest


__all__ = ["PRECISIONS", "Precision", "load_model", "model_bytes", "save_model"]
