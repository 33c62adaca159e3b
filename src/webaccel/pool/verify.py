"""Checked workers: whether to verify an answer, and whether two answers agree.  Pure.

Browsers that join from other hosts compute answers the pool would otherwise
deliver unchecked; a broken GPU driver or a tampered page returns wrong
embeddings or tokens and nobody notices.  So:

* **Admission.**  Before a worker's first real run of a (model, backend,
  precision) it answers a known input (the model's ``probe``), compared with
  the trusted reference (native onnxruntime in this process) within the
  precision's tolerance.  A worker that fails is quarantined and never gets
  that traffic.
* **Sampling.**  While serving, a share of its results (``remote_rate``,
  default 5%, for workers that joined from elsewhere; ``local_rate``, default
  0, for browsers we launched) is checked against the reference before it is
  delivered; ``mode="all"`` checks every result, so no wrong answer reaches a
  client.  A mismatch quarantines the worker (its token is revoked when it
  has one) and the request runs again elsewhere.

The tolerance is a floor on the cosine of each float output against the
reference, per precision: what the variants measure against fp32
(docs/FACTS.md "Precision": fp16 ~1.0, int8 >= 0.988, int4 >= 0.948) with a
margin; integer outputs (token ids, labels) must be equal.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

MODES = ("off", "sample", "all")

# Lowest cosine against the fp32 reference an honest worker gives, by precision.
MIN_COSINE: dict[str, float] = {
    "fp32": 0.999,
    "fp16": 0.995,
    "int8": 0.97,
    "mixed": 0.93,
    "int4": 0.92,
}


@dataclass(frozen=True)
class VerifyPolicy:
    mode: str = "sample"  # off | sample | all
    remote_rate: float = 0.05
    local_rate: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"verify mode {self.mode!r}: use one of {MODES}")
        for r in (self.remote_rate, self.local_rate):
            if not 0.0 <= r <= 1.0:
                raise ValueError(f"verify rates are shares in [0, 1], got {r}")

    def admits(self) -> bool:
        """Whether workers answer a known input before they get a model's traffic."""
        return self.mode != "off"

    def check_this(self, remote: bool, rng: random.Random) -> bool:
        """Whether to check one result of a worker (remote: joined from elsewhere)."""
        if self.mode == "off":
            return False
        if self.mode == "all":
            return True
        rate = self.remote_rate if remote else self.local_rate
        return rate > 0 and rng.random() < rate


def disagreement(
    got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], precision: str
) -> str | None:
    """Why ``got`` is not an honest answer next to the reference ``want`` (None: it is)."""
    floor = MIN_COSINE.get(precision, min(MIN_COSINE.values()))
    for name, ref in want.items():
        if name not in got:
            return f"output {name!r} is missing"
        a, b = np.asarray(got[name]), np.asarray(ref)
        if a.shape != b.shape:
            return f"output {name!r} has shape {a.shape}, the reference {b.shape}"
        if b.dtype.kind in "iub":
            if not np.array_equal(a, b):
                return f"output {name!r} differs in {int(np.sum(a != b))} of {b.size} values"
            continue
        a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
        if not np.all(np.isfinite(a64)):
            return f"output {name!r} has non-finite values"
        na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
        if nb == 0.0:
            if na > 1e-6:
                return f"output {name!r} should be zero"
            continue
        cos = float(a64 @ b64 / (na * nb)) if na > 0 else 0.0
        scale = na / nb
        if cos < floor or not 0.5 < scale < 2.0:
            return (
                f"output {name!r}: cosine {cos:.4f} (floor {floor} for {precision}), "
                f"norm ratio {scale:.3f} against the trusted reference"
            )
    return None
