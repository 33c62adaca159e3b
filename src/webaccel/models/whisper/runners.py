"""Synchronous :data:`~webaccel.models.whisper.decoding.Runner` seams in this process.

:class:`OrtRunner` runs the parts in native onnxruntime (tests, the precision
bench, ``mixed`` calibration); :class:`RecordingRunner` keeps the feeds each
part saw (calibration data for ``mixed``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from webaccel.models.whisper.decoding import Runner


class OrtRunner:
    """Native onnxruntime behind the :data:`Runner` seam."""

    def __init__(
        self, parts: Mapping[str, str | os.PathLike[str]], threads: int | None = None
    ) -> None:
        from webaccel.models.precision import session

        self.sessions = {name: session(path, threads=threads) for name, path in parts.items()}

    def __call__(self, part: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.sessions[part]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, dict(feeds)), strict=True))


class RecordingRunner:
    """Wraps a runner and keeps the feeds of each part (calibration data for ``mixed``)."""

    def __init__(self, run: Runner, keep: int = 64) -> None:
        self.run, self.keep = run, keep
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = {}

    def __call__(self, part: str, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        seen = self.feeds.setdefault(part, [])
        if len(seen) < self.keep:
            seen.append({k: np.array(v) for k, v in feeds.items()})
        return self.run(part, feeds)


__all__ = ["OrtRunner", "RecordingRunner"]
