"""The built parts of ``whisper-tiny-en`` per precision, made once and cached.

``$WEBACCEL_HOME/models/whisper-tiny-en/<precision>/{encoder,decoder}.onnx``
(the registry's layout): fp32 exported from the weights, the other
precisions made from fp32 by :func:`~webaccel.models.whisper.variants.make_variants`.
"""

from __future__ import annotations

import os
from pathlib import Path

from webaccel.errors import LoadFailedError

NAME = "whisper-tiny-en"


def parts_in(directory: str | os.PathLike[str]) -> dict[str, Path]:
    d = Path(directory)
    parts = {"encoder": d / "encoder.onnx", "decoder": d / "decoder.onnx"}
    missing = [str(p) for p in parts.values() if not p.is_file()]
    if missing:
        raise LoadFailedError(f"whisper parts missing: {missing}; run export_onnx first")
    return parts


def artifact_dir(precision: str = "fp32") -> Path:
    """``$WEBACCEL_HOME/models/whisper-tiny-en/<precision>/`` (the registry's layout)."""
    from webaccel import paths

    return paths.subdir("models") / NAME / precision


def ensure_parts(precision: str = "fp32", *, block_size: int | None = None) -> dict[str, Path]:
    """``{"encoder": path, "decoder": path}`` for ``precision``, built once and cached.

    Built in a temporary folder beside the target and moved in part by part;
    a folder missing either part counts as not built.
    """
    import shutil
    import tempfile

    from webaccel.models.whisper.export import export_onnx
    from webaccel.models.whisper.variants import make_variants

    target = artifact_dir(precision)
    try:
        return parts_in(target)
    except LoadFailedError:
        pass
    fp32 = ensure_parts("fp32") if precision != "fp32" else None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".building-{precision}-"))
    try:
        if fp32 is None:
            export_onnx(tmp)
        else:
            make_variants(fp32, precision, tmp, block_size=block_size)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("encoder.onnx", "decoder.onnx"):
            os.replace(tmp / name, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return parts_in(target)


__all__ = ["NAME", "artifact_dir", "ensure_parts", "parts_in"]
