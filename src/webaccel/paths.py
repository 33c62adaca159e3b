"""Where webaccel keeps its data: ``$WEBACCEL_HOME`` (default ``~/.cache/webaccel``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    root = Path(os.environ.get("WEBACCEL_HOME") or Path.home() / ".cache" / "webaccel")
    root.mkdir(parents=True, exist_ok=True)
    return root


def subdir(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path
