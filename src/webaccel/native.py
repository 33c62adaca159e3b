"""Native onnxruntime in the Python process: the ``cpu`` last resort.

When a caller's ``priority_list`` ends in ``cpu`` and no browser can serve
(none installed, none launches, no capable backend), the request runs here on
the same ONNX file the pages would load, and the result says so.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from webaccel.models.registry import ModelSpec


class NativeRunner:
    def __init__(self, threads: int = 0) -> None:
        self.threads = threads
        self._sessions: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def _session(self, spec: ModelSpec, precision: str) -> tuple[Any, float | None]:
        import onnxruntime as ort

        key = (spec.name, precision)
        with self._lock:
            if key in self._sessions:
                return self._sessions[key], None
            start = time.perf_counter()
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            sess = ort.InferenceSession(
                str(spec.ensure_onnx(precision)), opts, providers=["CPUExecutionProvider"]
            )
            self._sessions[key] = sess
            return sess, (time.perf_counter() - start) * 1000

    def run(
        self,
        spec: ModelSpec,
        tensors: dict[str, np.ndarray],
        precision: str = "fp32",
        output_names: list[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], float, float | None]:
        """(outputs, run ms, load ms or None when the session was cached)."""
        sess, load_ms = self._session(spec, precision)
        names = output_names or [o.name for o in sess.get_outputs()]
        start = time.perf_counter()
        values = sess.run(names, tensors)
        return dict(zip(names, values, strict=True)), (time.perf_counter() - start) * 1000, load_ms
