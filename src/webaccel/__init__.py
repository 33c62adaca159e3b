"""webaccel: a pool of web browsers as hardware-accelerated ONNX inference workers."""
from __future__ import annotations

__version__ = "0.1.0"
