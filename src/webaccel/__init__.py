"""webaccel: a pool of web browsers as hardware-accelerated ONNX inference workers.

The public API (imported on first use, so ``import webaccel`` stays light)::

    from webaccel import WebAccelerator, pipeline

    with WebAccelerator() as acc:
        acc.accelerate("minilm", ["a sentence"])["embeddings"]

    embed = pipeline("feature-extraction")          # transformers.js task names
    embed(["a sentence", "another"])                # (2, 384) float32
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "WebAccelerator": "webaccel.api",
    "ResourcePoolBridgeIntegration": "webaccel.api",
    "IPFSWebAccelerator": "webaccel.api",
    "create_ipfs_web_accelerator": "webaccel.api",
    "Pipeline": "webaccel.pipelines",
    "pipeline": "webaccel.pipelines",
    "register_onnx": "webaccel.models.registry",
    "WebAccelError": "webaccel.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'webaccel' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
